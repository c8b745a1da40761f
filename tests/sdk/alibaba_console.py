#!/usr/bin/env python3
"""Call ECS GetInstanceConsoleOutput (2014-05-26) through an official Alibaba SDK.

Run with the python of the venv made by tests/sdk/setup.sh:

  alibaba_console.py --sdk classic|tea --endpoint http://127.0.0.1:PORT
                     --ak AK --secret SECRET --region cn-test --instance ID
                     [--remove-symbols true|false]

Prints one JSON line and exits 0:
  {"ok":true,"request_id":..,"instance_id":..,"console_output":..,"last_update_time":..}
  {"ok":false,"code":..,"message":..,"http_status":..,"exception":..}
--remove-symbols passes a Python bool, as an SDK user would (both SDKs put
RemoveSymbols=True / False on the wire). No retries, no proxies.
"""

import argparse
import json
import os
import sys
import urllib.parse


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sdk", required=True, choices=["classic", "tea"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--ak", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--remove-symbols", choices=["true", "false"], default=None)
    a = p.parse_args(argv)
    u = urllib.parse.urlsplit(a.endpoint)
    a.scheme, a.hostport = u.scheme, u.netloc
    a.symbols = None if a.remove_symbols is None else a.remove_symbols == "true"
    return a


def run_classic(a):
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.http import protocol_type
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
    from aliyunsdkecs.request.v20140526.GetInstanceConsoleOutputRequest import (
        GetInstanceConsoleOutputRequest,
    )

    client = AcsClient(a.ak, a.secret, a.region, auto_retry=False, max_retry_time=0,
                       port=80, connect_timeout=20, timeout=20, proxy={"no_proxy": "*"})
    req = GetInstanceConsoleOutputRequest()
    req.set_endpoint(a.hostport)
    req.set_protocol_type(protocol_type.HTTP)
    req.set_InstanceId(a.instance)
    if a.symbols is not None:
        req.set_RemoveSymbols(a.symbols)
    try:
        obj = json.loads(client.do_action_with_exception(req).decode("utf-8"))
    except ServerException as e:
        emit({"ok": False, "code": e.get_error_code(), "message": e.get_error_msg(),
              "http_status": e.get_http_status(), "exception": "ServerException"})
        return
    except ClientException as e:
        emit({"ok": False, "code": e.get_error_code(), "message": e.get_error_msg(),
              "http_status": None, "exception": "ClientException"})
        return
    emit({"ok": True, "request_id": obj.get("RequestId"), "instance_id": obj.get("InstanceId"),
          "console_output": obj.get("ConsoleOutput"),
          "last_update_time": obj.get("LastUpdateTime")})


def run_tea(a):
    from alibabacloud_ecs20140526.client import Client
    from alibabacloud_ecs20140526 import models as ecs_models
    from alibabacloud_tea_openapi import models as open_api_models
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
    from darabonba.policy.retry import RetryOptions
    from darabonba.runtime import RuntimeOptions

    for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(k, None)
    config = open_api_models.Config(
        access_key_id=a.ak, access_key_secret=a.secret, endpoint=a.hostport,
        protocol=a.scheme, region_id=a.region, read_timeout=20000, connect_timeout=20000,
        retry_options=RetryOptions({"retryable": False}))
    client = Client(config)
    req = ecs_models.GetInstanceConsoleOutputRequest(
        region_id=a.region, instance_id=a.instance, remove_symbols=a.symbols)
    runtime = RuntimeOptions(autoretry=False, max_attempts=0)
    try:
        resp = client.get_instance_console_output_with_options(req, runtime)
    except AlibabaCloudException as e:
        emit({"ok": False, "code": e.code, "message": e.message,
              "http_status": getattr(e, "status_code", None), "exception": type(e).__name__})
        return
    body = resp.body
    emit({"ok": True, "request_id": body.request_id, "instance_id": body.instance_id,
          "console_output": body.console_output, "last_update_time": body.last_update_time})


def main(argv):
    a = parse_args(argv)
    (run_classic if a.sdk == "classic" else run_tea)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
