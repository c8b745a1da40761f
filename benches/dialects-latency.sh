#!/usr/bin/env bash
# HTTP latency (p50, p99) of one guest's screenshot through two dialects of
# one vmshot serve, in one run: Alibaba's GetInstanceScreenshot (classic SDK)
# and AWS's GetConsoleScreenshot (boto3), calls interleaved.
#
# usage: benches/dialects-latency.sh [DOMAIN] [RUNS]   (default vmshot-fx-panic, 100)
#        VMSHOT_FAST_PATH=off measures screenshots instead of the VNC fast path;
#        VMSHOT_STORE=1 records every capture in a store (one fsync each).
# Needs: the guest up (fixtures/fixtures.sh up panic); builds vmshot --release
# and the SDK venv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/lib.sh"
domain=${1:-vmshot-fx-panic}
runs=${2:-100}
work=$(mktemp -d)
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml"
bash "$repo/tests/sdk/setup.sh" "$repo/target/sdk-venv"

printf '[[key]]\nid = "bench-key"\nsecret = "bench-secret"\n' >"$work/keys.toml"
chmod 600 "$work/keys.toml"
cat >"$work/vmshot.toml" <<TOML
[server]
listen = "127.0.0.1:18483"
[capture]
fast_path = "${VMSHOT_FAST_PATH:-vnc}"
# Both dialects call one instance back to back.
[alibaba]
credentials_file = "$work/keys.toml"
throttle_interval_secs = 0
[alibaba.instances]
"i-bench" = "$domain"
[aws]
credentials_file = "$work/keys.toml"
throttle_interval_secs = 0
[aws.instances]
"i-bench" = "$domain"
TOML
if [ "${VMSHOT_STORE:-0}" = 1 ]; then
    printf '[store]\npath = "%s"\n' "$work/vmshot.db" >>"$work/vmshot.toml"
fi
RUST_LOG=warn "$repo/target/release/vmshot" serve --config "$work/vmshot.toml" 2>"$work/vmshot.log" &
pid=$!
wait_healthy 18483 "$pid" "$work/vmshot.log"

"$repo/target/sdk-venv/bin/python" "$repo/benches/dialects_latency.py" \
    --vmshot http://127.0.0.1:18483 --instance i-bench --runs "$runs"
