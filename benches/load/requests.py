#!/usr/bin/env python3
"""Raw HTTP requests for benches/load/replay.lua, one a line ("\\r\\n" as "|").

Signed dialects get a fresh signature each (Alibaba signature 1.0 with its
single-use SignatureNonce; EC2 SigV4, whose X-Amz-Date must be within 5 min):
a file is made for one run, just before it. The others (session cookie,
tokens, loopback) carry the same credentials every time and may be replayed.

Standard library only, so that a fresh host needs no PyPI for the load run.
The signatures are made here, not by the SDKs, so that a million of them take
seconds (the SDKs take ~1 ms each); tests/sdk checks that the SDKs and the
daemon agree on the wire format, and every request here must come back 200.
"""
import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid

# Every dialect load.py drives, in its table's order.
DIALECTS = ["alibaba", "aws", "native", "oracle", "nova", "huawei", "marketplace"]
# Those whose requests are single-use (a file is made per run, never replayed).
SIGNED = {"alibaba", "aws"}


def _enc(s):
    # RFC 3986 unreserved only: what both Alibaba and SigV4 canonicalise to.
    return urllib.parse.quote(str(s), safe="-_.~")


def _line(method, target, headers, body=b""):
    head = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    raw = "|".join(head) + "||" + body.decode()
    if "\n" in raw or "\r" in raw:
        raise ValueError("a request line may not hold CR or LF")
    return raw


def alibaba(ctx, instance):
    """GET / GetInstanceScreenshot, signature 1.0 (HMAC-SHA1, the classic SDK's)."""
    params = {
        "AccessKeyId": ctx["key"],
        "Action": "GetInstanceScreenshot",
        "Format": "JSON",
        "InstanceId": instance,
        "RegionId": "cn-test",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "Version": "2014-05-26",
    }
    canonical = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items()))
    to_sign = "GET&%2F&" + _enc(canonical)
    mac = hmac.new((ctx["secret"] + "&").encode(), to_sign.encode(), hashlib.sha1)
    sig = _enc(base64.b64encode(mac.digest()).decode())
    return _line("GET", f"/?{canonical}&Signature={sig}", [("Host", ctx["host"])])


def _hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def aws(ctx, instance):
    """GET /ec2 GetConsoleScreenshot, SigV4 in the Authorization header."""
    now = time.gmtime()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
    day = amz_date[:8]
    query = "&".join(
        f"{_enc(k)}={_enc(v)}"
        for k, v in sorted(
            {"Action": "GetConsoleScreenshot", "InstanceId": instance, "Version": "2016-11-15"}.items()
        )
    )
    payload = hashlib.sha256(b"").hexdigest()
    canonical = "\n".join(
        ["GET", "/ec2", query, f"host:{ctx['host']}", f"x-amz-date:{amz_date}", "", "host;x-amz-date", payload]
    )
    scope = f"{day}/us-east-1/ec2/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac256(("AWS4" + ctx["secret"]).encode(), day)
    for part in ("us-east-1", "ec2", "aws4_request"):
        key = _hmac256(key, part)
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={ctx['key']}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}"
    return _line(
        "GET", f"/ec2?{query}", [("Host", ctx["host"]), ("X-Amz-Date", amz_date), ("Authorization", auth)]
    )


def native(ctx, domain):
    """GET /v1/domains/{name}/screenshot (loopback access: the host's operator)."""
    return _line("GET", f"/v1/domains/{domain}/screenshot", [("Host", ctx["host"])])


def oracle(ctx, instance):
    """POST /console/screencapture/: a capture job, with the nimbula cookie."""
    body = json.dumps({"instance": f"{ctx['oracle_user']}/{instance}", "cancel": False}).encode()
    media = "application/oracle-compute-v3+json"
    return _line(
        "POST",
        "/console/screencapture/",
        [("Host", ctx["host"]), ("Cookie", ctx["cookie"]), ("Content-Type", media), ("Accept", media)],
        body,
    )


def nova(ctx, uuid_):
    """GET os-instance-actions of one server, the newest 10 (paging from 2.58)."""
    return _line(
        "GET",
        f"/compute/v2.1/servers/{uuid_}/os-instance-actions?limit=10",
        [("Host", ctx["host"]), ("X-Auth-Token", ctx["token"]), ("X-OpenStack-Nova-API-Version", "2.58")],
    )


def huawei(ctx, _):
    """GET ListScreenRecords, the newest 10, with an X-Auth-Token."""
    project = ctx["project"]
    return _line(
        "GET",
        f"/v2/{project}/screen-records?limit=10",
        [("Host", ctx["host"]), ("X-Auth-Token", ctx["token"]), ("X-Project-Id", project)],
    )


def marketplace(ctx, upload):
    """GET an upload's status with a bearer token."""
    return _line(
        "GET",
        f"/appstore/publisher/v1/machineimages/{upload}",
        [("Host", ctx["host"]), ("Authorization", f"Bearer {ctx['token']}")],
    )


MAKERS = {f.__name__: f for f in (alibaba, aws, native, oracle, nova, huawei, marketplace)}


def targets(ctx, dialect):
    """What one dialect's requests are spread over (round robin)."""
    return {
        "alibaba": ctx["instances"],
        "aws": ctx["instances"],
        "native": ctx["domains"],
        "oracle": ctx["oracle_instances"],
        "nova": ctx["uuids"],
        "huawei": [None],
        "marketplace": ctx["uploads"] or ["1"],
    }[dialect]


def write(path, ctx, mix, count):
    """`count` requests into `path`: `mix` is {dialect: weight}, interleaved
    in proportion (a smooth weighted round robin, so every stretch of the
    file holds the mix). Returns the seconds it took."""
    t0 = time.perf_counter()
    ctx = dict(ctx)
    names = [d for d in DIALECTS if mix.get(d, 0) > 0]
    total = sum(mix[d] for d in names)
    credit = {d: 0.0 for d in names}
    turn = {d: 0 for d in names}
    over = {d: targets(ctx, d) for d in names}
    with open(path, "w") as f:
        for _ in range(count):
            for d in names:
                credit[d] += mix[d]
            d = max(names, key=lambda x: credit[x])
            credit[d] -= total
            target = over[d][turn[d] % len(over[d])]
            turn[d] += 1
            f.write(MAKERS[d](ctx[d] | {"host": ctx["host"]}, target) + "\n")
    return time.perf_counter() - t0
