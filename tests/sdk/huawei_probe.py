#!/usr/bin/env python3
"""Probe: what huaweicloudsdkworkspace sends, byte for byte (research aid, not a test).

Starts a local echo server, points the real WorkspaceClient at it
(http://127.0.0.1:PORT, BasicCredentials(ak, sk, project_id)), calls
ShowScreenRecord, ListScreenRecords (every filter) and BatchDeleteScreenRecords,
and prints for each request: method, raw path+query, every header, the body,
and the SDK-HMAC-SHA256 signature recomputed independently of the SDK (so a
Rust verifier can be checked against real SDK-signed requests). A last call
gets a 404 {error_code, error_msg} + X-Request-Id and prints how the SDK
surfaces it.

    python3 -m venv /tmp/hw-venv
    /tmp/hw-venv/bin/pip install huaweicloudsdkworkspace==3.1.219 huaweicloudsdkcore==3.1.219
    /tmp/hw-venv/bin/python tests/sdk/huawei_probe.py [--date 20261122T070014Z] [--json]

--date pins X-Sdk-Date (through client.preset_headers; the signer keeps an
X-Sdk-Date it finds), --user-agent replaces the User-Agent (which is signed and
by default carries OS/Python versions and a random app UUID) and --port fixes
the port (the signed Host is host:port), so the output is a reproducible test
vector; --json prints one JSON object per request instead of text.
"""
import argparse
import hashlib
import hmac
import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit, parse_qsl

# huaweicloudsdkcore writes $HOME/.huaweicloud/application_id (a UUID that goes
# into the signed User-Agent) when imported: keep it out of the real home.
os.environ["HOME"] = tempfile.mkdtemp(prefix="hw-probe-home-")

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions
from huaweicloudsdkworkspace.v2 import (
    BatchDeleteScreenRecordsRequest,
    BatchDeleteScreenRecordsRequestBody,
    BatchDeleteScreenRecordsRequestBodyScreenRecords,
    ListScreenRecordsRequest,
    ShowScreenRecordRequest,
    WorkspaceClient,
)

AK, SK, PROJECT = "HPUAEXAMPLEAK0000001", "exampleSecretKey0000000000000000000000000", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
RECORD = "8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60"

SEEN = []

RECORD_BODY = {
    "id": RECORD, "desktop_id": "d-1", "desktop_name": "guest1", "desktop_pool_id": "",
    "username": "alice", "size": 1234, "type": "FULL", "status": "UPLOAD_COMPLETED",
    "policy_id": "", "obs_bucket": "b", "file_directory": "rec/", "video_filename": "v.mp4",
    "video_file_sha256": "00" * 32, "event_filename": "e.jsonl", "event_file_sha256": "11" * 32,
    "start_time": "2026-11-22T07:00:14.000Z", "end_time": "2026-11-22T07:10:14.000Z",
    "update_time": "2026-11-22T07:10:15.000Z", "duration": 600,
}


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        SEEN.append({"method": self.command, "target": self.path,
                     "headers": list(self.headers.items()), "body": body.decode()})
        path = urlsplit(self.path).path
        status, out, extra = 200, {}, {}
        if path.endswith("/screen-records/missing"):
            status = 404
            out = {"error_code": "WKS.0404", "error_msg": "screen record not found"}
            extra = {"X-Request-Id": "req-0001"}
        elif path.endswith("/batch-delete"):
            out = {"job_id": "job-42"}
        elif path.endswith("/screen-records"):
            out = {"screen_records": [RECORD_BODY], "total_count": 1}
        else:
            out = RECORD_BODY
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *a):
        pass


