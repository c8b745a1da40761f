#!/usr/bin/env bash
# `vmshot grab` next to the Python anchor (benches/baseline/py_agent.py bench,
# what an operator would script with libvirt-python and Pillow)
# on the same guest, in one run: median of N runs each.
#
# usage: benches/grab-vs-anchor.sh [DOMAIN] [N]     (default vmshot-fx-panic, 30)
# Needs: a release build (cargo build --release), the guest running
# (fixtures/fixtures.sh up panic), Debian's python3-libvirt and python3-pil.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
domain=${1:-vmshot-fx-panic}
runs=${2:-30}
anchor=${VMSHOT_ANCHOR:-$repo/benches/baseline/py_agent.py}
vmshot=$repo/target/release/vmshot
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

anchor_line=$(/usr/bin/python3 "$anchor" bench "$domain" "$runs")

for _ in 1 2 3; do "$vmshot" grab "$domain" -o "$out/warm.jpg" >/dev/null; done
for i in $(seq 1 "$runs"); do
    start=$(date +%s%N)
    "$vmshot" grab "$domain" -o "$out/$i.jpg" >>"$out/lines"
    echo $(( ($(date +%s%N) - start) / 1000 )) >>"$out/wall_us"
done

/usr/bin/python3 - "$anchor_line" "$out/lines" "$out/wall_us" "$domain" "$runs" <<'PY'
import json, statistics, sys
anchor = json.loads(sys.argv[1])
lines = [json.loads(l) for l in open(sys.argv[2])]
wall = [int(l) / 1000 for l in open(sys.argv[3])]
p50 = lambda xs: statistics.median(xs)
grab = p50([l["grab_ms"] for l in lines])
enc = p50([l["encode_ms"] for l in lines])
tot = p50([l["grab_ms"] + l["encode_ms"] for l in lines])
a_grab, a_enc, a_tot = anchor["p50_grab_ms"], anchor["p50_encode_hash_b64_ms"], anchor["p50_total_ms"]
print(f"{sys.argv[4]} {lines[0]['width']}x{lines[0]['height']}, median of {sys.argv[5]} runs each")
print(f"{'':34} {'vmshot':>8} {'anchor':>8} {'ratio':>7}")
print(f"{'grab (virDomainScreenshot) ms':34} {grab:8.2f} {a_grab:8.2f} {grab / a_grab:7.2f}")
print(f"{'decode+encode+hash ms (1)':34} {enc:8.2f} {a_enc:8.2f} {enc / a_enc:7.2f}")
print(f"{'total in-process ms':34} {tot:8.2f} {a_tot:8.2f} {tot / a_tot:7.2f}")
print(f"{'vmshot grab, whole process ms (2)':34} {p50(wall):8.2f}")
print("(1) the anchor's figure includes base64, vmshot's does not (the CLI writes a file)")
print("(2) process start, libvirt connect, grab, encode, write the file")
PY
