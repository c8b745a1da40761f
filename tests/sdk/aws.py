#!/usr/bin/env python3
"""Call EC2 GetConsoleScreenshot or GetConsoleOutput (2016-11-15) through boto3.

Run with the python of the venv made by tests/sdk/setup.sh:

  aws.py --endpoint http://127.0.0.1:PORT --ak AK --secret SECRET
         --region us-east-1 --instance ID [--wakeup true|false]
         [--mode screenshot|presigned|dry-run|raw|console-output]
         [--latest true|false] [--expires SECONDS]
         [--timeout SECONDS] [--skew SECONDS] [--param NAME=VALUE ...]

  screenshot: ec2.get_console_screenshot(InstanceId=..., WakeUp=...): botocore
              POSTs a form body signed with SigV4 in the Authorization header.
  presigned:  ec2.generate_presigned_url('get_console_screenshot', ...,
              HttpMethod='GET') and a plain urllib GET of that URL; the answer
              is parsed by botocore's own EC2 parser, as a client call would be.
  dry-run:    the screenshot call with DryRun=True (EC2 answers the error
              DryRunOperation, HTTP 412, when the caller may call it).
  console-output: ec2.get_console_output(InstanceId=..., Latest=...); prints
              {"ok":true,"instance_id":..,"output":<text as boto3 decoded it>,
               "timestamp":..,"http_status":..} or the failure line below.
  raw:        a form POST of exactly the --param pairs, signed by botocore's
              own SigV4Auth: what boto3's client-side validation would not
              send (no InstanceId, another Action). The answer is parsed by
              botocore's EC2 parser.

--skew shifts the clock botocore signs with (a negative value signs in the
past), to reach RequestExpired.

Prints exactly one JSON line on stdout and exits 0:
  {"ok":true, "image_data_len":N, "sha256":hex, "image_sha256_element":hex|null,
   "error_code":null, "error_message":null, "http_status":200, "request_id":..}
  {"ok":false, "image_data_len":null, "sha256":null, ..., "error_code":..,
   "error_message":.., "http_status":.., "request_id":..}
With --save, the decoded ImageData is written to that file; header_sha256 is
the X-Vmshot-Sha256 response header. image_data_len is the length of the decoded ImageData and sha256 its SHA-256
(computed here); image_sha256_element is vmshot's <imageSha256> as found in
the raw body (botocore drops members its model does not know). error_code and
error_message are botocore's parsed e.response['Error']['Code'] / ['Message'].
A connection failure comes back as ok:false with error_code "EndpointError"
and http_status null. Exit 2 only for bad usage or an unexpected local crash.

No retries (total_max_attempts=1), plain HTTP unless the endpoint says
https:// (certificates unchecked then: the tests' are self-signed), proxies
from the environment ignored, no credentials or region from ~/.aws.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True, help="http://HOST:PORT")
    p.add_argument("--ak", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--wakeup", choices=["true", "false"], default=None)
    p.add_argument("--mode", choices=["screenshot", "presigned", "dry-run", "raw",
                                      "console-output"],
                   default="screenshot")
    p.add_argument("--latest", choices=["true", "false"], default=None)
    p.add_argument("--skew", type=float, default=0.0, help="signing clock offset, s")
    p.add_argument("--param", action="append", default=[], help="raw mode: NAME=VALUE")
    p.add_argument("--save", help="write the decoded ImageData to this file")
    p.add_argument("--host", help="raw mode: sign and send this Host header")
    p.add_argument("--expires", type=int, default=300, help="presigned URL lifetime, s")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds")
    a = p.parse_args(argv)
    u = urllib.parse.urlsplit(a.endpoint)
    if u.scheme not in ("http", "https") or not u.hostname or u.query:
        p.error("--endpoint must look like http://HOST:PORT[/PATH]")
    return a


def isolate_environment():
    # Nothing from the user's AWS setup or proxies may change the request.
    for k in list(os.environ):
        if k.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") \
                or k.startswith("AWS_"):
            os.environ.pop(k)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def make_client(a):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=a.ak, aws_secret_access_key=a.secret, region_name=a.region)
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=a.timeout, read_timeout=a.timeout,
        proxies={},
    )
    return session.client("ec2", endpoint_url=a.endpoint, config=config,
                          verify=False if a.endpoint.startswith("https") else None)


def call_params(a, dry_run=False):
    params = {"InstanceId": a.instance}
    if a.wakeup is not None:
        params["WakeUp"] = a.wakeup == "true"
    if dry_run:
        params["DryRun"] = True
    return params


SHA_RE = re.compile(rb"<imageSha256>([^<]*)</imageSha256>")


def sha_element(body):
    m = SHA_RE.search(body or b"")
    return m.group(1).decode("ascii", "replace") if m else None


SAVE_TO = None


def success(parsed, raw_body):
    data = parsed.get("ImageData")
    image = base64.b64decode(data) if data is not None else None
    if image is not None and SAVE_TO:
        with open(SAVE_TO, "wb") as f:
            f.write(image)
    meta = parsed.get("ResponseMetadata", {})
    headers = {k.lower(): v for k, v in meta.get("HTTPHeaders", {}).items()}
    return {
        "header_sha256": headers.get("x-vmshot-sha256"),
        "ok": True,
        "instance_id": parsed.get("InstanceId"),
        "image_data_len": None if image is None else len(image),
        "sha256": None if image is None else hashlib.sha256(image).hexdigest(),
        "image_sha256_element": sha_element(raw_body),
        "error_code": None,
        "error_message": None,
        "http_status": meta.get("HTTPStatusCode"),
        "request_id": meta.get("RequestId"),
    }


def failure(response, status=None):
    err = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    return {
        "ok": False,
        "image_data_len": None,
        "sha256": None,
        "image_sha256_element": None,
        "error_code": err.get("Code"),
        "error_message": err.get("Message"),
        "http_status": meta.get("HTTPStatusCode", status),
        "request_id": meta.get("RequestId"),
    }


def run_call(a, client, dry_run):
    from botocore.exceptions import ClientError, EndpointConnectionError, \
        ConnectionClosedError, ReadTimeoutError

    raw = {}

    def keep_body(response_dict=None, **_kwargs):
        if response_dict is not None:
            raw["body"] = response_dict.get("body")

    client.meta.events.register("before-parse.ec2.GetConsoleScreenshot", keep_body)
    try:
        resp = client.get_console_screenshot(**call_params(a, dry_run))
    except ClientError as e:
        return failure(e.response)
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as e:
        return failure({"Error": {"Code": "EndpointError", "Message": str(e)}})
    return success(resp, raw.get("body"))


def run_console_output(a, client):
    from botocore.exceptions import ClientError

    params = {"InstanceId": a.instance}
    if a.latest is not None:
        params["Latest"] = a.latest == "true"
    try:
        resp = client.get_console_output(**params)
    except ClientError as e:
        return failure(e.response)
    meta = resp.get("ResponseMetadata", {})
    return {
        "ok": True,
        "instance_id": resp.get("InstanceId"),
        # botocore's decode_console_output: base64, then UTF-8 with 'replace'.
        "output": resp.get("Output"),
        "timestamp": resp.get("Timestamp"),
        "http_status": meta.get("HTTPStatusCode"),
        "request_id": meta.get("RequestId"),
    }


def skew_clock(seconds):
    # botocore's signers read the time through this one function.
    import datetime
    import botocore.auth

    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: real() + datetime.timedelta(seconds=seconds)


def parse_answer(client, status, headers, body):
    # botocore's own EC2 parser, with the operation's output shape, exactly
    # as a client call parses the answer.
    from botocore.parsers import create_parser

    op = client.meta.service_model.operation_model("GetConsoleScreenshot")
    parser = create_parser(client.meta.service_model.metadata["protocol"])
    parsed = parser.parse(
        {"status_code": status, "headers": headers, "body": body}, op.output_shape)
    meta = parsed.setdefault("ResponseMetadata", {})
    meta["HTTPStatusCode"] = status
    meta["HTTPHeaders"] = headers
    return failure(parsed, status) if status >= 300 else success(parsed, body)


def fetch(a, request):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    if a.endpoint.startswith("https"):
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        opener.add_handler(urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(request, timeout=a.timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def run_raw(a, client):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    pairs = [tuple(p.split("=", 1)) for p in a.param]
    body = urllib.parse.urlencode(pairs)
    url = a.endpoint.rstrip("/") + "/"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if a.host:
        headers["Host"] = a.host
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    credentials = client._request_signer._credentials
    SigV4Auth(credentials, "ec2", a.region).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers=dict(prepared.headers))
    try:
        status, headers, raw = fetch(a, req)
    except (urllib.error.URLError, OSError) as e:
        return failure({"Error": {"Code": "EndpointError", "Message": str(e)}})
    return parse_answer(client, status, headers, raw)


def run_presigned(a, client):
    url = client.generate_presigned_url(
        "get_console_screenshot", Params=call_params(a), ExpiresIn=a.expires,
        HttpMethod="GET")
    try:
        status, headers, body = fetch(a, url)
    except (urllib.error.URLError, OSError) as e:
        return failure({"Error": {"Code": "EndpointError", "Message": str(e)}})
    out = parse_answer(client, status, headers, body)
    out["url"] = url
    return out


def main(argv):
    global SAVE_TO
    a = parse_args(argv)  # exits 2 on bad usage
    SAVE_TO = a.save
    isolate_environment()
    try:
        import urllib3
        urllib3.disable_warnings()
        client = make_client(a)
        if a.skew:
            skew_clock(a.skew)
        if a.mode == "presigned":
            emit(run_presigned(a, client))
        elif a.mode == "raw":
            emit(run_raw(a, client))
        elif a.mode == "console-output":
            emit(run_console_output(a, client))
        else:
            emit(run_call(a, client, dry_run=a.mode == "dry-run"))
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
