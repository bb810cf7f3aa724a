#!/usr/bin/env bash
# Reproduces the rare all-connection stall (docs/benchmarks.md, Observations): runs the
# `small` workload against a fresh one-shard broker until progress reads 0 msg/s for three
# seconds in a row, then saves `ss -tnoi` of the connections and a gdb backtrace of both
# processes under target/tmp/stall-<time>/. At most ITERS runs (default 20, ~35 s each).
# LOAD=1 adds competing load: two busy loops at nice 5, one on each of CPUs 0 and 1 (the
# trigger of glommio's park defect is a thread that loses its CPU past its preempt timer).
# Broker and load generator run with their default timers unless BROKER_ARGS/LOADGEN_ARGS
# say otherwise. Needs `make bench-build`; run as root for gdb to attach.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/tmp/stall-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
hogs=()
stop_hogs() { [ "${#hogs[@]}" -gt 0 ] && kill "${hogs[@]}" 2>/dev/null; true; }
trap stop_hogs EXIT INT TERM
if [ "${LOAD:-0}" = 1 ]; then
    for cpu in 0 1; do
        taskset -c "$cpu" nice -n 5 bash -c 'while :; do :; done' &
        hogs+=($!)
    done
fi
for iter in $(seq "${ITERS:-20}"); do
    data="$(mktemp -d -p "$repo/target/tmp" hunt.XXXXXX)"
    port=$((21000 + RANDOM % 8000))
    taskset -c 0 ./target/release/caudal --data-dir "$data" --listen "127.0.0.1:$port" \
        --shards 1 --cpus 0 ${BROKER_ARGS:-} >"$out/broker.log" 2>&1 &
    bp=$!
    for _ in $(seq 100); do grep -q "caudal ready" "$out/broker.log" && break; sleep 0.1; done
    taskset -c 1 ./target/release/caudal-loadgen produce --topic stall --partitions 4 \
        --message-size 100 --batch-bytes 16384 --acks all --producers 8 --duration 30 \
        --stall-limit 100 --bootstrap "127.0.0.1:$port" --cores 1 ${LOADGEN_ARGS:-} \
        >"$out/loadgen.log" 2>&1 &
    lp=$!
    hung=0
    while kill -0 "$lp" 2>/dev/null; do
        sleep 1
        if [ "$(tail -3 "$out/loadgen.log" | grep -c ' 0 msg/s')" -ge 3 ]; then hung=1; break; fi
    done
    if [ "$hung" = 1 ]; then
        echo "stall in run $iter; evidence in $out"
        ss -tnoi 2>/dev/null | grep -A1 ":$port" >"$out/ss.txt"
        # Each io_uring's fdinfo lists its armed polls (PollList) and any CQ overflow.
        for pid in "$bp" "$lp"; do
            for fd in /proc/"$pid"/fd/*; do
                if [ "$(readlink "$fd")" = "anon_inode:[io_uring]" ]; then
                    echo "== pid $pid fd ${fd##*/}"; cat /proc/"$pid"/fdinfo/"${fd##*/}"
                fi
            done
            ls -l /proc/"$pid"/fd
        done >"$out/uring-fdinfo.txt" 2>&1
        gdb -batch -ex "thread apply all bt" -p "$bp" >"$out/broker-bt.txt" 2>&1
        gdb -batch -ex "thread apply all bt" -p "$lp" >"$out/loadgen-bt.txt" 2>&1
        kill "$lp" "$bp"; wait; rm -rf "$data"
        exit 0
    fi
    wait "$lp"; kill "$bp"; wait "$bp" 2>/dev/null; rm -rf "$data"
    echo "run $iter: no stall"
done
echo "no stall in ${ITERS:-20} runs"
