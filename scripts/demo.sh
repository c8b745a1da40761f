#!/usr/bin/env bash
# vmshot's main job on a fresh Debian 12 host: set up, boot the kernel-panic
# guest, grab its console to ./demo.jpg and print the JSON line.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

bash "$repo/scripts/setup-host.sh"
cargo build --release --locked --manifest-path "$repo/Cargo.toml"
echo "demo.sh: booting vmshot-fx-panic (about a minute under TCG)..." >&2
bash "$repo/fixtures/fixtures.sh" up panic
"$repo/target/release/vmshot" grab vmshot-fx-panic -o ./demo.jpg
echo "demo.sh: wrote ./demo.jpg; remove the guest with: bash $repo/fixtures/fixtures.sh down" >&2
