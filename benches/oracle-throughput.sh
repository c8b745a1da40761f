#!/usr/bin/env bash
# Oracle Compute Classic capture jobs per second (create, poll to complete,
# fetch the JPEG) next to Alibaba GetInstanceScreenshot calls per second, on
# one guest of one vmshot serve with the store on and both intervals off;
# one client, then concurrent ones. Prints one JSON line whose
# ratio_jobs_to_screenshots is jobs/s ÷ screenshots/s at each concurrency.
#
# usage: benches/oracle-throughput.sh [DOMAIN] [JOBS] [CLIENTS]
#        (default vmshot-fx-panic, 100, "1,4")
#        VMSHOT_FAST_PATH=off measures screenshots instead of the VNC fast path.
# Needs: the guest up (fixtures/fixtures.sh up panic); builds vmshot --release
# and the SDK venv. The Oracle user is systemd/oracle-credentials.toml's
# example, whose password that file gives.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/lib.sh"
domain=${1:-vmshot-fx-panic}
jobs=${2:-100}
clients=${3:-1,4}
port=18485
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
cp "$repo/systemd/oracle-credentials.toml" "$work/oracle-users.toml"
printf 'example-password-change-me\n' >"$work/oracle-password"
chmod 600 "$work/keys.toml" "$work/oracle-users.toml" "$work/oracle-password"
user=/Compute-acme/jack.jones@example.com
cat >"$work/vmshot.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[capture]
fast_path = "${VMSHOT_FAST_PATH:-vnc}"
# Oracle's jobs live in the store; every capture's record too.
[store]
path = "$work/vmshot.db"
# Both dialects call one guest back to back.
[alibaba]
credentials_file = "$work/keys.toml"
throttle_interval_secs = 0
[alibaba.instances]
"i-bench" = "$domain"
[oracle]
credentials_file = "$work/oracle-users.toml"
identity_domain = "acme"
capture_interval_secs = 0
[oracle.instances]
"bench" = "$domain"
TOML
RUST_LOG=warn "$repo/target/release/vmshot" serve --config "$work/vmshot.toml" 2>"$work/vmshot.log" &
pid=$!
wait_healthy "$port" "$pid" "$work/vmshot.log"

"$repo/target/sdk-venv/bin/python" "$repo/benches/oracle_throughput.py" \
    --vmshot "http://127.0.0.1:$port" --instance i-bench \
    --oracle-instance "$user/bench" --user "$user" \
    --password-file "$work/oracle-password" --jobs "$jobs" --clients "$clients"
