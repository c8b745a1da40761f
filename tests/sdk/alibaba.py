#!/usr/bin/env python3
"""Call ECS GetInstanceScreenshot (2014-05-26) through an official Alibaba SDK.

Run with the python of the venv made by tests/sdk/setup.sh:

  alibaba.py --sdk classic|tea --endpoint http://127.0.0.1:PORT --ak AK
             --secret SECRET --region cn-test --instance ID
             [--wakeup true|false] [--format JSON|XML] [--timeout SECONDS]
             [--in-body]

  classic: aliyunsdkcore AcsClient + aliyunsdkecs GetInstanceScreenshotRequest
           (signature v1, HMAC-SHA1, parameters in the query string)
  tea:     alibabacloud_ecs20140526 Client (ACS3-HMAC-SHA256, Authorization header)
           --in-body: the same call through the Tea client's generic call_api
           with InstanceId and WakeUp in a form body (RegionId stays in the
           query), as the Tea SDKs send the APIs whose parameters go in the
           body: the body is signed by its hash, the query alone canonically.

Prints exactly one JSON line on stdout and exits 0:
  {"ok":true,"request_id":..,"instance_id":..,"screenshot_b64":..,"http_status":..}
  {"ok":false,"code":..,"message":..,"request_id":..,"http_status":..,
   "exception":"<SDK exception class>", ...}
code/message/request_id/http_status are what the SDK's own exception object
carries (classic ServerException getters; Tea exception .code/.message/
.request_id/.status_code). Extra keys:
  tea:     "server_message" = the body's Message as parsed by the SDK (Tea's own
           .message is "code: <status>, <Message> request id: <RequestId>"),
           "data" = the error dict the SDK parsed (Tea adds "statusCode").
  both:    "parsed_by" = "sdk" normally, "alibaba.py" where the SDK gives no
           parsed result (classic --format XML, a non-JSON 2xx body).
Connection failures and the like come back as ok:false too (classic
ClientException "SDK.HttpError"; Tea "UnretryableException"), http_status null.
Exit 2 only for bad usage or an unexpected local crash (traceback on stderr).

No retries (classic auto_retry=False; Tea RetryOptions(retryable=False)), plain
HTTP unless the endpoint says https://, proxies from the environment ignored,
connect and read timeout --timeout seconds (default 20).

--wakeup passes a Python bool, as an SDK user would: both SDKs put
WakeUp=True / WakeUp=False (capitalised, str(bool)) on the wire.
--format XML (classic only): the classic SDK's do_action_with_exception always
forces Format=JSON, so XML goes through the (deprecated) AcsClient.get_response,
which returns status/headers/body unparsed; this script then parses the XML.
"""

