#!/usr/bin/env python3
"""The driver of benches/load.sh: saturation per dialect, the soak, the smoke.

  load.py saturate|soak|smoke --url URL --pid PID --state DIR ... (see load.sh)

wrk sends the requests (benches/load/replay.lua replays files made by
requests.py); this script picks the concurrency, reads the answers' counts
(wrk's, by status and the dialect's code, and the daemon's own /metrics
outcomes, the same words for every dialect), samples the daemon's process
and store, and writes the tables into docs/RELIABILITY.md.

Standard library only.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import requests as reqs  # noqa: E402  (benches/load/requests.py)

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "replay.lua")

# The answers each dialect documents for "too much at once" (README): the
# capture cap's busy (4 captures running, 64 waiting) and the throttles.
# Anything else under load is a failure. These are the daemon's /metrics
# outcomes, the same words for every dialect.
ACCEPTED_OUTCOMES = {"ok", "busy", "throttled"}
# And on the wire, per dialect, as replay.lua counts them (status and code).
DOCUMENTED_BUSY = {
    "alibaba": {"503 ServiceUnavailable", "400 Throttling"},
    "aws": {"503 Unavailable", "503 ServiceUnavailable", "503 RequestLimitExceeded"},
    "native": {"503 busy", "429 throttled"},
    "oracle": {"503 Too many screen captures are in progress", "429 You can take only one screen capture"},
    "nova": {"503 serviceUnavailable"},
    "huawei": {"503 WKS.0503", "429 WKS.0429"},
    "marketplace": set(),
}
DIALECT_OF_METRIC = {
    "alibaba": "alibaba",
    "aws": "aws",
    "native": "native",
    "oracle": "oracle",
    "nova": "nova",
    "huawei": "huawei",
    "marketplace": "marketplace",
}


# ---------------------------------------------------------------- HTTP helpers


class Daemon:
    def __init__(self, args):
        u = urllib.parse.urlsplit(args.url)
        self.host, self.port = u.hostname, u.port
        self.hostport = f"{u.hostname}:{u.port}"
        self.url = args.url
        self.pid = args.pid
        self.state = args.state
        self.log = args.log

    def call(self, method, path, headers=None, body=None, timeout=30):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            h = dict(headers or {})
            if data is not None:
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False

    def gauge(self, name):
        _, _, body = self.call("GET", "/metrics")
        m = re.search(rf"^{name} (\S+)", body.decode(), re.M)
        return float(m.group(1)) if m else -1

    def outcomes(self):
        """{(dialect, outcome): count} from /metrics."""
        _, _, body = self.call("GET", "/metrics")
        out = {}
        for m in re.finditer(
            r'^vmshot_requests_total\{([^}]*)\} (\d+)', body.decode(), re.M
        ):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = (labels.get("dialect", "?"), labels.get("outcome", "?"))
            out[key] = out.get(key, 0) + int(m.group(2))
        return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(daemon, limit=180):
    """Until the daemon uses under 10% of a core over 2 s (Oracle's queued
    jobs, uploads finishing), so that one dialect's tail does not fall into
    the next one's run. Returns the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < limit:
        c0 = cpu_seconds(daemon.pid)
        time.sleep(2)
        if cpu_seconds(daemon.pid) - c0 < 0.2:
            break
    return time.time() - t0


def delta(after, before, dialects=None):
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0)
        if d and (dialects is None or k[0] in dialects):
            out[k] = d
    return out


# --------------------------------------------------------------- credentials


def context(daemon, args):
    """What requests.py needs: targets and each dialect's credentials."""
    domains = args.domains.split()
    ctx = {
        "host": daemon.hostport,
        "domains": domains,
        "instances": [f"ld-{i:02d}" for i in range(len(domains))],
        "oracle_instances": [f"ld-{i:02d}" for i in range(len(domains))],
        "uuids": args.uuids.split(),
        "uploads": [],
        "alibaba": {"key": args.key, "secret": args.secret},
        "aws": {"key": args.key, "secret": args.secret},
        "native": {},
        "nova": {"token": args.token},
        "huawei": {"token": args.token, "project": args.project},
        "marketplace": {"token": args.token},
    }
    refresh_oracle(daemon, args, ctx)
    return ctx


def refresh_oracle(daemon, args, ctx):
    """A nimbula cookie (they last 30 min: the soak logs in again each minute)."""
    with open(args.oracle_password_file) as f:
        password = f.read().strip()
    status, headers, body = daemon.call(
        "POST", "/authenticate/", {"Content-Type": "application/oracle-compute-v3+json"},
        {"user": args.oracle_user, "password": password},
    )
    if status != 204 and status != 200:
        raise SystemExit(f"oracle authenticate: {status} {body[:200]!r}")
    cookie = headers.get("Set-Cookie") or headers.get("set-cookie")
    ctx["oracle"] = {"cookie": cookie.split(";", 1)[0], "oracle_user": args.oracle_user}


