#!/usr/bin/env bash
# Coverage-guided fuzzing of Caudal's parsers, bounded in time: `make fuzz`.
#
# Installs cargo-fuzz if it is missing (pinned version), builds the targets on the
# stable toolchain (`--sanitizer none`: libFuzzer's coverage instrumentation is plain
# -C flags; only the sanitizers need nightly), and runs each target for FUZZ_SECONDS,
# starting from the committed seeds and regressions and the corpus kept in
# fuzz/corpus/ from earlier runs. Prints one summary line per target and exits non-zero
# if any target crashed; the crashing input is in fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=60   seconds per target
#   FUZZ_TARGETS="frame record_batch disk_parsers raft_message peer_frame"
#   FUZZ_ARGS=""      extra libFuzzer flags (e.g. -jobs=2 -workers=2)
set -uo pipefail

cd "$(dirname "$0")"
CARGO=${CARGO:-cargo}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-frame record_batch disk_parsers raft_message peer_frame}
FUZZ_ARGS=${FUZZ_ARGS:-}
CARGO_FUZZ_VERSION=0.13.2

if ! $CARGO fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    $CARGO install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" || exit 1
fi

# Release with debug assertions and overflow checks (cargo-fuzz's default), coverage
# instrumentation, no sanitizer: works on stable, no RUSTC_BOOTSTRAP needed.
$CARGO fuzz build --sanitizer none || exit 1

mkdir -p logs
failed=()
for t in $FUZZ_TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t" "seeds/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    echo "fuzz: $t for ${FUZZ_SECONDS}s (log: fuzz/logs/$t.log)"
    # -rss_limit_mb: hostile array lengths make the decoders reserve up to ~1 TiB of
    # address space; caudal's allocator maps it MAP_NORESERVE, so it never becomes
    # resident and the default RSS limit holds. (-malloc_limit_mb needs a sanitizer's
    # malloc hooks and has no effect with --sanitizer none.)
    # shellcheck disable=SC2086
    $CARGO fuzz run --sanitizer none "$t" "${dirs[@]}" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 $FUZZ_ARGS >"logs/$t.log" 2>&1
    status=$?
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "logs/$t.log")
    echo "fuzz: $t: ${execs:-?} execs, ${rate:-?} exec/s, peak ${rss:-?} MB; last: ${last:-none}"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        if grep -q 'Test unit written' "logs/$t.log"; then
            echo "fuzz: $t CRASHED:"
            grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "logs/$t.log" | head -n 10
            echo "  minimize: (cd fuzz && cargo fuzz tmin --sanitizer none $t artifacts/$t/<file>)"
            echo "  then commit it as fuzz/regressions/$t/<what-it-broke> and fix the bug"
        else
            echo "fuzz: $t did not run (exit $status); last lines of fuzz/logs/$t.log:"
            tail -n 15 "logs/$t.log"
        fi
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: no crashes"
