#!/usr/bin/env python3
"""One vmshot, one guest, two dialects: GetInstanceScreenshot through Alibaba's
classic SDK and GetConsoleScreenshot through boto3, calls interleaved A/B so
that drift on the machine hits both alike. Prints one JSON line.

  dialects_latency.py --vmshot URL --instance ID [--runs N]

Both dialects map ID to the same domain; the per-instance interval must be 0.
"""
import argparse
import base64
import hashlib
import json
import statistics
import time

import boto3
from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.GetInstanceScreenshotRequest import GetInstanceScreenshotRequest
from botocore.config import Config


def alibaba(url, ak, secret):
    c = AcsClient(ak, secret, "cn-test", auto_retry=False, timeout=30, connect_timeout=5)
    host = url.split("://", 1)[1].rstrip("/")

    def call(instance):
        req = GetInstanceScreenshotRequest()
        req.set_endpoint(host)
        req.set_protocol_type("http")
        req.set_InstanceId(instance)
        return base64.b64decode(json.loads(c.do_action_with_exception(req))["Screenshot"])

    return call


def aws(url, ak, secret):
    ec2 = boto3.client(
        "ec2",
        endpoint_url=url.rstrip("/") + "/ec2",
        region_name="us-east-1",
        aws_access_key_id=ak,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )

    def call(instance):
        return base64.b64decode(ec2.get_console_screenshot(InstanceId=instance)["ImageData"])

    return call


def timed(call, instance):
    t0 = time.perf_counter()
    jpeg = call(instance)
    elapsed = (time.perf_counter() - t0) * 1e3
    assert jpeg[:3] == b"\xff\xd8\xff", "not a JPEG"
    return elapsed, jpeg


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--vmshot", required=True)
    a.add_argument("--instance", required=True)
    a.add_argument("--ak", default="bench-key")
    a.add_argument("--secret", default="bench-secret")
    a.add_argument("--runs", type=int, default=100)
    args = a.parse_args()
    calls = {
        "alibaba": alibaba(args.vmshot, args.ak, args.secret),
        "aws": aws(args.vmshot, args.ak, args.secret),
    }
    for _ in range(5):
        for call in calls.values():
            timed(call, args.instance)
    times = {name: [] for name in calls}
    digests = {}
    for _ in range(args.runs):
        for name, call in calls.items():
            ms, jpeg = timed(call, args.instance)
            times[name].append(ms)
            digests[name] = hashlib.sha256(jpeg).hexdigest()
    out = {"runs": args.runs}
    for name, xs in times.items():
        out[name] = {
            "p50_ms": round(statistics.median(xs), 2),
            "p99_ms": round(pct(xs, 99), 2),
            "mean_ms": round(statistics.fmean(xs), 2),
        }
    out["ratio_p50_aws_to_alibaba"] = round(out["aws"]["p50_ms"] / out["alibaba"]["p50_ms"], 3)
    out["same_last_image"] = digests["alibaba"] == digests["aws"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