import argparse
import json
import os
import sys
import traceback
import urllib.parse
import xml.etree.ElementTree as ET


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sdk", required=True, choices=["classic", "tea"])
    p.add_argument("--endpoint", required=True, help="http://HOST:PORT")
    p.add_argument("--ak", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--wakeup", choices=["true", "false"], default=None)
    p.add_argument("--format", choices=["JSON", "XML"], default="JSON",
                   type=lambda s: s.upper())
    p.add_argument("--timeout", type=float, default=20.0, help="seconds")
    p.add_argument("--in-body", action="store_true")
    a = p.parse_args(argv)
    u = urllib.parse.urlsplit(a.endpoint)
    if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") \
            or u.query:
        p.error("--endpoint must look like http://HOST:PORT")
    if a.in_body and a.sdk != "tea":
        p.error("--in-body is only supported with --sdk tea")
    if a.sdk == "tea" and a.format != "JSON":
        p.error("--format XML is only supported with --sdk classic "
                "(the Tea SDK always asks for JSON)")
    a.scheme = u.scheme
    a.hostport = u.netloc
    return a


def wakeup_value(a):
    return None if a.wakeup is None else (a.wakeup == "true")


def none_if_str_none(v):
    # Tea formats missing fields with f'{x}', turning None into "None".
    return None if v == "None" else v


# --------------------------------------------------------------------------
# classic: aliyun-python-sdk-core + aliyun-python-sdk-ecs
# --------------------------------------------------------------------------

def run_classic(a):
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.http import protocol_type
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
    from aliyunsdkecs.request.v20140526.GetInstanceScreenshotRequest import (
        GetInstanceScreenshotRequest,
    )

    client = AcsClient(
        a.ak, a.secret, a.region,
        auto_retry=False, max_retry_time=0,
        # the port is part of the endpoint below; 80 makes the SDK add none
        port=80,
        connect_timeout=a.timeout, timeout=a.timeout,
        # a non-empty proxy dict stops the SDK from reading HTTP(S)_PROXY
        proxy={"no_proxy": "*"},
    )
    req = GetInstanceScreenshotRequest()
    req.set_endpoint(a.hostport)
    req.set_protocol_type(protocol_type.HTTPS if a.scheme == "https" else protocol_type.HTTP)
    req.set_InstanceId(a.instance)
    wk = wakeup_value(a)
    if wk is not None:
        req.set_WakeUp(wk)

    if a.format == "XML":
        return classic_xml(client, req)

    try:
        body = client.do_action_with_exception(req)
    except ServerException as e:
        emit({
            "ok": False,
            "code": e.get_error_code(),
            "message": e.get_error_msg(),
            "request_id": e.get_request_id(),
            "http_status": e.get_http_status(),
            "exception": "ServerException",
            "parsed_by": "sdk",
        })
        return
    except ClientException as e:
        emit({
            "ok": False,
            "code": e.get_error_code(),
            "message": e.get_error_msg(),
            "request_id": None,
            "http_status": None,
            "exception": "ClientException",
            "parsed_by": "sdk",
        })
        return
    # do_action_with_exception returns the raw body bytes of a 2xx answer.
    try:
        obj = json.loads(body.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        emit({
            "ok": False,
            "code": "alibaba.py.UnparsableBody",
            "message": "2xx body is not a JSON object: %s: %r" % (e, body[:200]),
            "request_id": None,
            "http_status": None,
            "exception": None,
            "parsed_by": "alibaba.py",
        })
        return
    emit({
        "ok": True,
        "request_id": obj.get("RequestId"),
        "instance_id": obj.get("InstanceId"),
        "screenshot_b64": obj.get("Screenshot"),
        "http_status": None,  # the classic SDK does not expose it on success
        "parsed_by": "sdk",
    })


def classic_xml(client, req):
    import warnings
    from aliyunsdkcore.acs_exception.exceptions import ClientException

    req.set_accept_format("XML")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            status, _headers, body = client.get_response(req)
    except ClientException as e:
        emit({
            "ok": False, "code": e.get_error_code(), "message": e.get_error_msg(),
            "request_id": None, "http_status": None, "exception": "ClientException",
            "parsed_by": "sdk",
        })
        return
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        emit({
            "ok": False, "code": "alibaba.py.UnparsableBody",
            "message": "body is not XML: %s: %r" % (e, body[:200]),
            "request_id": None, "http_status": status, "exception": None,
            "parsed_by": "alibaba.py",
        })
        return

    def field(name):
        el = root.find(name)
        return None if el is None else (el.text or "")

    if 200 <= status < 300:
        emit({
            "ok": True, "request_id": field("RequestId"),
            "instance_id": field("InstanceId"), "screenshot_b64": field("Screenshot"),
            "http_status": status, "xml_root": root.tag, "parsed_by": "alibaba.py",
        })
    else:
        emit({
            "ok": False, "code": field("Code"), "message": field("Message"),
            "request_id": field("RequestId"), "http_status": status,
            "exception": None, "xml_root": root.tag, "parsed_by": "alibaba.py",
        })


# --------------------------------------------------------------------------
# tea: alibabacloud-ecs20140526 (darabonba / alibabacloud_tea_openapi)
# --------------------------------------------------------------------------

def run_tea(a):
    from alibabacloud_ecs20140526.client import Client
    from alibabacloud_ecs20140526 import models as ecs_models
    from alibabacloud_tea_openapi import models as open_api_models
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
    from darabonba.exceptions import DaraException, UnretryableException
    from darabonba.policy.retry import RetryOptions
    from darabonba.runtime import RuntimeOptions
    from Tea.exceptions import TeaException

    # darabonba reads HTTP(S)_PROXY from the environment itself.
    for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
              "ALL_PROXY", "all_proxy"):
        os.environ.pop(k, None)

    ms = int(a.timeout * 1000)
    config = open_api_models.Config(
        access_key_id=a.ak,
        access_key_secret=a.secret,
        endpoint=a.hostport,
        protocol=a.scheme,
        region_id=a.region,
        read_timeout=ms,
        connect_timeout=ms,
        # None would also mean "one attempt"; be explicit.
        retry_options=RetryOptions({"retryable": False}),
    )
    client = Client(config)
    req = ecs_models.GetInstanceScreenshotRequest(
        region_id=a.region, instance_id=a.instance, wake_up=wakeup_value(a))
    runtime = RuntimeOptions(autoretry=False, max_attempts=0,
                             read_timeout=ms, connect_timeout=ms)
    try:
        if a.in_body:
            resp = tea_in_body(client, ecs_models, a, runtime)
        else:
            resp = client.get_instance_screenshot_with_options(req, runtime)
    except AlibabaCloudException as e:  # ClientException/ServerException/ThrottlingException
        data = e.data if isinstance(e.data, dict) else None
        emit({
            "ok": False,
            "code": none_if_str_none(e.code),
            "message": e.message,
            "request_id": none_if_str_none(getattr(e, "request_id", None)),
            "http_status": getattr(e, "status_code", None),
            "exception": type(e).__name__,
            "server_message": (data or {}).get("Message", (data or {}).get("message")),
            "retry_after": getattr(e, "retry_after", None),
            "data": data,
            "parsed_by": "sdk",
        })
        return
    except UnretryableException as e:
        inner = getattr(e, "inner_exception", None)
        emit({
            "ok": False,
            "code": "UnretryableException",
            "message": "%s: %s" % (type(inner).__name__, inner),
            "request_id": None,
            "http_status": None,
            "exception": "UnretryableException",
            "parsed_by": "sdk",
        })
        return
    except (DaraException, TeaException) as e:
        emit({
            "ok": False,
            "code": getattr(e, "code", None),
            "message": getattr(e, "message", str(e)),
            "request_id": None,
            "http_status": getattr(e, "statusCode", None),
            "exception": type(e).__name__,
            "parsed_by": "sdk",
        })
        return
    body = resp.body
    emit({
        "ok": True,
        "request_id": body.request_id if body else None,
        "instance_id": body.instance_id if body else None,
        "screenshot_b64": body.screenshot if body else None,
        "http_status": resp.status_code,
        "parsed_by": "sdk",
    })


def tea_in_body(client, ecs_models, a, runtime):
    from alibabacloud_tea_openapi import utils_models
    from darabonba.core import DaraCore

    body = {"InstanceId": a.instance}
    if wakeup_value(a) is not None:
        body["WakeUp"] = wakeup_value(a)
    req = utils_models.OpenApiRequest(query={"RegionId": a.region}, body=body)
    params = utils_models.Params(
        action="GetInstanceScreenshot", version="2014-05-26", protocol="HTTPS",
        pathname="/", method="POST", auth_type="AK", style="RPC",
        req_body_type="formData", body_type="json")
    return DaraCore.from_map(ecs_models.GetInstanceScreenshotResponse(),
                             client.call_api(params, req, runtime))


def main(argv):
    a = parse_args(argv)  # exits 2 on bad usage
    try:
        if a.sdk == "classic":
            run_classic(a)
        else:
            run_tea(a)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