def csrf(daemon):
    _, _, page = daemon.call("GET", "/ui/")
    m = re.search(rb'name="vmshot-csrf" content="([^"]+)"', page)
    return m.group(1).decode()


def seed_uploads(daemon, ctx, count=8):
    """Marketplace needs uploads: a few Oracle captures (each one uploaded to
    the directory target), polled until the uploads answer."""
    o = ctx["oracle"]
    media = "application/oracle-compute-v3+json"
    for i in range(count):
        inst = ctx["oracle_instances"][i % len(ctx["oracle_instances"])]
        daemon.call(
            "POST", "/console/screencapture/",
            {"Cookie": o["cookie"], "Content-Type": media, "Accept": media},
            json.dumps({"instance": f"{o['oracle_user']}/{inst}", "cancel": False}).encode(),
        )
    ok = []
    deadline = time.time() + 120
    while time.time() < deadline:
        ok = [
            str(n) for n in range(1, count + 1)
            if daemon.call("GET", f"/appstore/publisher/v1/machineimages/{n}",
                           {"Authorization": f"Bearer {ctx['marketplace']['token']}"})[0] == 200
        ]
        if len(ok) == count:
            break
        time.sleep(0.5)
    if not ok:
        raise SystemExit("no upload answers on the Marketplace dialect")
    ctx["uploads"] = ok


# ----------------------------------------------------------------------- wrk


