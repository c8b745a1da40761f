#!/usr/bin/env python3
"""GetInstanceScreenshot latency through the official classic SDK, against
vmshot and against the anchor (py_agent.py serve), calls interleaved A/B so
that drift on the machine hits both alike. Prints one JSON line.

  alibaba_latency.py --vmshot URL --anchor URL --instance ID --domain NAME [--runs N]

The anchor takes the libvirt domain name as its InstanceId and checks no
signature; vmshot gets the same request, signed, for ID mapped to NAME.
"""
import argparse
import base64
import json
import statistics
import time

from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.GetInstanceScreenshotRequest import GetInstanceScreenshotRequest


def client(url, ak, secret):
    c = AcsClient(ak, secret, "cn-test", auto_retry=False, timeout=30, connect_timeout=5)
    host = url.split("://", 1)[1].rstrip("/")
    return c, host


def call(c, host, instance):
    req = GetInstanceScreenshotRequest()
    req.set_endpoint(host)
    req.set_protocol_type("http")
    req.set_InstanceId(instance)
    t0 = time.perf_counter()
    body = json.loads(c.do_action_with_exception(req))
    elapsed = (time.perf_counter() - t0) * 1e3
    jpeg = base64.b64decode(body["Screenshot"])
    assert jpeg[:3] == b"\xff\xd8\xff", "not a JPEG"
    return elapsed, len(jpeg)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--vmshot", required=True)
    a.add_argument("--anchor", required=True)
    a.add_argument("--instance", required=True)
    a.add_argument("--domain", required=True)
    a.add_argument("--ak", default="bench-key")
    a.add_argument("--secret", default="bench-secret")
    a.add_argument("--runs", type=int, default=100)
    args = a.parse_args()
    ours, ours_host = client(args.vmshot, args.ak, args.secret)
    anchor, anchor_host = client(args.anchor, args.ak, args.secret)
    for _ in range(5):
        call(ours, ours_host, args.instance)
        call(anchor, anchor_host, args.domain)
    times = {"vmshot": [], "anchor": []}
    sizes = {}
    for _ in range(args.runs):
        ms, size = call(ours, ours_host, args.instance)
        times["vmshot"].append(ms)
        sizes["vmshot"] = size
        ms, size = call(anchor, anchor_host, args.domain)
        times["anchor"].append(ms)
        sizes["anchor"] = size
    out = {"runs": args.runs}
    for name, xs in times.items():
        out[name] = {
            "p50_ms": round(statistics.median(xs), 2),
            "p99_ms": round(pct(xs, 99), 2),
            "mean_ms": round(statistics.fmean(xs), 2),
            "jpeg_bytes": sizes[name],
        }
    out["ratio_p50"] = round(out["vmshot"]["p50_ms"] / out["anchor"]["p50_ms"], 3)
    out["ratio_p99"] = round(out["vmshot"]["p99_ms"] / out["anchor"]["p99_ms"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
