#!/usr/bin/env bash
# The `replicated` workloads (issue 17), in one run: three Caudal nodes (RF 3, a raft
# majority fsyncs before every acks=all ack) beside a three-node Apache Kafka
# (RF 3, min.insync.replicas=2) as it ships and with flush.messages=1. All brokers share
# the broker CPUs, the load generator runs on the others, so only ratios measured here
# mean anything: throughput, e2e latency at one rate, and broker CPU-seconds per GB.
#   throughput:    1 KiB messages, 1 MiB batches, acks=all, 4 partitions, flat out
#   latency-light: the same shape open-loop at $LIGHT_RATE msg/s (100), linger 1 ms:
#                  a rate every broker here keeps up with (a three-node Kafka sharing
#                  one core takes ~250 acks=all requests a second)
#   latency:       the same at $RATE msg/s (5,000): where Kafka falls behind
# Writes bench/results/<stamp>-<commit>-replicated/{<mode>-<workload>.json, summary.md}.
# Usage: bench/replicated.sh full|quick
set -euo pipefail
mode="${1:-quick}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
lg="$repo/target/release/caudal-loadgen"
bin="$repo/target/release/caudal"
[ -x "$lg" ] && [ -x "$bin" ] || { echo "replicated: build with make bench-build first" >&2; exit 1; }
case "$mode" in
full) dur=30; warmup=5 ;;
quick) dur=8; warmup=2 ;;
*) echo "usage: $0 full|quick" >&2; exit 2 ;;
esac
# Below what every broker here sustains (Kafka on one core: ~12 MB/s), so that e2e
# latency compares brokers keeping up, not queues growing.
rate="${RATE:-5000}"
light_rate="${LIGHT_RATE:-100}"
ncpu="$(nproc)"
half=$((ncpu > 1 ? ncpu / 2 : 1))
broker_cpus="${BROKER_CPUS:-$(seq -s, 0 $((half - 1)))}"
loadgen_cpus="${LOADGEN_CPUS:-$(seq -s, $((ncpu > 1 ? half : 0)) $((ncpu - 1)))}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$repo/bench/results/$stamp-$(git rev-parse --short HEAD)-replicated"
mkdir -p "$out" "$repo/target/tmp"
kafka_sh="$repo/bench/kafka/kafka.sh"
bash "$kafka_sh" libs >/dev/null

pids=""
run_dir=""
kafka_run=""
stop_all() {
    if [ -n "$kafka_run" ]; then bash "$kafka_sh" stop "$kafka_run"; kafka_run=""; fi
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    pids=""
    [ -n "$run_dir" ] && rm -rf "$run_dir"
    run_dir=""
}
trap stop_all EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_caudal() {
    run_dir="$(mktemp -d -p "$repo/target/tmp" replicated.XXXXXX)"
    local peers="" ports=() n
    for n in 1 2 3; do
        ports+=("$(free_port)")
        peers+="${peers:+,}$n@127.0.0.1:$(free_port)"
    done
    bootstrap=""
    for n in 1 2 3; do
        taskset -c "$broker_cpus" "$bin" --node-id "$n" --peers "$peers" --data-dir "$run_dir/$n" \
            --listen "127.0.0.1:${ports[$((n - 1))]}" --shards 1 --cpus "${broker_cpus%%,*}" \
            --default-replication-factor 3 >"$run_dir/$n.log" 2>&1 &
        pids+="${pids:+ }$!"
        bootstrap+="${bootstrap:+,}127.0.0.1:${ports[$((n - 1))]}"
    done
    for n in 1 2 3; do
        for _ in $(seq 300); do grep -q "caudal ready" "$run_dir/$n.log" && break; sleep 0.1; done
    done
    # Every node registered with the controller node and has the metadata back (until
    # then a node closes client connections).
    for port in "${ports[@]}"; do
        for _ in $(seq 100); do
            [ "$(kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null | grep -c ' broker .* at ')" -ge 3 ] && break
            sleep 0.2
        done
    done
}

