#!/usr/bin/env python3
"""Drives vmshot's Huawei Workspace dialect with the real huaweicloudsdkworkspace
(pinned in tests/sdk/huawei/requirements.txt), for tests/huawei.rs.

    huawei.py --endpoint http://127.0.0.1:PORT --ak AK --sk SK [--project P] CALLS

CALLS is a JSON list; each call prints one JSON line, in order:

  {"call": "show", "id": "..."}                       ShowScreenRecord
  {"call": "list", "params": {"limit": 5, ...}}       ListScreenRecords
  {"call": "delete", "ids": ["...", ...]}             BatchDeleteScreenRecords
  {"call": "raw", "method": "POST", "path": "/v2/{project}/...",
   "query": {...}, "body": {...} | "text", "headers": {...},
   "sign": true, "date": "20261122T070014Z"}
      a request signed by the SDK's own Signer (the SDK has no call for
      vmshot's start, stop and downloads), sent by requests; "sign": false
      sends it unsigned (e.g. with an X-Auth-Token header)

An SDK call prints {"ok": true, "status_code", "body": the model as a dict} or,
when the SDK raised, {"ok": false, "exception", "status_code", "error_code",
"error_msg", "request_id"}. A raw call prints {"status_code", "headers",
"body_b64"}. --project omitted builds BasicCredentials(ak, sk) without one.
HOME must be a throw-away directory: importing the core writes
$HOME/.huaweicloud/application_id.
"""
import argparse
import base64
import json
import sys
from urllib.parse import urlsplit

import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkworkspace.v2 import (
    BatchDeleteScreenRecordsRequest,
    BatchDeleteScreenRecordsRequestBody,
    BatchDeleteScreenRecordsRequestBodyScreenRecords,
    ListScreenRecordsRequest,
    ShowScreenRecordRequest,
    WorkspaceClient,
)


def sdk_call(client, call):
    kind = call["call"]
    if kind == "show":
        return client.show_screen_record(ShowScreenRecordRequest(record_id=call["id"]))
    if kind == "list":
        return client.list_screen_records(ListScreenRecordsRequest(**call.get("params", {})))
    if kind == "delete":
        records = [BatchDeleteScreenRecordsRequestBodyScreenRecords(id=i) for i in call["ids"]]
        body = BatchDeleteScreenRecordsRequestBody(screen_records=records)
        return client.batch_delete_screen_records(BatchDeleteScreenRecordsRequest(body=body))
    raise SystemExit("unknown call %r" % kind)


def raw_call(args, call):
    url = urlsplit(args.endpoint)
    path = call["path"].replace("{project}", args.project or "")
    body = call.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    headers.update(call.get("headers", {}))
    if args.project:
        headers.setdefault("X-Project-Id", args.project)
    if call.get("date"):
        headers["X-Sdk-Date"] = call["date"]
    query = sorted((k, str(v)) for k, v in call.get("query", {}).items())
    request = SdkRequest(method=call["method"], schema=url.scheme, host=url.netloc,
                         resource_path=path, query_params=query, header_params=headers,
                         body=body or "")
    if call.get("sign", True):
        request = Signer(BasicCredentials(args.ak, args.sk, args.project)).sign(request)
    else:
        Signer.process_request_uri(request)
    response = requests.request(call["method"], args.endpoint + request.uri,
                                headers=request.header_params, data=request.body or None,
                                timeout=60)
    return {"status_code": response.status_code, "headers": dict(response.headers),
            "body_b64": base64.b64encode(response.content).decode()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--ak", required=True)
    ap.add_argument("--sk", required=True)
    ap.add_argument("--project")
    ap.add_argument("calls")
    args = ap.parse_args()
    credentials = (BasicCredentials(args.ak, args.sk, args.project) if args.project
                   else BasicCredentials(args.ak, args.sk))
    client = (WorkspaceClient.new_builder()
              .with_credentials(credentials)
              .with_endpoints([args.endpoint])
              .build())
    for call in json.loads(args.calls):
        if call["call"] == "raw":
            out = raw_call(args, call)
        else:
            try:
                response = sdk_call(client, call)
                out = {"ok": True, "status_code": response.status_code,
                       "body": response.to_dict()}
            except exceptions.ClientRequestException as e:
                out = {"ok": False, "exception": type(e).__name__, "status_code": e.status_code,
                       "error_code": e.error_code, "error_msg": e.error_msg,
                       "request_id": e.request_id}
            except exceptions.ServerResponseException as e:
                out = {"ok": False, "exception": type(e).__name__, "status_code": e.status_code,
                       "error_code": e.error_code, "error_msg": e.error_msg,
                       "request_id": e.request_id}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
