#!/usr/bin/env bash
# Bounded fuzzing for CI: builds the cargo-fuzz targets in fuzz/, replays the saved
# reproducers in fuzz/regressions/, then runs every target for FUZZ_SECONDS starting from its
# committed seeds in fuzz/seeds/. Exits non-zero if any input crashes, panics, times out or
# allocates past the limits; the failing inputs are in fuzz/artifacts/<target>/.
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TARGETS   space-separated subset of targets (default: all)
#   FUZZ_NICE      niceness of the fuzzing processes (default 10; the machine is shared)
#
# `scripts/fuzz-ci.sh --build-only` builds the targets and stops: scripts/test.sh runs that at
# the lowest priority while the end-to-end tests run (they leave the CPU idle much of the time,
# and niceness 19 keeps the build from slowing them), so the fuzz step after them starts at once.
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags
# (sanitizer, coverage instrumentation). cargo-fuzz is installed if missing. Fuzz builds go to
# fuzz/target (a separate workspace), never to the main target dir; a rebuild with nothing
# changed takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/fuzz"

seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-"request_decode request_decode_keyed record_batch record_batch_crc log_recovery security_handshakes"}
niceness=${FUZZ_NICE:-10}
# No panic, no allocation above 512 MiB at once or 2 GiB resident, no input slower than 10 s.
limits=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10)
export RUSTC_BOOTSTRAP=1

start=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-ci: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

echo "fuzz-ci: building fuzz targets"
cargo fuzz build
built=$(date +%s)
if [[ ${1:-} == --build-only ]]; then
    echo "fuzz-ci: built in $((built - start))s"
    exit 0
fi

# The seeds of a target (the CRC-fixing variant shares record_batch's).
seeds_of() {
    case "$1" in
        record_batch_crc) echo seeds/record_batch ;;
        *) echo "seeds/$1" ;;
    esac
}

failed=()
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for t in $targets; do
    shopt -s nullglob
    regressions=(regressions/"$t"-*)
    shopt -u nullglob
    if ((${#regressions[@]})); then
        echo "fuzz-ci: $t: replaying ${#regressions[@]} saved reproducer(s)"
        if ! nice -n "$niceness" cargo fuzz run "$t" "${regressions[@]}" -- "${limits[@]}" \
            >"$work/$t-regressions.log" 2>&1; then
            echo "fuzz-ci: $t: a saved reproducer still fails:"
            grep -E "ERROR|panicked|SUMMARY|Running: " "$work/$t-regressions.log" | head -n 20 || true
            failed+=("$t (regressions)")
        fi
    fi

    echo "fuzz-ci: $t: fuzzing for ${seconds}s from $(seeds_of "$t")"
    mkdir -p "$work/corpus-$t"
    if ! nice -n "$niceness" cargo fuzz run "$t" "$work/corpus-$t" "$(seeds_of "$t")" -- \
        "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        echo "fuzz-ci: $t: FAILED"
        grep -E "ERROR|panicked|SUMMARY|Test unit written|Base64" "$work/$t.log" | head -n 20 || true
        failed+=("$t")
    else
        grep -E "^#[0-9]+[[:space:]]+DONE" "$work/$t.log" | tail -n 1 || true
    fi
done

end=$(date +%s)
echo "fuzz-ci: build $((built - start))s, total $((end - start))s"
if ((${#failed[@]})); then
    echo "fuzz-ci: failures: ${failed[*]}"
    echo "fuzz-ci: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>"
    exit 1
fi
echo "fuzz-ci: all targets passed"
