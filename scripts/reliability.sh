#!/usr/bin/env bash
# The fault matrix and the auth matrix in one command.
#
# The fault matrix: every row of tests/faults.rs, run against the real
# libvirtd, real guests, the real store and a real S3-compatible server (as
# root: rows mount a tmpfs and stop libvirtd), then each row's line
# (target/reliability/ROW.md) written into docs/RELIABILITY.md between its
# markers, with the machine and the date. A row that misses its expectation
# says so in the table and makes this exit non-zero.
#
# The auth matrix: every scheme of every dialect (tests/auth_matrix.rs, one
# test a scheme, its row in target/reliability/auth-SCHEME.md) against each
# kind of caller, written between the auth markers the same way. It injects
# no fault: `--only auth` runs it alone, beside anything else on the host.
#
#   bash scripts/reliability.sh [--only faults|auth] [--debug | --no-run]
#
# --debug builds the tests without optimisation (quicker to build; the fault
# matrix's timings are then not the release's) and says so in the doc.
# --no-run runs nothing: it writes the rows the last `cargo test` left in
# target/reliability (CI's, say: scripts/test.sh runs both tests), and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: bash scripts/reliability.sh [--only faults|auth] [--debug | --no-run]" >&2
    exit 2
}
command=(bash scripts/reliability.sh "$@")
only=all
run=yes
profile=(--release)
build="release build"
while [[ $# -gt 0 ]]; do
    case $1 in
        --only)
            [[ ${2:-} == faults || ${2:-} == auth ]] || usage
            only=$2
            shift 2
            ;;
        --debug)
            profile=()
            build="debug build"
            shift
            ;;
        --no-run)
            run=no
            build="rows left by the last \`cargo test\` (its build)"
            shift
            ;;
        *) usage ;;
    esac
done

# Writes the file $2 into docs/RELIABILITY.md between `<!-- $1:begin -->`
# and `<!-- $1:end -->`.
write_section() {
    python3 - "$1" "$2" <<'PY'
import pathlib, sys
doc = pathlib.Path("docs/RELIABILITY.md")
text = doc.read_text()
begin, end = f"<!-- {sys.argv[1]}:begin -->", f"<!-- {sys.argv[1]}:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
table = pathlib.Path(sys.argv[2]).read_text()
doc.write_text(f"{head}{begin}\n{table}{end}{tail}")
PY
}

# Where and how a table was made.
run_line() {
    # With --no-run, when the rows were written (the newest of them).
    local at=now
    [[ $run == yes ]] || at=@$(stat -c %Y target/reliability/*.md | sort -n | tail -1)
    echo "Run $(date -u -d "$at" '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"),"
    echo "libvirt $(libvirtd --version | awk '{print $NF}'), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') (TCG), $build:"
    echo "\`${command[*]}\`."
    echo
}

[[ $run == no ]] || bash scripts/setup-host.sh
mkdir -p target/reliability
status=0
table="$(mktemp)"
trap 'rm -f "$table"' EXIT

if [[ $only != auth ]]; then
    # The rows in the issue's order; a row that did not run shows as such.
    rows=(kill9 libvirtd guest-changes frozen disk-full object-store damaged-at-start)
    if [[ $run == yes ]]; then
        for row in "${rows[@]}"; do rm -f "target/reliability/$row.md"; done
        cargo test --locked "${profile[@]}" --test faults -- --test-threads=1 || status=$?
    fi
    {
        run_line
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
    write_section faults "$table"
    echo "docs/RELIABILITY.md: the fault matrix written"
fi

if [[ $only != faults ]]; then
    # The schemes in the order of the doc's list; a scheme that did not run
    # shows as such.
    schemes=(alibaba-v1 alibaba-acs3 aws-sigv4-header aws-sigv4-presigned oracle-nimbula
        nova-token huawei-sdk-hmac huawei-token marketplace-bearer native-session)
    if [[ $run == yes ]]; then
        rm -f target/reliability/auth-*.md
        cargo test --locked "${profile[@]}" --test auth_matrix || status=$?
    fi
    {
        run_line
        echo "| scheme | valid | wrong secret | unknown key | expired/skewed | replayed | other tenant | missing role |"
        echo "|---|---|---|---|---|---|---|---|"
        for scheme in "${schemes[@]}"; do
            if [[ -f "target/reliability/auth-$scheme.md" ]]; then
                cat "target/reliability/auth-$scheme.md"
            else
                echo "| $scheme | **did not run** | | | | | | |"
            fi
        done
    } > "$table"
    write_section auth "$table"
    echo "docs/RELIABILITY.md: the auth matrix written"
fi
exit "$status"
