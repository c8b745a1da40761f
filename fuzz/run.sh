#!/usr/bin/env bash
# fuzz/run.sh [SECONDS_PER_TARGET]: builds vmshot's fuzz targets for AFL++ and
# runs each for SECONDS_PER_TARGET (default 60) from its seed corpus
# (fuzz/corpus/<target>), one after another at nice 19. Prints a table of
# executions, speed, coverage edges, crashes and hangs per target and writes
# it between the fuzz markers of docs/RELIABILITY.md. Every crash is copied to
# fuzz/regressions/<target>/, which `cargo test --lib` replays; the script
# then fails. Run by scripts/test.sh with a short budget.
#
# The fuzzer is AFL++ through cargo-afl, on the stable toolchain: without
# AFL++'s LLVM plugins (they must match rustc's own LLVM, which no Debian
# package does), cargo-afl instruments with LLVM's sanitizer-coverage pass,
# which stable rustc runs (`-C passes=sancov-module`). libFuzzer through
# cargo-fuzz needs nightly flags (-Z sanitizer, -Z build-std's kin).
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
# Pinned: cargo-afl builds its own AFL++ (vendored in the crate) and the
# `afl` runtime crate in Cargo.toml must speak the same version.
CARGO_AFL_VERSION=0.18.2
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo afl --version 2>/dev/null | grep -q "$CARGO_AFL_VERSION"; then
    echo "fuzz: installing cargo-afl $CARGO_AFL_VERSION (builds AFL++ with make and gcc)" >&2
    nice -n 19 cargo install cargo-afl --version "=$CARGO_AFL_VERSION" --locked
fi
# cargo-afl's install builds AFL++ into ~/.local/share/afl.rs; a failed or
# older build is redone here.
if ! find "${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs" -name afl-fuzz -type f 2>/dev/null | grep -q .; then
    nice -n 19 cargo afl config --build --force
fi

# FUZZ_TARGET_DIR: where the instrumented build goes (default fuzz/target).
# CI keeps it outside its fresh clone, so that a run on the same machine
# rebuilds only vmshot, not its ~300 dependencies (30 min on a busy host).
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# Not --locked: fuzz/Cargo.lock pins every version it has (the daemon's
# own, copied from ../Cargo.lock), and a dependency the daemon gains later
# is added rather than failing the build.
# FUZZ_PROFILE=dev: an unoptimised build, several times quicker to make and
# slower to run; for a short run (CI's), where building is most of the cost.
if [ "${FUZZ_PROFILE:-release}" = dev ]; then
    nice -n 19 cargo afl build
    bin=$CARGO_TARGET_DIR/debug/vmshot-fuzz
else
    nice -n 19 cargo afl build --release
    bin=$CARGO_TARGET_DIR/release/vmshot-fuzz
fi
afl=$CARGO_TARGET_DIR/afl
if ! git diff --quiet -- Cargo.lock 2>/dev/null; then
    echo "fuzz: Cargo.lock gained entries: commit fuzz/Cargo.lock" >&2
fi

# One target: AFL++ for $secs from its corpus; its row of the table in
# $afl/<target>/row, its crashes copied to regressions/<target>/.
fuzz_one() {
    local target=$1 out=$afl/$1
    rm -rf "$out"
    mkdir -p "$out"
    echo "fuzz: $target for ${secs}s" >&2
    # No UI, no CPU binding (CI shares the cores), no core-dump setup (a
    # sandbox cannot change /proc/sys/kernel/core_pattern); 2 s per input.
    if ! AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 \
        AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1 \
        nice -n 19 cargo afl fuzz -V "$secs" -t 2000 -i "corpus/$target" -o "$out" \
        -- "$bin" "$target" >"$out/log" 2>&1; then
        echo "fuzz: afl-fuzz failed on $target:" >&2
        tail -20 "$out/log" >&2
        return 1
    fi
    local stats=$out/default/fuzzer_stats
    field() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    echo "$target $(field run_time) $(field execs_done) $(field execs_per_sec) $(field edges_found) $(field saved_crashes) $(field saved_hangs)" >"$out/row"
    for crash in "$out"/default/crashes/id:*; do
        [ -e "$crash" ] || continue
        mkdir -p "regressions/$target"
        cp "$crash" "regressions/$target/crash-$(sha1sum "$crash" | cut -c1-16)"
    done
}
export -f fuzz_one
export secs bin afl

# FUZZ_TARGETS: some targets only (default: all, and only then is the table
# written into the docs, unless FUZZ_DOC=0). FUZZ_JOBS targets at a time (default 1: CI shares
# two cores with others).
targets=${FUZZ_TARGETS:-$(ls corpus)}
printf '%s\n' $targets | xargs -P "${FUZZ_JOBS:-1}" -I{} bash -c 'fuzz_one {}'
results=()
crashes_total=0
for target in $targets; do
    row=$afl/$target/row
    results+=("$(cat "$row")")
    crashes_total=$((crashes_total + $(cut -d' ' -f6 "$row")))
done

table() {
    echo "| target | seconds | executions | exec/s | edges | crashes | hangs |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for r in "${results[@]}"; do
        # shellcheck disable=SC2086
        set -- $r
        echo "| $1 | $2 | $3 | $4 | $5 | $6 | $7 |"
    done
}
report=$(
    echo "\`${FUZZ_TARGETS:+FUZZ_TARGETS=\"$FUZZ_TARGETS\" }${FUZZ_PROFILE:+FUZZ_PROFILE=$FUZZ_PROFILE }FUZZ_JOBS=${FUZZ_JOBS:-1} bash fuzz/run.sh $secs\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(cargo afl --version 2>/dev/null | head -1):"
    echo
    table
)
echo "$report"

# The table goes between the markers; the rest of the file is left alone.
doc=../docs/RELIABILITY.md
if [ -z "${FUZZ_TARGETS:-}" ] && [ "${FUZZ_DOC:-1}" = 1 ] && grep -q '<!-- fuzz:begin -->' "$doc" && grep -q '<!-- fuzz:end -->' "$doc"; then
    REPORT="$report" awk '
        /<!-- fuzz:begin -->/ { print; print ""; print ENVIRON["REPORT"]; print ""; skip = 1; next }
        /<!-- fuzz:end -->/ { skip = 0 }
        !skip { print }
    ' "$doc" >"$doc.new" && mv "$doc.new" "$doc"
fi

if [ "$crashes_total" != 0 ]; then
    echo "fuzz: $crashes_total crash(es), copied to fuzz/regressions/: fix them, keep the inputs" >&2
    exit 1
fi
