#!/usr/bin/env bash
# Set up the host and run every test: unit tests, integration tests that boot
# real QEMU guests (TCG) under a real libvirtd, and the Debian package's test. The fixture guests are removed
# afterwards unless VMSHOT_KEEP_FIXTURES=1 (a later run then reuses them).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh
cleanup() {
    [ "${VMSHOT_KEEP_FIXTURES:-0}" = 1 ] && return
    bash fixtures/fixtures.sh down
    # The live page's tests keep guests of their own (tests/common/page.rs).
    VMSHOT_FIXTURE_PREFIX=vmshot-pg- VMSHOT_FIXTURES_DIR=target/fixtures-page bash fixtures/fixtures.sh down
}
trap cleanup EXIT

bash scripts/check-layers.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
# The load driver against the debug build just tested (benches/load.sh): every
# dialect for 5 s, then a minute of them mixed with recordings churning; a
# crash or any answer beyond the documented busy ones fails. The figures in
# docs/RELIABILITY.md are the release build's saturation and hour.
VMSHOT_BIN=target/debug/vmshot bash benches/load.sh smoke
# The Debian package on a fresh Debian 12 booted under systemd (in
# systemd-nspawn; its root file system cached in target/pkgtest), packaging
# the debug build just tested rather than building for release.
PACKAGE_PROFILE=dev bash scripts/package-test.sh
# Every fuzz target for 20 s under AFL++ (docs/RELIABILITY.md, "Hostile
# input"): an unoptimised build, which takes a fraction of the time of an
# optimised one, made where the next run on this machine finds it again; the
# docs keep the figures of a long run.
FUZZ_PROFILE=dev FUZZ_DOC=0 FUZZ_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/vmshot-fuzz-target" bash fuzz/run.sh 20
