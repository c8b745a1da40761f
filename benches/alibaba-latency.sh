#!/usr/bin/env bash
# HTTP latency (p50, p99) of GetInstanceScreenshot: vmshot serve next to the
# anchor benches/baseline/py_agent.py serve, on the same guest, in one run,
# both called through Alibaba's classic SDK.
#
# usage: benches/alibaba-latency.sh [DOMAIN] [RUNS]   (default vmshot-fx-panic, 100)
#        VMSHOT_FAST_PATH=vnc measures the VNC fast path instead of screenshots.
# Needs: the guest up (fixtures/fixtures.sh up panic), Debian's python3-libvirt
# and python3-pil for the anchor; builds vmshot --release and the SDK venv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
domain=${1:-vmshot-fx-panic}
runs=${2:-100}
anchor=${VMSHOT_ANCHOR:-$repo/benches/baseline/py_agent.py}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml"
bash "$repo/tests/sdk/setup.sh" "$repo/target/sdk-venv"

printf '[[key]]\nid = "bench-key"\nsecret = "bench-secret"\n' >"$work/keys.toml"
chmod 600 "$work/keys.toml"
cat >"$work/vmshot.toml" <<TOML
[server]
listen = "127.0.0.1:18481"
[capture]
# The stable path unless VMSHOT_FAST_PATH=vnc (the daemon's default).
fast_path = "${VMSHOT_FAST_PATH:-off}"
[alibaba]
credentials_file = "$work/keys.toml"
# The benchmark calls one instance back to back.
throttle_interval_secs = 0
[alibaba.instances]
"i-bench" = "$domain"
TOML
RUST_LOG=warn "$repo/target/release/vmshot" serve --config "$work/vmshot.toml" 2>"$work/vmshot.log" &
pids+=($!)
/usr/bin/python3 "$anchor" serve 18482 &
pids+=($!)
for url in http://127.0.0.1:18481/healthz http://127.0.0.1:18482/; do
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$url" && break
        sleep 0.1
    done
done

"$repo/target/sdk-venv/bin/python" "$repo/benches/alibaba_latency.py" \
    --vmshot http://127.0.0.1:18481 --anchor http://127.0.0.1:18482 \
    --instance i-bench --domain "$domain" --runs "$runs"