def run_wrk(daemon, path, conns, seconds, rate=0, reuse=False):
    threads = max(1, min(2, conns))
    env = dict(os.environ, WRK_THREADS=str(threads), WRK_CONNECTIONS=str(conns), WRK_PACED="1" if rate else "0")
    cmd = [
        "wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "35s",
        "-s", LUA, daemon.url, "--", path, str(rate),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk: no result (exit {p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
    r = json.loads(line[7:])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["socket_errors"] = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    if reuse:
        r["wrapped"] = 0
    return r


def classify(dialect, r, outcomes):
    """Counts of documented busy answers and of failures (anything else that
    is not a 2xx, socket errors, /metrics outcomes beyond ok/busy/throttled)."""
    busy = fail = 0
    for key, n in r["statuses"].items():
        if key[0] == "2":
            continue
        if key in DOCUMENTED_BUSY.get(dialect, set()) or any(key.startswith(b) for b in DOCUMENTED_BUSY.get(dialect, ())):
            busy += n
        else:
            fail += n
    bad_outcomes = {f"{d}:{o}": n for (d, o), n in outcomes.items() if o not in ACCEPTED_OUTCOMES}
    return busy, fail + r["socket_errors"], bad_outcomes


# ---------------------------------------------------------------- saturation


def saturate_one(daemon, ctx, dialect, work, seconds, levels, log):
    """Raise the concurrency until throughput stops rising: two levels in a row
    under 5% above the best so far (or errors). The saturating concurrency is
    the smallest whose req/s is within 5% of the best."""
    rows = []
    best = 0.0
    flat = 0
    # Signed requests needed at the next level: doubling the connections at
    # most doubles the rate (a run that runs out is repeated with more).
    expect = 300.0
    for conns in levels:
        for attempt in range(3):
            path = os.path.join(work, f"{dialect}.req")
            signed = dialect in reqs.SIGNED
            count = int(expect * 1.3 * seconds) + 1000 if signed else 2000
            gen_s = reqs.write(path, ctx, {dialect: 1}, count)
            before = daemon.outcomes()
            r = run_wrk(daemon, path, conns, seconds, reuse=not signed)
            out = delta(daemon.outcomes(), before, {DIALECT_OF_METRIC[dialect]})
            r["gen_per_s"] = count / gen_s
            if r["wrapped"]:
                expect = max(expect, r["rps"]) * 2.5
                log(f"  {dialect} c={conns}: requests ran out ({count}), again with more")
                continue
            break
        expect = max(expect, 2.2 * r["rps"])
        busy, fail, bad = classify(dialect, r, out)
        row = {
            "conns": conns, "rps": r["rps"], "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
            "requests": r["requests"], "statuses": r["statuses"], "socket_errors": r["socket_errors"],
            "outcomes": {f"{d}:{o}": n for (d, o), n in out.items()}, "busy": busy, "failures": fail,
            "bad_outcomes": bad, "gen_per_s": r["gen_per_s"], "wrapped": r["wrapped"],
        }
        rows.append(row)
        log(f"  {dialect} c={conns}: {r['rps']:.0f} req/s p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms "
            f"statuses {r['statuses']} socket errors {r['socket_errors']} outcomes {row['outcomes']}")
        if not daemon.alive():
            raise SystemExit("the daemon died")
        if r["rps"] > best * 1.05:
            best = max(best, r["rps"])
            flat = 0
        else:
            best = max(best, r["rps"])
            flat += 1
            if flat >= 2:
                break
    top = max(x["rps"] for x in rows)
    sat = next(x for x in rows if x["rps"] >= 0.95 * top)
    return {"dialect": dialect, "levels": rows, "saturation": sat}


def replay_ceiling(daemon, ctx, work, log):
    """wrk + replay.lua's own ceiling: signed Alibaba requests sent to /healthz,
    which answers at once. If it is far above every dialect's, the generator
    is not what saturates."""
    path = os.path.join(work, "ceiling.req")
    count = 400_000
    t = reqs.write(path, ctx, {"alibaba": 1}, count)
    with open(path) as f, open(path + ".h", "w") as g:
        for line in f:
            g.write(re.sub(r"^GET /\?[^ ]*", "GET /healthz", line))
    r = run_wrk(daemon, path + ".h", 32, 5)
    log(f"  replay ceiling: {r['rps']:.0f} req/s to /healthz with signed-request lines "
        f"(wrapped {r['wrapped']}); generating signed Alibaba requests: {count / t:.0f}/s")
    return {"rps": r["rps"], "gen_alibaba_per_s": count / t, "wrapped": r["wrapped"]}


# --------------------------------------------------------------------- soak


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        "rss_kb": int(st["VmRSS"].split()[0]),
        "threads": int(st["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass  # removed while we walked (retention, a delete)
    return total


def store_sample(state):
    db = os.path.join(state, "vmshot.db")
    size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0  # noqa: E731
    return {
        "db_bytes": size(db),
        "wal_bytes": size(db + "-wal"),
        "media_bytes": sum(dir_bytes(p) for p in (os.path.join(state, d) for d in os.listdir(state))
                           if os.path.isdir(p) and p.endswith(("media", ".media"))),
        "recordings_bytes": dir_bytes(os.path.join(state, "recordings")),
        "uploads_bytes": dir_bytes(os.path.join(state, "uploads")),
    }


def store_total(s):
    """The store: database, WAL, capture media and recordings (the upload
    target's directory is a destination, like a bucket, and not counted)."""
    return s["db_bytes"] + s["wal_bytes"] + s["media_bytes"] + s["recordings_bytes"]


class Recorder(threading.Thread):
    """Keeps recordings running all along and churning: every `period` s one
    more starts (Huawei's start and vmshot's /v1 in turn, over the guests),
    the oldest beyond `running` is stopped, and finished ones beyond `keep`
    are deleted (Huawei's batch-delete; one still uploading is refused, 409,
    and tried again next round), so files and rows come and go."""

    def __init__(self, daemon, ctx, period=20, running=3, keep=6):
        super().__init__(daemon=True)
        self.d, self.ctx, self.period, self.running, self.keep = daemon, ctx, period, running, keep
        self.stop_flag = threading.Event()
        self.live = []  # (kind, id)
        self.started = self.stopped = self.deleted = 0
        self.errors = []
        self.csrf = csrf(daemon)

    def hw(self, method, path, body=None):
        p = self.ctx["huawei"]["project"]
        h = {"X-Auth-Token": self.ctx["huawei"]["token"], "X-Project-Id": p}
        s, _, b = self.d.call(method, f"/v2/{p}/screen-records{path}", h, body)
        return s, (json.loads(b) if b else None)

    def step(self, n):
        i = n % len(self.ctx["domains"])
        if n % 2 == 0:
            s, b = self.hw("POST", "", {"desktop_id": self.ctx["uuids"][i], "type": "FULL"})
            if s in (200, 201):
                self.live.append(("huawei", b["id"]))
        else:
            s, _, raw = self.d.call(
                "POST", f"/v1/domains/{self.ctx['domains'][i]}/recordings?max_duration_seconds=3600",
                {"X-Vmshot-Csrf": self.csrf}, b"")
            b = json.loads(raw) if raw else None
            if s in (200, 201):
                self.live.append(("native", b["id"]))
        if s in (200, 201):
            self.started += 1
        else:
            self.errors.append(f"start {s} {b}")
        while len(self.live) > self.running:
            kind, rid = self.live.pop(0)
            if kind == "huawei":
                s, b = self.hw("POST", f"/{rid}/stop")
            else:
                s, _, b = self.d.call("POST", f"/v1/recordings/{rid}/stop", {"X-Vmshot-Csrf": self.csrf}, b"")
            if s == 200:
                self.stopped += 1
            else:
                self.errors.append(f"stop {s} {b}")
        # Finished ones beyond the newest `keep`: delete (uploads must end first).
        s, b = self.hw("GET", "?limit=1000")
        if s == 200:
            live = {rid for _, rid in self.live}
            done = [r["id"] for r in b["screen_records"] if r["id"] not in live and r["status"] != "RECORDING"]
            for rid in done[self.keep:][:10]:
                s, _ = self.hw("POST", "/batch-delete", {"screen_records": [{"id": rid}]})
                if s == 200:
                    self.deleted += 1
                elif s != 409:
                    self.errors.append(f"delete {s}")

    def count_running(self):
        s, b = self.hw("GET", "?status=RECORDING&limit=1000")
        return b["total_count"] if s == 200 else -1

    def run(self):
        n = 0
        while not self.stop_flag.is_set():
            try:
                self.step(n)
            except Exception as e:  # noqa: BLE001  (counted, reported; the soak goes on)
                self.errors.append(repr(e))
            n += 1
            self.stop_flag.wait(self.period)


def mix_capacity(sat, mix):
    """Req/s of the mix if each dialect's share took its own saturation rate:
    1 / sum(share_i / rate_i) (time shares add up)."""
    total = sum(mix.values())
    return 1.0 / sum((w / total) / sat[d] for d, w in mix.items() if w)


def slope_per_hour(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 60.0  # xs in minutes


# The flatness rule, per line: over the last 2/3 of the run (the first third
# is warm-up: mirrors opening, caches and the nonce table filling), the
# least-squares slope times one hour is within the tolerance, and so is the
# last minute's value against the first minute of that window.
FLAT_RULE = {
    # line: (relative tolerance, absolute floor, unit scale, unit)
    "rss_kb": (0.05, 4096, 1 / 1024, "MiB"),
    "fds": (0.0, 4, 1, "fds"),
    "threads": (0.0, 2, 1, "threads"),
    "wal_bytes": (0.05, 8 << 20, 1 / (1 << 20), "MiB"),
    "recordings_bytes": (0.05, 8 << 20, 1 / (1 << 20), "MiB"),
}
# The dialects whose captures are recorded in the store (an instance action
# each; Oracle's a job too): the store grows with them by design, until the
# hourly retention. Its line is judged per capture: the bytes it grew by per
# recorded capture over the window's second half within 25% of its first
# half's (a leak would add bytes the records do not explain).
RECORDED = {"alibaba", "aws", "oracle"}


def flat_verdicts(samples):
    out = {}
    n = len(samples)
    window = samples[n // 3:] if n >= 3 else samples
    for line, (rel, floor, scale, unit) in FLAT_RULE.items():
        xs = [s["minute"] for s in window]
        ys = [s[line] for s in window]
        first, last = ys[0], ys[-1]
        tol = max(floor, rel * first)
        slope = slope_per_hour(xs, ys) if len(xs) > 1 else 0.0
        flat = abs(slope) <= tol and abs(last - first) <= tol
        out[line] = {
            "first": first * scale, "last": last * scale, "min": min(s[line] for s in samples) * scale,
            "max": max(s[line] for s in samples) * scale, "slope_per_hour": slope * scale,
            "tolerance": tol * scale, "unit": unit, "flat": flat,
        }
    xs = [s["captures_recorded"] for s in window]
    ys = [s["store_bytes"] for s in window]
    half = len(window) // 2
    per = []
    for a, b in ((0, half), (half, len(window) - 1)):
        dc = xs[b] - xs[a]
        per.append((ys[b] - ys[a]) / dc if dc > 0 else 0.0)
    steady = per[0] > 0 and abs(per[1] - per[0]) <= 0.25 * per[0] or (per[0] <= 0 and per[1] <= 0)
    out["store_bytes"] = {
        "first": ys[0] / 1048576, "last": ys[-1] / 1048576,
        "min": min(s["store_bytes"] for s in samples) / 1048576,
        "max": max(s["store_bytes"] for s in samples) / 1048576,
        "slope_per_hour": slope_per_hour([s["minute"] for s in window], ys) / 1048576 if len(window) > 1 else 0,
        "bytes_per_capture": per, "unit": "MiB", "flat": steady,
    }
    return out


def soak(daemon, ctx, args, work, log, minutes, sat, conns=16, measure=True):
    mix = {d: 1 for d in reqs.DIALECTS}
    # Oracle's captures are each a JPEG kept and uploaded: at a full share an
    # hour of them is tens of gigabytes; a fiftieth of a share (a few a
    # second) keeps the disk bounded and the jobs' path busy.
    mix["oracle"] = 0.02
    estimate = mix_capacity(sat, mix)
    if measure:
        # The mix's own saturation, measured now, unpaced, 32 connections (past
        # every dialect's saturating concurrency): on a shared machine the
        # dialects' figures, each taken alone, overstate what they do together.
        # A pool that ran out (wrapped: replays a nonce refuses) is made again,
        # sized from the rate it reached, so the figure is the mix's own.
        path = os.path.join(work, "soak-capacity.req")
        size = int(max(estimate, 1000) * 20 * 1.3) + 500
        for _ in range(3):
            reqs.write(path, ctx, mix, size)
            r = run_wrk(daemon, path, 32, 20)
            log(f"soak: the mix at saturation: {r['rps']:.0f} req/s, p99 {r['p99_us'] / 1e3:.1f} ms, "
                f"{r['statuses']} (wrapped {r['wrapped']})")
            if not r["wrapped"]:
                break
            size = int(r["rps"] * 20 * 2) + 500
        measured = not r["wrapped"]
        capacity = r["rps"] if measured else estimate
    else:
        capacity, measured = estimate, False
    rate = capacity / 2
    log(f"soak: mix {mix}, capacity {capacity:.0f} req/s (from each dialect's alone: {estimate:.0f}), "
        f"target {rate:.0f} req/s for {minutes} min, {conns} connections paced by wrk's delay()")
    rec = Recorder(daemon, ctx)
    rec.start()
    samples = []
    t0 = time.time()
    failures_total = 0
    bad_total = {}
    captures = 0

    def make(k):
        path = os.path.join(work, f"soak-{k % 2}.req")
        count = int(rate * 60 * 1.25) + 500
        reqs.write(path, ctx, mix, count)
        return path

    path = make(0)
    for minute in range(1, minutes + 1):
        before = daemon.outcomes()
        nxt = {}
        gen = threading.Thread(target=lambda k=minute: nxt.setdefault("p", make(k)))
        # The process is read every 5 s through the minute and the minute's
        # median kept: a recording's encoder alone is ~27 MiB of heap while it
        # runs, so one reading would say more about where the recorder was in
        # its cycle than about the trend.
        readings = []
        stop = threading.Event()

        def read_proc():
            while not stop.wait(5):
                try:
                    readings.append(proc_sample(daemon.pid))
                except OSError:
                    return

        reader = threading.Thread(target=read_proc, daemon=True)
        reader.start()
        r = run_wrk(daemon, path, conns, 60, rate=rate)
        stop.set()
        reader.join()
        out = delta(daemon.outcomes(), before)
        if minute < minutes:
            # The next minute's requests, freshly signed, made after this
            # minute's run (not during it: the generator must not take CPU
            # from the measured daemon), and a fresh Oracle cookie.
            refresh_oracle(daemon, args, ctx)
            gen.start()
            gen.join()
            path = nxt["p"]
        ok = sum(n for k, n in r["statuses"].items() if k[0] == "2")
        busy = fail = 0
        for key, n in r["statuses"].items():
            if key[0] == "2":
                continue
            if any(key.startswith(b) for d in reqs.DIALECTS for b in DOCUMENTED_BUSY[d]):
                busy += n
            else:
                fail += n
                bad_total[key] = bad_total.get(key, 0) + n
        fail += r["socket_errors"]
        for (d, o), n in out.items():
            if o not in ACCEPTED_OUTCOMES:
                bad_total[f"{d}:{o}"] = bad_total.get(f"{d}:{o}", 0) + n
        failures_total += fail
        s = {"minute": minute, "elapsed_s": round(time.time() - t0)}
        if not daemon.alive():
            raise SystemExit(f"the daemon died in minute {minute}")
        now = proc_sample(daemon.pid)
        readings = readings or [now]
        for k in ("rss_kb", "fds", "threads"):
            vals = sorted(x[k] for x in readings)
            s[k] = vals[len(vals) // 2]
        s["rss_max_kb"] = max(x["rss_kb"] for x in readings)
        s.update(store_sample(daemon.state))
        s["store_bytes"] = store_total(s)
        s["mirrors"] = daemon.gauge("vmshot_vnc_mirrors")
        captures += sum(n for (d, o), n in out.items() if o == "ok" and d in RECORDED)
        s["captures_recorded"] = captures
        s.update({
            "requests": r["requests"], "rps": round(r["rps"], 1), "ok": ok, "busy": busy, "failures": fail,
            "p50_ms": round(r["p50_us"] / 1e3, 2), "p99_ms": round(r["p99_us"] / 1e3, 2),
            "recordings_running": rec.count_running(), "recordings_started": rec.started,
            "recordings_deleted": rec.deleted, "load1": os.getloadavg()[0], "wrapped": r["wrapped"],
        })
        samples.append(s)
        log(f"  minute {minute}: rss {s['rss_kb'] / 1024:.1f} MiB fds {s['fds']} threads {s['threads']} "
            f"store {s['store_bytes'] / 1048576:.1f} MiB | {s['rps']} req/s ok {ok} busy {busy} fail {fail} "
            f"p99 {s['p99_ms']} ms | recordings {s['recordings_running']} running, {rec.started} started, "
            f"{rec.deleted} deleted | load {s['load1']:.2f}")
    rec.stop_flag.set()
    rec.join(timeout=60)
    return {
        "mix": mix, "capacity": capacity, "measured": measured, "estimate": estimate, "rate": rate, "conns": conns, "minutes": minutes,
        "samples": samples, "failures": failures_total, "bad": bad_total,
        "recorder_errors": rec.errors[:20], "recorder_error_count": len(rec.errors),
        "verdicts": flat_verdicts(samples), "duration_s": round(time.time() - t0),
    }


# --------------------------------------------------------------------- docs


def machine():
    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1048576
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[:2]
    return f"{cpus} CPUs, {mem:.1f} GiB, kernel {os.uname().release}; {' '.join(wrk)} (client on the same cores)"


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_between(path, name, text):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        doc = f.read()
    if "## Load and soak" not in doc:
        doc = doc.rstrip("\n") + "\n\n## Load and soak\n\n" + LOAD_INTRO
    if begin not in doc:
        doc = doc.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text.strip("\n") + "\n" + end + tail)


LOAD_INTRO = """`benches/load.sh` (see docs/BENCHMARKS.md) drives one release `vmshot serve`
over real fixture guests with wrk, and writes the tables below.
"""


def fmt_counts(statuses):
    return ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]))


def saturation_table(results, ceiling, meta):
    lines = [
        f"Date: {meta['date']}. Machine: {meta['machine']}. Load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}.",
        "",
        f"{meta['seconds']} s per level, concurrency doubled from 1 until two levels in a row add under 5%; "
        "the saturating concurrency is the smallest within 5% of the best req/s. Every dialect over "
        f"{meta['guests']} guests (1024×768 pattern screens), throttles off, capture cap 4 + 64 waiting.",
        "",
        "| dialect | call | saturating concurrency | req/s | p50 (ms) | p99 (ms) | answers (status code: count) | documented busy | failures |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    calls = {
        "alibaba": "GetInstanceScreenshot (sig 1.0, fresh nonce each)",
        "aws": "GetConsoleScreenshot (SigV4, fresh each)",
        "native": "GET /v1/domains/{id}/screenshot",
        "oracle": "POST /console/screencapture/ (a job each)",
        "nova": "os-instance-actions, limit 10",
        "huawei": "ListScreenRecords, limit 10 (token)",
        "marketplace": "upload status (bearer)",
    }
    for r in results:
        s = r["saturation"]
        lines.append(
            f"| {r['dialect']} | {calls[r['dialect']]} | {s['conns']} | {s['rps']:.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {fmt_counts(s['statuses'])}"
            f"{'; socket errors ' + str(s['socket_errors']) if s['socket_errors'] else ''} | {s['busy']} | "
            f"{s['failures'] + sum(s['bad_outcomes'].values())} |"
        )
    lines += [
        "",
        "Every level (req/s at concurrency 1, 2, 4, …): "
        + "; ".join(
            f"{r['dialect']} " + ", ".join(f"{x['conns']}: {x['rps']:.0f}" for x in r["levels"]) for r in results
        )
        + ".",
        "",
        f"The request generator is not the bottleneck: signed Alibaba requests are made at "
        f"{ceiling['gen_alibaba_per_s']:.0f}/s before each run (never during it), and wrk replaying such lines "
        f"(to `/healthz`, which answers at once) reaches {ceiling['rps']:.0f} req/s on this machine, "
        f"{ceiling['rps'] / max(r['saturation']['rps'] for r in results):.1f}× the fastest dialect's saturation.",
    ]
    return "\n".join(lines)


def soak_table(s, meta, csv_rel):
    v = s["verdicts"]
    first = s["samples"][0]
    last = s["samples"][-1]
    lines = [
        f"Date: {meta['date']}. Machine: {meta['machine']}. Load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}.",
        "",
        f"Command: `benches/load.sh soak {s['minutes']}`; ran {s['duration_s'] / 60:.1f} min. Mix (weights): "
        + ", ".join(f"{d} {w:g}" for d, w in s["mix"].items())
        + (f"; its capacity measured at the start (20 s unpaced, 32 connections): {s['capacity']:.0f} req/s "
           f"(from each dialect's figure alone, 1 / Σ(shareᵢ / req/sᵢ), it would be {s['estimate']:.0f}); "
           if s.get("measured", True) else
           f"; its capacity from each dialect's saturation figure alone, 1 / Σ(shareᵢ / req/sᵢ): "
           f"{s['estimate']:.0f} req/s (the mix's own measurement ran out of requests); ")
        + f"target half: {s['rate']:.0f} req/s over {s['conns']} connections paced by wrk's `delay()` "
        f"(achieved {sum(x['rps'] for x in s['samples']) / len(s['samples']):.0f} req/s on average). "
        "Signed requests freshly made each minute. Recordings all along: one more every 20 s "
        "(Huawei start and `/v1` in turn), the oldest beyond 3 stopped, finished ones beyond the newest 6 "
        f"deleted: {last['recordings_started']} started, {last['recordings_deleted']} deleted.",
        "",
        f"Requests: {sum(x['requests'] for x in s['samples'])}, ok {sum(x['ok'] for x in s['samples'])}, "
        f"documented busy {sum(x['busy'] for x in s['samples'])}, failures {s['failures']}"
        + (f" ({fmt_counts(s['bad'])})" if s["bad"] else "")
        + f"; recorder errors {s['recorder_error_count']}. p99 per minute: "
        f"{min(x['p99_ms'] for x in s['samples']):.1f}–{max(x['p99_ms'] for x in s['samples']):.1f} ms.",
        "",
        "Flat: over the last 2/3 of the run (the first third is warm-up), the least-squares slope × 1 h and "
        "the last minute minus the window's first are both within the tolerance: RSS, WAL and recordings "
        "5% of the window's first value (at least 4, 8 and 8 MiB), fds 4, threads 2. The store as a whole grows "
        "with what it records (every Alibaba/EC2 capture and Oracle job is a row, kept until the hourly "
        "retention): it passes when the bytes it grew per recorded capture in the window's second half are "
        "within 25% of its first half's.",
        "",
        "| line | minute 1 | window's first | last | min | max | slope per hour | tolerance | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    names = {"rss_kb": "RSS", "fds": "open fds", "threads": "threads", "wal_bytes": "store: WAL",
             "recordings_bytes": "store: recordings dir", "store_bytes": "store: all (db+WAL+media+recordings)"}
    for line, x in v.items():
        scale = FLAT_RULE[line][2] if line in FLAT_RULE else 1 / 1048576
        if line == "store_bytes":
            a, b = x["bytes_per_capture"]
            tol = f"{a:.0f} → {b:.0f} B/capture (±25%)"
            verdict = "grows with its records, steady per capture" if x["flat"] else "**not explained by records**"
        else:
            tol = f"±{x['tolerance']:.1f}"
            verdict = "flat" if x["flat"] else "**not flat**"
        lines.append(
            f"| {names[line]} ({x['unit']}) | {first[line] * scale:.1f} | "
            f"{x['first']:.1f} | {x['last']:.1f} | {x['min']:.1f} | {x['max']:.1f} | {x['slope_per_hour']:+.2f} | "
            f"{tol} | {verdict} |"
        )
    lines += ["", f"Every minute's sample: [`{csv_rel}`]({csv_rel.replace('docs/', '')})."]
    return "\n".join(lines)


CSV_FIELDS = [
    "minute", "elapsed_s", "rss_kb", "rss_max_kb", "fds", "threads", "store_bytes", "db_bytes", "wal_bytes", "media_bytes",
    "recordings_bytes", "uploads_bytes", "requests", "rps", "ok", "busy", "failures", "p50_ms", "p99_ms",
    "recordings_running", "recordings_started", "recordings_deleted", "captures_recorded", "mirrors", "load1", "wrapped",
]


def write_csv(path, samples):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(",".join(CSV_FIELDS) + "\n")
        for s in samples:
            f.write(",".join(str(s[k]) for k in CSV_FIELDS) + "\n")


# --------------------------------------------------------------------- main


def main():
    a = argparse.ArgumentParser()
    a.add_argument("mode", choices=["saturate", "soak", "smoke"])
    a.add_argument("--minutes", type=int, default=60)
    for name in ("url", "state", "log", "project", "token", "key", "secret", "oracle-user",
                 "oracle-password-file", "domains", "uuids", "repo", "bin"):
        a.add_argument("--" + name, required=True)
    a.add_argument("--pid", type=int, required=True)
    a.add_argument("--seconds", type=int, default=10, help="per saturation level")
    a.add_argument("--dialects", default=",".join(reqs.DIALECTS))
    a.add_argument("--saturation-json", help="where saturate writes / soak reads its figures "
                   "(default REPO/docs/soak/saturation.json)")
    a.add_argument("--no-docs", action="store_true")
    args = a.parse_args()
    sat_json = args.saturation_json or os.path.join(args.repo, "docs", "soak", "saturation.json")
    doc = os.path.join(args.repo, "docs", "RELIABILITY.md")

    def log(msg):
        print(msg, flush=True)

    daemon = Daemon(args)
    ctx = context(daemon, args)
    work = os.path.join(os.path.dirname(args.state), "requests")
    os.makedirs(work, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "load_before": uptime(), "guests": len(ctx["domains"]), "seconds": args.seconds}
    seed_uploads(daemon, ctx)
    dialects = args.dialects.split(",")

    if args.mode == "saturate":
        results = []
        for d in dialects:
            log(f"{d}: (waited {wait_idle(daemon):.0f} s for the daemon to be idle)")
            results.append(saturate_one(daemon, ctx, d, work, args.seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256], log))
        ceiling = replay_ceiling(daemon, ctx, work, log)
        meta["load_after"] = uptime()
        table = saturation_table(results, ceiling, meta)
        print(table)
        os.makedirs(os.path.dirname(sat_json), exist_ok=True)
        with open(sat_json, "w") as f:
            json.dump({"meta": meta, "ceiling": ceiling, "results": results}, f, indent=1)
        if not args.no_docs:
            write_between(doc, "load", table)
        failed = [r["dialect"] for r in results
                  if r["saturation"]["failures"] or r["saturation"]["bad_outcomes"]]
        if failed:
            raise SystemExit(f"answers beyond the documented busy ones: {failed}")
        return

    if args.mode == "smoke":
        # CI: every dialect 5 s at 8 connections, then a 1-minute mini-soak at
        # a modest fixed rate; any undocumented answer or a crash fails.
        bad = []
        for d in dialects:
            r = saturate_one(daemon, ctx, d, work, 5, [8], log)
            s = r["saturation"]
            if s["failures"] or s["bad_outcomes"] or s["requests"] == 0:
                bad.append(f"{d}: {s['statuses']} {s['bad_outcomes']}")
        sat = {d: 200.0 for d in reqs.DIALECTS}
        res = soak(daemon, ctx, args, work, log, 1, sat, conns=8, measure=False)
        if res["failures"] or res["bad"]:
            bad.append(f"mini-soak: {res['bad']}")
        if not daemon.alive():
            bad.append("the daemon died")
        if bad:
            raise SystemExit("smoke failed: " + "; ".join(bad))
        log("smoke: ok")
        return

    with open(sat_json) as f:
        saved = json.load(f)
    sat = {r["dialect"]: r["saturation"]["rps"] for r in saved["results"]}
    res = soak(daemon, ctx, args, work, log, args.minutes, sat)
    meta["load_after"] = uptime()
    csv_rel = "docs/soak/soak.csv"
    # --no-docs: the samples go beside the state directory, the repo is untouched.
    out_dir = os.path.dirname(args.state) if args.no_docs else os.path.join(args.repo, "docs", "soak")
    write_csv(os.path.join(out_dir, "soak.csv"), res["samples"])
    log(f"samples: {os.path.join(out_dir, 'soak.csv')}")
    with open(os.path.join(out_dir, "soak.json"), "w") as f:
        json.dump({"meta": meta, **{k: v for k, v in res.items() if k != "samples"}}, f, indent=1)
    table = soak_table(res, meta, csv_rel)
    print(table)
    if not args.no_docs:
        write_between(doc, "soak", table)
    not_flat = [k for k, v in res["verdicts"].items() if not v["flat"]]
    if res["failures"] or res["bad"] or not_flat:
        raise SystemExit(f"soak: failures {res['failures']} {res['bad']}, not flat: {not_flat}")


if __name__ == "__main__":
    main()
