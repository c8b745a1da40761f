#!/usr/bin/env bash
# The fault matrix in one command: every row of tests/faults.rs, run against
# the real libvirtd, real guests, the real store and a real S3-compatible
# server (as root: rows mount a tmpfs and stop libvirtd), then each row's line
# (target/reliability/ROW.md) written into docs/RELIABILITY.md between its
# markers, with the machine and the date. A row that misses its expectation
# says so in the table and makes this exit non-zero.
#
#   bash scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh
rm -rf target/reliability
status=0
cargo test --locked --release --test faults -- --test-threads=1 || status=$?

# The rows in the issue's order; a row that did not run shows as such.
rows=(kill9 libvirtd guest-changes frozen disk-full object-store damaged-at-start)
table="$(mktemp)"
trap 'rm -f "$table"' EXIT
{
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"),"
    echo "libvirt $(libvirtd --version | awk '{print $NF}'), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') (TCG), release build:"
    echo "\`bash scripts/reliability.sh\`."
    echo
    echo "| fault | expected | measured | met |"
    echo "|---|---|---|---|"
    for row in "${rows[@]}"; do
        if [[ -f "target/reliability/$row.md" ]]; then
            cat "target/reliability/$row.md"
        else
            echo "| $row | | did not run | **no** |"
        fi
    done
} > "$table"
python3 - "$table" <<'PY'
import pathlib, sys
doc = pathlib.Path("docs/RELIABILITY.md")
text = doc.read_text()
begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
table = pathlib.Path(sys.argv[1]).read_text()
doc.write_text(f"{head}{begin}\n{table}{end}{tail}")
PY
echo "docs/RELIABILITY.md: the fault matrix written"
exit "$status"
