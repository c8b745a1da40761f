#!/usr/bin/env bash
# Load and soak of one real `vmshot serve` (release build) over real fixture
# guests, driven by wrk (Debian's, from scripts/setup-host.sh) replaying
# pre-built requests (benches/load/). See docs/RELIABILITY.md, "Load and soak".
#
# usage: benches/load.sh [saturate]        each dialect at saturation; writes the
#                                          table between <!-- load:begin/end -->
#        benches/load.sh soak [MINUTES]    mixed dialects at half the measured
#                                          capacity (default 60 min), recordings
#                                          churning; samples every minute; writes
#                                          <!-- soak:begin/end --> and docs/soak/*.csv
#        benches/load.sh smoke             CI: every dialect 5 s, a 60 s mini-soak;
#                                          fails on a crash or an undocumented answer
# Options (after the mode): --keep-guests, --no-docs (print only).
# Environment: VMSHOT_BIN (a built binary instead of cargo build --release),
#   VMSHOT_FIXTURE_PREFIX (default vmshot-ld-: clear of other runs' guests),
#   VMSHOT_FIXTURES_DIR, LOAD_GUESTS (4), LOAD_PORT (18490), LOAD_WORK (the
#   state directory; default a temp dir, removed at the end).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/lib.sh"
mode=${1:-saturate}
[ $# -gt 0 ] && shift
minutes=60
if [ "$mode" = soak ] && [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    minutes=$1
    shift
fi
keep_guests=0
extra=()
for arg in "$@"; do
    case $arg in
        --keep-guests) keep_guests=1 ;;
        *) extra+=("$arg") ;;
    esac
done
case $mode in saturate | soak | smoke) ;; *) sed -n '5,15p' "$0" >&2; exit 2 ;; esac

export VMSHOT_FIXTURE_PREFIX=${VMSHOT_FIXTURE_PREFIX:-vmshot-ld-}
guests=${LOAD_GUESTS:-4}
port=${LOAD_PORT:-18490}
uri=${LIBVIRT_URI:-qemu:///system}
command -v wrk >/dev/null || { echo "load.sh: wrk is missing: run scripts/setup-host.sh" >&2; exit 1; }

if [ -n "${LOAD_WORK:-}" ]; then
    work=$LOAD_WORK
    mkdir -p "$work"
    own_work=0
else
    work=$(mktemp -d /var/tmp/vmshot-load.XXXXXX)
    own_work=1
fi
pid=
cleanup() {
    # Stop the daemon (SIGTERM: recordings are closed), then our guests.
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    [ "$keep_guests" = 1 ] || bash "$repo/fixtures/fixtures.sh" load-down || true
    [ "$own_work" = 0 ] || rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${VMSHOT_BIN:-}" ]; then
    bin=$VMSHOT_BIN
else
    nice -n 10 cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml"
    bin=$repo/target/release/vmshot
fi

# The guests: copies of the 1024x768 pattern guest, idle once painted, so every
# capture is a real one of a real screen and costs the host nothing between.
bash "$repo/fixtures/fixtures.sh" load-up "$guests"
domains=()
for ((i = 0; i < guests; i++)); do domains+=("$(printf '%sload-%02d' "$VMSHOT_FIXTURE_PREFIX" "$i")"); done

# Credentials: one key (Alibaba, EC2, Huawei AK/SK), tokens (Nova, Huawei,
# Marketplace), the example Oracle user; all admin, so scope is not measured.
project=1b0c7e5a4f8d4c2e9a610d3e5f7a9b11
token=load-token-0123456789abcdef
cat >"$work/keys.toml" <<TOML
[[key]]
id = "load-key"
secret = "load-secret"
project = "$project"
roles = ["admin"]
TOML
cat >"$work/tokens.toml" <<TOML
[[token]]
id = "$token"
user_id = "load"
project_id = "$project"
roles = ["admin"]
TOML
cp "$repo/systemd/oracle-credentials.toml" "$work/oracle-users.toml"
printf 'example-password-change-me\n' >"$work/oracle-password"
chmod 600 "$work/keys.toml" "$work/tokens.toml" "$work/oracle-users.toml" "$work/oracle-password"
mkdir -p "$work/state"
{
    cat <<TOML
[server]
listen = "127.0.0.1:$port"
[store]
path = "$work/state/vmshot.db"
[recordings]
dir = "$work/state/recordings"
[uploads]
[[uploads.targets]]
name = "local"
kind = "dir"
path = "$work/state/uploads"
[ui]
access = "loopback"
TOML
    if [ "$mode" = soak ]; then
        # The host is shared: the diagnosis watcher would keep a VNC mirror
        # (3-8 MiB, a socket, a task) of every other guest that comes and goes
        # on this libvirtd, and the soak's lines would follow other people's
        # tests. Off for the soak; on (the default) for saturation and smoke.
        printf '[diagnosis]\nenabled = false\n'
    fi
    cat <<TOML
# Throttles off: the limits under load are the capture cap (4 at once, 64
# waiting, then "busy") and the machine, not an interval per guest.
[alibaba]
credentials_file = "$work/keys.toml"
throttle_interval_secs = 0
# Room for every nonce of a saturation run and of the soak's half hour of
# them (kept 30 min) on a quiet host: ~1,100 Alibaba calls a second; ~208 MiB,
# resident from the start.
max_nonces = 2000000
[aws]
credentials_file = "$work/keys.toml"
throttle_interval_secs = 0
[huawei]
credentials_file = "$work/keys.toml"
tokens_file = "$work/tokens.toml"
[marketplace]
tokens_file = "$work/tokens.toml"
[nova]
tokens_file = "$work/tokens.toml"
[oracle]
credentials_file = "$work/oracle-users.toml"
identity_domain = "acme"
capture_interval_secs = 0
TOML
    for table in alibaba.instances aws.instances oracle.instances; do
        echo "[$table]"
        for ((i = 0; i < guests; i++)); do printf '"%s" = "%s"\n' "$(printf 'ld-%02d' "$i")" "${domains[$i]}"; done
    done
} >"$work/vmshot.toml"

uuids=()
for d in "${domains[@]}"; do uuids+=("$(virsh -q -c "$uri" domuuid "$d")"); done

# Normal priority: the daemon is what is measured (builds run under nice).
RUST_LOG=warn "$bin" serve --config "$work/vmshot.toml" 2>>"$work/vmshot.log" &
pid=$!
wait_healthy "$port" "$pid" "$work/vmshot.log"

python3 "$repo/benches/load/load.py" "$mode" --minutes "$minutes" \
    --url "http://127.0.0.1:$port" --pid "$pid" --state "$work/state" --log "$work/vmshot.log" \
    --project "$project" --token "$token" --key load-key --secret load-secret \
    --oracle-user /Compute-acme/jack.jones@example.com --oracle-password-file "$work/oracle-password" \
    --domains "${domains[*]}" --uuids "${uuids[*]}" --repo "$repo" --bin "$bin" "${extra[@]}"