start_kafka() { # extra server.properties lines
    # shellcheck disable=SC2086
    kafka_run="$(KAFKA_CPUS="$broker_cpus" bash "$kafka_sh" start-cluster default.replication.factor=3 "$@")"
    local BOOTSTRAP="" PIDS=""
    # shellcheck disable=SC1091
    . "$kafka_run/kafka.env"
    bootstrap="$BOOTSTRAP"
    pids="$PIDS"
}

cpu_seconds() { # summed user + system time of $pids
    local total=0 p stat
    for p in $pids; do
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        stat="${stat##*) }"
        total="$(echo "$stat" | awk -v t="$(getconf CLK_TCK)" -v a="$total" '{ printf "%.2f", a + ($12 + $13) / t }')"
    done
    echo "$total"
}

workload() { # mode name, workload name, loadgen args...
    local m="$1" w="$2"
    shift 2
    local json="$out/$m-$w.json" c0 c1
    echo "replicated: --- $m $w" >&2
    (sleep "$warmup"; cpu_seconds >"$out/.cpu0") &
    local sampler=$!
    taskset -c "$loadgen_cpus" "$lg" "$@" --bootstrap "${bootstrap%%,*}" --cores "$loadgen_cpus" \
        --topic "replicated-$w-$stamp" --partitions 4 --message-size 1024 --batch-bytes $((1 << 20)) \
        --acks all --warmup "$warmup" --duration "$dur" --json "$json" 2>"$out/$m-$w.log" \
        || echo "replicated: $m $w exited with $?" >&2
    wait "$sampler" || true
    c0="$(cat "$out/.cpu0")"
    c1="$(cpu_seconds)"
    if [ -s "$json" ]; then
        jq --argjson c "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" \
            '.broker_cpu_seconds = $c | .broker_cpu_seconds_per_gb = (if .bytes > 0 then $c / (.bytes / 1e9) else null end)' \
            "$json" >"$json.tmp" && mv "$json.tmp" "$json"
    fi
}

# A fresh cluster per workload (as bench/run.sh does per broker): after the flat-out
# run a follower may still be catching up gigabytes, which the latency runs would pay for.
suite() { # mode, then the command that starts its cluster
    local m="$1"
    shift
    "$@"; workload "$m" throughput produce --producers 2 --max-in-flight 8; stop_all
    "$@"; workload "$m" latency-light e2e --producers 2 --max-in-flight 16 --linger-ms 1 --rate "$light_rate"; stop_all
    "$@"; workload "$m" latency e2e --producers 2 --max-in-flight 16 --linger-ms 1 --rate "$rate"; stop_all
}

suite caudal start_caudal
suite kafka start_kafka
suite kafka-durable start_kafka log.flush.interval.messages=1

num() { # file, jq expression, scale: the value rounded to 2 places, or -
    jq -r "($2) as \$v | if \$v == null then \"-\" else (\$v * $3 * 100 | round / 100) end" "$1" 2>/dev/null || echo -
}
{
    echo "| broker (3 nodes, RF 3, acks=all) | throughput MB/s | broker CPU-s/GB | e2e p50 / p99 at $light_rate msg/s | e2e p50 / p99 at $rate msg/s | delivered at $rate msg/s |"
    echo "|---|---|---|---|---|---|"
    for m in caudal kafka kafka-durable; do
        t="$out/$m-throughput.json" l="$out/$m-latency-light.json" h="$out/$m-latency.json"
        printf '| %s | %s | %s | %s / %s ms | %s / %s ms | %s msg/s |\n' "$m" \
            "$(num "$t" .mb_per_sec 1)" "$(num "$t" .broker_cpu_seconds_per_gb 1)" \
            "$(num "$l" .e2e_latency_us.p50 0.001)" "$(num "$l" .e2e_latency_us.p99 0.001)" \
            "$(num "$h" .e2e_latency_us.p50 0.001)" "$(num "$h" .e2e_latency_us.p99 0.001)" \
            "$(num "$h" .msgs_per_sec 1)"
    done
} >"$out/summary.md"
cat "$out/summary.md"
echo "replicated: done: $out" >&2
