#!/usr/bin/env bash
# Build (or reuse) s3s-fs, the S3-compatible server tests/uploads.rs uploads
# to: it checks SigV4 signatures, keeps objects and unfinished multipart
# uploads as plain files that survive its own kill -9, and starts in ~60 ms.
#
#   tests/s3/setup.sh ROOT      # the binary is then ROOT/bin/s3s-fs
#
# Built with `cargo install` from crates.io, pinned and --locked, into ROOT
# (the tests use target/s3s-fs): ~8 min of CPU on two cores the first time,
# a no-op after (a stamp names the version). Safe to run concurrently: a run
# holds a lock on ROOT.lock.
#
# s3s-fs 0.14.1 needs rustc >= 1.92 (later releases need 1.96); vmshot itself
# builds with 1.89, so this tool is built on its own, never a dependency.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 ROOT" >&2
    exit 2
fi
version=0.14.1
root="$1"
mkdir -p "$root"
root="$(cd "$root" && pwd)"
stamp="$root/.vmshot-s3s-fs-version"

built() {
    [[ -x "$root/bin/s3s-fs" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]
}

built && exit 0
exec 9>"$root.lock"
flock 9
built && exit 0

rustc_minor="$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
if [[ "$rustc_minor" -lt 92 ]]; then
    echo "tests/s3/setup.sh: s3s-fs $version needs rustc >= 1.92, this is $(rustc --version):" >&2
    echo "tests/s3/setup.sh: run 'rustup update stable'" >&2
    exit 1
fi
rm -f "$stamp"
cargo install s3s-fs --version "=$version" --features binary --locked --root "$root" --quiet
"$root/bin/s3s-fs" --help >/dev/null
echo "$version" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
