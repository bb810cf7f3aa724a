#!/usr/bin/env bash
# The suite against Caudal and Apache Kafka in one run (`make bench PEER=kafka`,
# `make bench-quick PEER=kafka`): the same loadgen flags and CPU pinning for four broker
# modes, each a results directory of its own, then Kafka's own tools against each and the
# side-by-side report in docs/benchmarks.md.
#   caudal         durable: fdatasync before every ack (its default)
#   caudal-flush   --flush-interval-ms 1000: no fsync before the ack (like Kafka's default)
#   kafka          as it ships: page cache, no fsync before the ack
#   kafka-durable  log.flush.interval.messages=1: an fsync per batch before the ack
# Usage: peer.sh full|quick
set -euo pipefail
mode="${1:-full}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash bench/kafka/kafka.sh libs >/dev/null
lg="$repo/target/release/caudal-loadgen"
export KAFKA_TOOLS=1
runs=()
suite() { # label, then env assignments
    local label="$1"
    shift
    env LABEL="$label" "$@" bash bench/run.sh "$mode"
    runs+=("bench/results/$(readlink "bench/results/latest-$label")")
}
suite caudal
limits="$repo/${runs[0]}/limits.json"
suite caudal-flush LIMITS_FROM="$limits" BROKER_ARGS="--flush-interval-ms 1000"
suite kafka LIMITS_FROM="$limits" BROKER=kafka
suite kafka-durable LIMITS_FROM="$limits" BROKER=kafka KAFKA_PROPS="log.flush.interval.messages=1"
"$lg" report "${runs[@]}" --doc docs/benchmarks.md --plot bench/latency.svg
echo "peer: done: ${runs[*]}; docs/benchmarks.md updated" >&2