def canonical(method, target, headers, body, signed):
    """SDK-HMAC-SHA256 canonical request, rebuilt from what arrived on the wire
    (mirrors huaweicloudsdkcore/signer/signer.py Signer)."""
    parts = urlsplit(target)
    segs = [quote(s, safe="~") for s in unquote(parts.path).split("/")]
    uri = "/".join(segs)
    if not uri.endswith("/"):
        uri += "/"
    q = sorted(parse_qsl(parts.query, keep_blank_values=True))
    query = "&".join("%s=%s" % (quote(k, safe="~"), quote(v, safe="~")) for k, v in q)
    h = {k.lower(): v.strip() for k, v in headers}
    canon_headers = "".join("%s:%s\n" % (k, h[k]) for k in signed)
    payload = h.get("x-sdk-content-sha256") if body else None
    payload = payload or hashlib.sha256(body.encode()).hexdigest()
    return "\n".join([method, uri, query, canon_headers, ";".join(signed), payload])


def verify(req):
    h = {k.lower(): v for k, v in req["headers"]}
    auth = h["authorization"]
    algo, rest = auth.split(" ", 1)
    fields = dict(p.strip().split("=", 1) for p in rest.split(","))
    signed = fields["SignedHeaders"].split(";")
    creq = canonical(req["method"], req["target"], req["headers"], req["body"], signed)
    sts = "%s\n%s\n%s" % (algo, h["x-sdk-date"], hashlib.sha256(creq.encode()).hexdigest())
    sig = hmac.new(SK.encode(), sts.encode(), hashlib.sha256).hexdigest()
    return creq, sts, sig, fields["Signature"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--date", help="pin X-Sdk-Date, e.g. 20261122T070014Z")
    ap.add_argument("--user-agent", help="replace the signed User-Agent")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = "http://127.0.0.1:%d" % srv.server_port

    client = (WorkspaceClient.new_builder()
              .with_credentials(BasicCredentials(AK, SK, PROJECT))
              .with_endpoints([endpoint])  # http:// kept as is; a bare host gets https://
              .build())
    if args.date:
        client.preset_headers["X-Sdk-Date"] = args.date
    if args.user_agent:
        client.preset_headers["User-Agent"] = args.user_agent

    r = client.show_screen_record(ShowScreenRecordRequest(record_id=RECORD))
    assert r.id == RECORD and r.status_code == 200
    r = client.list_screen_records(ListScreenRecordsRequest(
        limit=5, offset=0, desktop_id="d-1", desktop_names="guest1,guest 2", username="alice",
        status="UPLOAD_COMPLETED", type="FULL", start_time="2026-11-01 00:00:00",
        end_time="2026-11-22 23:59:59", sort_field="start_time", sort_type="desc"))
    assert r.total_count == 1 and r.screen_records[0].id == RECORD
    r = client.batch_delete_screen_records(BatchDeleteScreenRecordsRequest(
        body=BatchDeleteScreenRecordsRequestBody(screen_records=[
            BatchDeleteScreenRecordsRequestBodyScreenRecords(id=RECORD)])))
    assert r.job_id == "job-42"
    err = None
    try:
        client.show_screen_record(ShowScreenRecordRequest(record_id="missing"))
    except exceptions.ClientRequestException as e:
        err = e

    for req in SEEN:
        creq, sts, mine, theirs = verify(req)
        req["canonical_request"], req["string_to_sign"] = creq, sts
        req["signature_recomputed_matches"] = mine == theirs
        if args.json:
            print(json.dumps(req))
            continue
        print("=" * 72)
        print("%s %s" % (req["method"], req["target"]))
        for k, v in req["headers"]:
            print("  %s: %s" % (k, v))
        if req["body"]:
            print("  body: %s" % req["body"])
        print("  --- canonical request ---")
        print("  " + creq.replace("\n", "\n  "))
        print("  --- string to sign ---")
        print("  " + sts.replace("\n", "\n  "))
        print("  recomputed signature matches: %s" % (mine == theirs))
    if not args.json:
        print("=" * 72)
        print("404 surfaced as %s: status_code=%s error_code=%s error_msg=%r request_id=%s" % (
            type(err).__name__, err.status_code, err.error_code, err.error_msg, err.request_id))
    srv.shutdown()
    assert all(r["signature_recomputed_matches"] for r in SEEN)


if __name__ == "__main__":
    main()
