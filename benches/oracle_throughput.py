#!/usr/bin/env python3
"""One vmshot, one guest: Oracle Compute Classic capture jobs per second next
to Alibaba GetInstanceScreenshot calls per second, in one run, one client
then a few concurrent ones. Prints one JSON line.

  oracle_throughput.py --vmshot URL --instance ID --oracle-instance NAME \
                       --user USER --password-file FILE [--jobs N] [--clients 1,4]

A job is what an Oracle client does for one image: POST
/console/screencapture/, GET it until `complete`, GET its media_uri (the JPEG,
whose SHA-256 must be the X-Vmshot-Sha256 the server sent). Each client
authenticates once, before the clock starts. A screenshot is one
GetInstanceScreenshot through Alibaba's classic SDK. Both map to the same
domain; their intervals must be 0. The clients are the repository's own:
tests/sdk/oracle.py (standard library) and dialects_latency.py's Alibaba one.
"""
import argparse
import hashlib
import json
import os
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "sdk"))
import oracle  # noqa: E402  (tests/sdk/oracle.py)
from dialects_latency import alibaba, pct, timed  # noqa: E402

# oracle.py prints a JSON line per call, for the tests that read it; a
# benchmark wants only its own line.
oracle.emit = lambda **fields: None


def oracle_job(client, instance, poll_every):
    """One capture job, start to JPEG; its seconds and the JPEG."""
    t0 = time.perf_counter()
    status, capture = client.create(instance)
    if status != 201:
        raise RuntimeError(f"create: {status} {capture}")
    status, capture = client.poll(capture["name"], timeout=60, every=poll_every)
    if status != 200 or capture.get("state") != "complete":
        raise RuntimeError(f"poll: {status} {capture}")
    status, headers, jpeg = client.call("GET", capture["media_uri"], accept="image/jpeg")
    elapsed = time.perf_counter() - t0
    if status != 200 or jpeg[:3] != b"\xff\xd8\xff":
        raise RuntimeError(f"media: {status}")
    if hashlib.sha256(jpeg).hexdigest() != headers.get("X-Vmshot-Sha256"):
        raise RuntimeError("media: SHA-256 differs from X-Vmshot-Sha256")
    return elapsed, capture["name"]


def run_clients(clients, total, work):
    """`total` calls of work(i, state) shared by `clients` threads, each with
    its own state from make(); wall seconds and per-call seconds."""
    lock = threading.Lock()
    next_call = [0]
    times = []
    errors = []

    def worker(state):
        while True:
            with lock:
                if next_call[0] >= total or errors:
                    return
                next_call[0] += 1
            try:
                seconds = work(state)
            except Exception as e:  # noqa: BLE001  (reported, and the run fails)
                with lock:
                    errors.append(repr(e))
                return
            with lock:
                times.append(seconds)

    states = [work.make() for _ in range(clients)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in states]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{work.__name__}: {errors[0]}")
    return wall, times


def figures(total, wall, times):
    ms = [t * 1e3 for t in times]
    return {
        "per_s": round(total / wall, 2),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 99), 2),
    }


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--vmshot", required=True)
    a.add_argument("--instance", required=True, help="Alibaba InstanceId")
    a.add_argument("--oracle-instance", required=True, help="/Compute-{domain}/{user}/{name}")
    a.add_argument("--user", required=True)
    a.add_argument("--password-file", required=True)
    a.add_argument("--ak", default="bench-key")
    a.add_argument("--secret", default="bench-secret")
    a.add_argument("--jobs", type=int, default=100, help="jobs, and screenshots, per run")
    a.add_argument("--clients", default="1,4", help="concurrent clients, one run each")
    a.add_argument("--poll-ms", type=float, default=5.0, help="between two GETs of a job")
    args = a.parse_args()
    with open(args.password_file) as f:
        password = f.readline().rstrip("\n")

    clients_made = []

    def oracle_client():
        client = oracle.Client(args.vmshot)
        if client.authenticate(args.user, password) != 204:
            raise SystemExit("oracle: authentication failed")
        # HTTP calls a job takes (create, each poll, the media), counted per
        # client: one thread each.
        client.calls = 0
        call = client.call

        def counted(*a, **k):
            client.calls += 1
            return call(*a, **k)

        client.call = counted
        clients_made.append(client)
        return client

    def screenshot(call):
        return timed(call, args.instance)[0] / 1e3

    def job(client):
        return oracle_job(client, args.oracle_instance, args.poll_ms / 1e3)[0]

    screenshot.make = lambda: alibaba(args.vmshot, args.ak, args.secret)
    job.make = oracle_client

    # Warm-ups: the connection, the fast path's mirror, the store's pages.
    warm_call, warm_client = screenshot.make(), job.make()
    for _ in range(5):
        screenshot(warm_call)
        job(warm_client)

    out = {"jobs": args.jobs, "poll_ms": args.poll_ms, "runs": []}
    for clients in [int(c) for c in args.clients.split(",")]:
        row = {"clients": clients}
        # Alternating which goes first, run by run, so drift is shared.
        order = [("alibaba", screenshot), ("oracle", job)]
        if clients % 2 == 0:
            order.reverse()
        for name, work in order:
            clients_made.clear()
            row[name] = figures(args.jobs, *run_clients(clients, args.jobs, work))
            if name == "oracle":
                calls = sum(c.calls for c in clients_made)
                row[name]["http_calls_per_job"] = round(calls / args.jobs, 1)
        row["ratio_jobs_to_screenshots"] = round(
            row["oracle"]["per_s"] / row["alibaba"]["per_s"], 3
        )
        out["runs"].append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
