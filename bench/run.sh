#!/usr/bin/env bash
# The standard broker benchmark: `make bench` (30 s workloads after a 5 s warm-up) or
# `make bench-quick` (5 s after 2 s). The warm-up runs the same load but is left out of
# the results, as in the OpenMessaging Benchmark. Measures the machine's limits (fio
# direct-I/O write and read, iperf3) in the same run, then runs the five workloads with
# caudal-loadgen (recording the broker's CPU time during each when the suite started the
# broker) and writes
# bench/results/<UTC timestamp>-<short commit>[-label]/ with each workload's JSON and
# .hgrm, limits.json, meta.json, summary.json and latency.svg.
#
# Usage: bench/run.sh full|quick
# Environment:
#   BOOTSTRAP=host:port   drive this broker instead of starting Caudal (Kafka, Redpanda...)
#   LABEL=name            label of the run (default: caudal, or "external" with BOOTSTRAP)
#   DURABILITY=text       durability mode of an external broker, for the report
#   BROKER_CPUS=list      CPUs for the broker (default: first half), LOADGEN_CPUS likewise
#   BROKER_ARGS=...       extra flags for the caudal broker (e.g. --flush-interval-ms 1000)
#   CATCHUP_BYTES=N       backlog for catch-up (default 4 GiB full, 1 GiB quick)
#   SKIP_LIMITS=1         do not run fio/iperf3 (limits.json is then empty)
set -euo pipefail

mode="${1:-full}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

lg="$repo/target/release/caudal-loadgen"
broker_bin="$repo/target/release/caudal"
[ -x "$lg" ] || { echo "bench: $lg missing (make builds it)" >&2; exit 1; }

case "$mode" in
full) dur=30; warmup=5; fio_size=2G; iperf_secs=10; catchup_default=$((4 << 30)) ;;
quick) dur=5; warmup=2; fio_size=1G; iperf_secs=3; catchup_default=$((1 << 30)) ;;
*) echo "usage: $0 full|quick" >&2; exit 2 ;;
esac
catchup_bytes="${CATCHUP_BYTES:-$catchup_default}"

# --- CPUs: broker and load generator on separate cores where there are two or more ---
ncpu="$(nproc)"
if [ "$ncpu" -ge 2 ]; then
    half=$((ncpu / 2))
    def_broker="$(seq -s, 0 $((half - 1)))"
    def_loadgen="$(seq -s, "$half" $((ncpu - 1)))"
else
    def_broker=0
    def_loadgen=0
fi
broker_cpus="${BROKER_CPUS:-$def_broker}"
loadgen_cpus="${LOADGEN_CPUS:-$def_loadgen}"
shards="$(echo "$broker_cpus" | tr ',' '\n' | grep -c .)"

# BROKER=kafka runs the suite against a fresh Apache Kafka per workload (bench/kafka),
# started like Caudal on the broker CPUs; KAFKA_PROPS are extra server.properties lines
# (KAFKA_PROPS=log.flush.interval.messages=1: an fsync per batch before the ack).
broker_kind="${BROKER:-caudal}"
case "$broker_kind" in caudal | kafka) ;; *) echo "bench: BROKER is caudal or kafka" >&2; exit 2 ;; esac
label="${LABEL:-$([ -n "${BOOTSTRAP:-}" ] && echo external || echo "$broker_kind")}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)"
name="$stamp-$commit"
[ "$label" != caudal ] && name="$name-$label"
out="$repo/bench/results/$name"
mkdir -p "$out" "$repo/target/tmp"
echo "bench: $mode run, results in bench/results/$name" >&2
echo "bench: broker CPUs $broker_cpus, loadgen CPUs $loadgen_cpus" >&2

# --- tools ------------------------------------------------------------------
need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
if [ "${#need[@]}" -gt 0 ] && [ -z "${SKIP_LIMITS:-}" ]; then
    echo "bench: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

free_port() { # a port P with P..P+n-1 free on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
n = int(sys.argv[1])
for _ in range(100):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    ok, held = True, [s]
    for k in range(1, n):
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + k)); held.append(t)
        except OSError:
            ok = False; break
    for h in held: h.close()
    if ok and p + n < 65536:
        print(p); sys.exit(0)
sys.exit(1)
EOF
}

# --- limits: raw disk and loopback, in this run ---------------------------------
limits="{}"
if [ -n "${LIMITS_FROM:-}" ] && [ -s "$LIMITS_FROM" ]; then
    # Measured once by the first suite of a comparison (bench/peer.sh).
    limits="$(cat "$LIMITS_FROM")"
elif [ -z "${SKIP_LIMITS:-}" ]; then
    fdir="$(mktemp -d -p "$repo/target/tmp" fio.XXXXXX)"
    fio_mb() { jq '[.jobs[].write.bw_bytes] | add / 1e6' "$1"; }
    fio_read_mb() { jq '[.jobs[].read.bw_bytes] | add / 1e6' "$1"; }
    echo "bench: fio direct write, 1 MiB, fdatasync each (qd 1)" >&2
    taskset -c "$broker_cpus" fio --name=fsync --directory="$fdir" --direct=1 --rw=write --bs=1M \
        --size="$fio_size" --ioengine=io_uring --iodepth=1 --fdatasync=1 \
        --output-format=json >"$out/fio-fdatasync.json"
    rm -f "$fdir"/*
    echo "bench: fio direct write, 1 MiB, qd 8, no fsync" >&2
    taskset -c "$broker_cpus" fio --name=qd8 --directory="$fdir" --direct=1 --rw=write --bs=1M \
        --size="$fio_size" --ioengine=io_uring --iodepth=8 \
        --output-format=json >"$out/fio-qd8.json"
    # Reads the file the qd 8 write just laid out (qd8.0.0, same size, so fio does not lay
    # out another); O_DIRECT, so the page cache plays no part. Bounded like the writes by
    # the size, and by --runtime in case the disk is slow.
    echo "bench: fio direct read, 1 MiB, qd 8" >&2
    taskset -c "$broker_cpus" fio --name=read --directory="$fdir" --filename=qd8.0.0 --direct=1 --rw=read --bs=1M \
        --size="$fio_size" --ioengine=io_uring --iodepth=8 --runtime=60 \
        --output-format=json >"$out/fio-read.json"
    # A durable round the size of the Java client's batch: what one partition's group
    # commit is measured against (issue 15). Time-bounded: 16 KiB rounds are slow.
    echo "bench: fio direct write, 16 KiB, fdatasync each (qd 1)" >&2
    taskset -c "$broker_cpus" fio --name=round16k --directory="$fdir" --direct=1 --rw=write --bs=16k \
        --size=256M --ioengine=io_uring --iodepth=1 --fdatasync=1 --runtime="$dur" --time_based \
        --output-format=json >"$out/fio-round16k.json"
    rm -rf "$fdir"
    echo "bench: iperf3 loopback, ${iperf_secs} s" >&2
    iport="$(free_port 1)"
    taskset -c "$broker_cpus" iperf3 -s -1 -B 127.0.0.1 -p "$iport" >/dev/null 2>&1 &
    ipid=$!
    sleep 0.5
    taskset -c "$loadgen_cpus" iperf3 -c 127.0.0.1 -p "$iport" -t "$iperf_secs" -J >"$out/iperf3.json" || true
    wait "$ipid" 2>/dev/null || true
    limits="$(jq -n \
        --argjson sync "$(fio_mb "$out/fio-fdatasync.json")" \
        --argjson qd8 "$(fio_mb "$out/fio-qd8.json")" \
        --argjson rd "$(fio_read_mb "$out/fio-read.json")" \
        --argjson lo "$(jq '.end.sum_received.bits_per_second / 8 / 1e6' "$out/iperf3.json")" \
        --argjson r16 "$(fio_mb "$out/fio-round16k.json")" \
        --argjson r16p50 "$(jq '.jobs[0] | (.write.clat_ns.percentile["50.000000"] + .sync.lat_ns.percentile["50.000000"]) / 1000' "$out/fio-round16k.json")" \
        --argjson r16p99 "$(jq '.jobs[0] | (.write.clat_ns.percentile["99.000000"] + .sync.lat_ns.percentile["99.000000"]) / 1000' "$out/fio-round16k.json")" \
        --arg size "$fio_size" \
        '{disk_write_mb_per_sec: $sync, disk_write_qd8_mb_per_sec: $qd8, disk_read_mb_per_sec: $rd,
          loopback_mb_per_sec: $lo,
          disk_round_16k_mb_per_sec: $r16, disk_round_16k_p50_us: $r16p50, disk_round_16k_p99_us: $r16p99,
          disk_round_16k_command: "fio --direct=1 --rw=write --bs=16k --ioengine=io_uring --iodepth=1 --fdatasync=1 (round = write + fdatasync; p50 and p99 add the two)",
          disk_write_command: "fio --direct=1 --rw=write --bs=1M --ioengine=io_uring --iodepth=1 --fdatasync=1",
          disk_write_qd8_command: "fio --direct=1 --rw=write --bs=1M --ioengine=io_uring --iodepth=8",
          disk_read_command: ("fio --direct=1 --rw=read --bs=1M --size=" + $size + " --ioengine=io_uring --iodepth=8 (the file the qd 8 write laid out)"),
          loopback_command: "iperf3 -c 127.0.0.1 (server and client pinned like broker and loadgen)"}')"
fi
echo "$limits" >"$out/limits.json"

# --- broker -----------------------------------------------------------------
broker_pid=""
data=""
kafka_run=""
kafka_sh="$repo/bench/kafka/kafka.sh"
stop_broker() {
    if [ -n "$kafka_run" ]; then
        if [ -n "${KEEP_KAFKA:-}" ]; then
            bash "$kafka_sh" stop "$kafka_run" --keep
        else
            bash "$kafka_sh" stop "$kafka_run"
            kafka_run=""
        fi
        broker_pid=""
        return 0
    fi
    if [ -n "$broker_pid" ]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=""
    fi
}
cleanup() {
    stop_broker
    [ -n "$data" ] && rm -rf "$data"
    true
}
trap cleanup EXIT INT TERM

# Starts Kafka on the broker CPUs, or restarts the last one on its data (KEEP_DATA=1).
start_kafka() {
    local PIDS="" BOOTSTRAP=""
    if [ -n "${KEEP_DATA:-}" ] && [ -n "$kafka_run" ]; then
        KAFKA_CPUS="$broker_cpus" bash "$kafka_sh" restart "$kafka_run" >/dev/null
    else
        # shellcheck disable=SC2086
        kafka_run="$(KAFKA_CPUS="$broker_cpus" bash "$kafka_sh" start ${KAFKA_PROPS:-})"
    fi
    # shellcheck disable=SC1091
    . "$kafka_run/kafka.env"
    bootstrap="$BOOTSTRAP"
    broker_pid="$PIDS"
}

# Starts Caudal on the broker CPUs; reuses $data if set and KEEP_DATA=1.
broker_starts=0
start_broker() {
    if [ "$broker_kind" = kafka ]; then
        start_kafka
        return 0
    fi
    broker_starts=$((broker_starts + 1))
    local log="$out/broker-$broker_starts.log"
    if [ -z "${KEEP_DATA:-}" ]; then
        [ -n "$data" ] && rm -rf "$data"
        data="$(mktemp -d -p "$repo/target/tmp" bench-data.XXXXXX)"
    fi
    local port
    port="$(free_port "$shards")"
    bootstrap="127.0.0.1:$port"
    # shellcheck disable=SC2086
    taskset -c "$broker_cpus" "$broker_bin" --data-dir "$data" --listen "$bootstrap" \
        --shards "$shards" --cpus "$broker_cpus" --retention-check-ms 1000 ${BROKER_ARGS:-} \
        >>"$log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 300); do
        grep -q "caudal ready" "$log" 2>/dev/null && return 0
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: the broker did not start; see $log" >&2
    exit 1
}

external="${BOOTSTRAP:-}"
fresh_broker() { # a fresh broker (empty data dir) per workload, unless external
    if [ -n "$external" ]; then
        bootstrap="$external"
    else
        stop_broker
        start_broker
    fi
}

# CPU time (user + system, seconds) the broker process has used so far: fields 14 and 15
# of /proc/<pid>/stat, which sum over all its threads (io_uring workers included). The
# fields are counted after the ")" that ends the command name.
clk_tck="$(getconf CLK_TCK)"
broker_cpu() {
    [ -n "$broker_pid" ] && [ -r "/proc/$broker_pid/stat" ] || return 1
    local stat
    stat="$(cat "/proc/$broker_pid/stat")" || return 1
    stat="${stat##*) }"
    # After ")": state(3) ppid(4) ... utime(14) stime(15), i.e. words 12 and 13 here.
    echo "$stat" | awk -v t="$clk_tck" '{ printf "%.2f\n", ($12 + $13) / t }'
}

# What a workload's broker CPU is divided by: GB (10^9 bytes) of message values produced,
# or, where the broker mainly serves reads, delivered to consumers (all groups together).
cpu_basis() {
    case "$1" in
    catch-up | fan-out) echo delivered ;;
    *) echo produced ;;
    esac
}

lgrun() { # workload name, then loadgen arguments
    local w="$1"
    shift
    echo "bench: --- $w" >&2
    local cpu0="" cpu1="" cpu=null warm=0 a prev="" sampler=""
    for a in "$@"; do [ "$prev" = --warmup ] && warm="$a"; prev="$a"; done
    # The broker's CPU is read when the warm-up ends, like the loadgen's counters.
    rm -f "$out/.cpu0"
    if [ -z "$external" ]; then
        (sleep "$warm"; broker_cpu >"$out/.cpu0" || true) &
        sampler=$!
    fi
    taskset -c "$loadgen_cpus" "$lg" "$@" --bootstrap "$bootstrap" --cores "$loadgen_cpus" \
        --json "$out/$w.json" 2> >(tee "$out/$w.log" >&2) || echo "bench: $w exited with $?" >&2
    if [ -z "$external" ]; then
        wait "$sampler" 2>/dev/null || true
        cpu0="$(cat "$out/.cpu0" 2>/dev/null || true)"
        cpu1="$(broker_cpu || true)"
        rm -f "$out/.cpu0"
    fi
    if [ ! -s "$out/$w.json" ]; then return 0; fi
    # Broker CPU while this workload's loadgen ran; null when the broker is not ours
    # (BOOTSTRAP=external) or its /proc entry could not be read.
    if [ -n "$cpu0" ] && [ -n "$cpu1" ]; then
        cpu="$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f\n", b - a }')"
    fi
    jq --argjson cpu "$cpu" --arg basis "$(cpu_basis "$w")" '
        (if $basis == "delivered" then (.consumed_bytes // .bytes) else .bytes end) as $b
        | .broker_cpu_seconds = $cpu
        | .broker_cpu_gb_basis = (if $cpu == null then null else $basis end)
        | .broker_cpu_seconds_per_gb =
            (if $cpu == null or ($b // 0) <= 0 then null else $cpu / ($b / 1e9) end)' \
        "$out/$w.json" >"$out/$w.json.tmp" && mv "$out/$w.json.tmp" "$out/$w.json"
}

parts=$((shards > 4 ? shards : 4))
# Flat out, a 30 s run writes ~50 GB: more than this VM's free disk. The throughput topic
# keeps at most RETAIN_BYTES per partition (plus the active segment); old segments are
# deleted while the load runs (the suite's broker checks retention every second). The
# other workloads write less than the disk holds and keep everything: deleting segments
# stalls this VM's disk (ext4 with `discard`) and would show in their latencies.
retain="${RETAIN_BYTES:-$((2 << 30))}"
retention=(--topic-config "retention.bytes=$retain")
run_id="$stamp"
durability="${DURABILITY:-}"
if [ "$broker_kind" = kafka ]; then
    case "${KAFKA_PROPS:-}" in
    *flush.interval.messages=1*) durability="durable: fsync per batch before the ack (Kafka with flush.messages=1)" ;;
    *) durability="page cache, not durable (Kafka as it ships: no fsync before the ack)" ;;
    esac
elif [ -z "$external" ]; then
    case "${BROKER_ARGS:-}" in
    *flush-interval-ms*) durability="no fsync before ack (flush interval; Kafka-like)" ;;
    *) durability="durable: fdatasync before every ack (group commit)" ;;
    esac
fi

# 1. throughput: 1 KiB, batches up to 1 MiB, acks=all, flat out.
fresh_broker
lgrun throughput produce --topic "bench-throughput-$run_id" --partitions "$parts" "${retention[@]}" \
    --message-size 1024 --batch-bytes $((1 << 20)) --acks all --producers 2 \
    --max-in-flight 8 --warmup "$warmup" --duration "$dur"
tput="$(jq -r '.msgs_per_sec | floor' "$out/throughput.json" 2>/dev/null || echo 0)"
[ "$tput" -gt 0 ] 2>/dev/null || tput=100000

# 2. latency: e2e at half the measured throughput. Batches wait at most 1 ms for
#    messages (linger.ms=1, as the OpenMessaging Benchmark's Kafka latency runs): the
#    linger is part of every e2e latency, so 5 ms would put the median above 3 ms.
fresh_broker
lgrun latency e2e --topic "bench-latency-$run_id" --partitions "$parts" \
    --message-size 1024 --batch-bytes $((1 << 20)) --linger-ms 1 --acks all --producers 2 \
    --max-in-flight 16 --rate $((tput / 2)) --warmup "$warmup" --duration "$dur"
# The disk's own share of that latency: fio writing what the broker wrote, at its rate
# (one job per partition, 1 MiB writes, an fdatasync after each), broker stopped. Issue
# 15's target is e2e p99 ≤ 2 × this round's p99 (write p99 + fdatasync p99, summed as
# for the 16 KiB round). Its MB/s is the latency workload's, so each run measures its own.
lat_mb="$(jq -r '.mb_per_sec // 0' "$out/latency.json" 2>/dev/null || echo 0)"
if [ -z "${SKIP_LIMITS:-}" ] && [ -z "$external" ] && awk -v m="$lat_mb" 'BEGIN { exit !(m > 0) }'; then
    stop_broker
    fdir="$(mktemp -d -p "$repo/target/tmp" fio.XXXXXX)"
    per_job="$(awk -v m="$lat_mb" -v p="$parts" 'BEGIN { printf "%d", m * 1e6 / p }')"
    echo "bench: fio at the latency workload's rate: $parts files, $lat_mb MB/s, 1 MiB writes, fdatasync each" >&2
    taskset -c "$broker_cpus" fio --name=atrate --directory="$fdir" --direct=1 --rw=write --bs=1M \
        --size=1G --numjobs="$parts" --rate="$per_job" --ioengine=io_uring --iodepth=1 --fdatasync=1 \
        --runtime="$dur" --time_based --output-format=json >"$out/fio-at-latency-rate.json" || true
    rm -rf "$fdir"
    if [ -s "$out/fio-at-latency-rate.json" ]; then
        jq --arg cmd "fio --direct=1 --rw=write --bs=1M --numjobs=$parts --rate=$per_job --ioengine=io_uring --iodepth=1 --fdatasync=1 (round = write + fdatasync; p99 = the worst job's write p99 + fdatasync p99)" \
            '{mb_per_sec: ([.jobs[].write.bw_bytes] | add / 1e6),
              write_p99_us: ([.jobs[].write.clat_ns.percentile["99.000000"]] | max / 1000),
              sync_p99_us: ([.jobs[].sync.lat_ns.percentile["99.000000"]] | max / 1000),
              round_p99_us: ([.jobs[] | .write.clat_ns.percentile["99.000000"] + .sync.lat_ns.percentile["99.000000"]] | max / 1000),
              command: $cmd}' \
            "$out/fio-at-latency-rate.json" >"$out/disk-at-latency-rate.json"
    fi
fi

# 3. small: 100 B messages, 16 KiB batches, 8 producers, flat out.
fresh_broker
lgrun small produce --topic "bench-small-$run_id" --partitions "$parts" \
    --message-size 100 --batch-bytes 16384 --acks all --producers 8 --warmup "$warmup" --duration "$dur"

# 3b. one partition in the Java producer's shape (16 KiB batches, 5 requests in flight,
#     acks=all), flat out: group commit has only the five requests in flight to cover;
#     compared with fio's 16 KiB write + fdatasync round above (issue 15).
fresh_broker
lgrun one-partition produce --topic "bench-one-partition-$run_id" --partitions 1 \
    --message-size 1024 --batch-bytes 16384 --acks all --producers 1 --max-in-flight 5 \
    --warmup "$warmup" --duration "$dur"

# 4. catch-up: a backlog larger than the tail cache, read from the start. Caudal is
#    restarted in between, so nothing of the backlog is in its tail cache.
fresh_broker
backlog=$((catchup_bytes / 1024))
lgrun catch-up-load produce --topic "bench-catchup-$run_id" --partitions "$parts" \
    --message-size 1024 --batch-bytes $((1 << 20)) --acks all --producers 2 --messages "$backlog"
if [ -z "$external" ]; then
    KEEP_KAFKA=1 stop_broker
    # Kafka reads through the page cache: empty it (as root) so that, like Caudal's
    # O_DIRECT reads after a restart, none of the backlog is in memory.
    if [ "$broker_kind" = kafka ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "bench: could not drop the page cache" >&2
    fi
    KEEP_DATA=1 start_broker
fi
lgrun catch-up consume --topic "bench-catchup-$run_id" --from earliest --messages "$backlog" \
    --duration $((dur * 20))

# 5. fan-out: one producer, four consumer groups, at a quarter of the throughput so
#    the four groups together read what the throughput workload wrote.
fresh_broker
groups_flag=()
if "$lg" probe --bootstrap "$bootstrap" | grep -q '^JoinGroup'; then
    groups_flag=(--group "bench-fanout-$run_id")
    fanout_mode="consumer groups"
else
    fanout_mode="manual assignment (the broker has no consumer groups)"
fi
lgrun fan-out e2e --topic "bench-fanout-$run_id" --partitions "$parts" \
    --message-size 1024 --batch-bytes $((1 << 20)) --linger-ms 5 --acks all --producers 1 \
    --max-in-flight 16 --rate $((tput / 4)) --groups 4 "${groups_flag[@]}" --warmup "$warmup" \
    --duration "$dur"
stop_broker

# 6. client defaults: what a user's first producer sees. Open-loop e2e at a ladder of
#    rates in the Java producer's default shape (batch.size 16 KiB, linger.ms 5,
#    max.in.flight 5, acks=all) and librdkafka's (batch.size 1,000,000, linger.ms 5,
#    many requests in flight); the report gives the highest rate whose e2e p99 stays
#    within 10 ms ("max rate at SLO", as the OpenMessaging Benchmark reports). A step
#    that misses the SLO, or delivers under 95 % of its rate, ends its ladder.
ladder_rates="${LADDER_RATES:-5000 10000 25000 50000 100000 200000 400000 800000}"
ladder_secs=$([ "$mode" = quick ] && echo 3 || echo 10)
ladder() { # name, then loadgen arguments
    local name="$1" rate p99 got
    shift
    fresh_broker
    for rate in $ladder_rates; do
        lgrun "$name-$rate" e2e --topic "bench-$name-$rate-$run_id" --partitions "$parts" \
            --message-size 1024 --acks all --producers 1 --rate "$rate" --warmup 1 \
            --duration "$ladder_secs" "$@"
        [ -s "$out/$name-$rate.json" ] || break
        p99="$(jq '.e2e_latency_us.p99 // 1e12' "$out/$name-$rate.json")"
        got="$(jq '.msgs_per_sec // 0' "$out/$name-$rate.json")"
        if ! awk -v p="$p99" -v g="$got" -v r="$rate" 'BEGIN { exit !(p <= 10000 && g >= 0.95 * r) }'; then
            break
        fi
    done
    stop_broker
}
ladder client-java --batch-bytes 16384 --linger-ms 5 --max-in-flight 5
ladder client-librdkafka --batch-bytes 1000000 --linger-ms 5 --max-in-flight 100

# 7. partitions: the Java client's shape over many partitions (each request carries a
#    batch for as many of its connection's partitions as fit in 1 MiB), durable per the
#    broker mode: throughput and latency, and what the partitions cost in disk
#    (allocated, not apparent) and broker memory at the end, and again after 12 s
#    without load (the broker hands freed buffers back once 5 s pass quietly).
many=$([ "$mode" = quick ] && echo 1000 || echo 4000)
fresh_broker
# Every partition first takes three 8 KiB batches, unmeasured, so the run measures the
# steady state and not each fresh segment's first writes. Kafka pays those heavily here:
# its first index entry per segment writes into a fresh, sparse, memory-mapped 10 MB
# index file, and for 1,000 partitions that stalled produce for ~20 s (0.7–1.3 MB/s over
# a 10 s run; steady state after it: 150 MB/s). Caudal creates its files with the topic.
echo "bench: --- partitions: three batches into each of $many partitions first (not measured)" >&2
taskset -c "$loadgen_cpus" "$lg" produce --topic "bench-partitions-$run_id" --partitions "$many" \
    --message-size 1024 --batch-bytes 8400 --producers 1 --messages $((many * 24)) --duration 300 \
    --bootstrap "$bootstrap" --cores "$loadgen_cpus" >"$out/partitions-prime.log" 2>&1 ||
    echo "bench: priming the partitions exited with $?" >&2
lgrun partitions produce --topic "bench-partitions-$run_id" --partitions "$many" \
    --message-size 1024 --batch-bytes 16384 --producers 2 --max-in-flight 8 \
    --warmup "$warmup" --duration "$dur"
if [ -s "$out/partitions.json" ]; then
    alloc=null
    rss=null
    rss_idle=null
    if [ "$broker_kind" != kafka ] && [ -z "$external" ] && [ -n "$data" ]; then
        alloc="$(du -s --block-size=1 "$data" | cut -f1)"
    fi
    broker_rss() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/${broker_pid%% *}/status" 2>/dev/null || true; }
    if [ -n "$broker_pid" ] && [ -z "$external" ]; then
        rss="$(broker_rss)"
        rss="${rss:-null}"
        sleep 12
        rss_idle="$(broker_rss)"
        rss_idle="${rss_idle:-null}"
    fi
    jq --argjson n "$many" --argjson a "$alloc" --argjson r "$rss" --argjson i "$rss_idle" \
        '.partitions_total = $n | .disk_allocated_bytes = $a | .broker_rss_bytes = $r | .broker_rss_idle_bytes = $i' \
        "$out/partitions.json" >"$out/partitions.json.tmp" && mv "$out/partitions.json.tmp" "$out/partitions.json"
fi
stop_broker

# 8. Kafka's own measuring tools (KAFKA_TOOLS=1, as bench/peer.sh runs it), on a fresh
#    broker, same shape as the throughput and latency workloads: what Kafka users already
#    trust, and a check that caudal-loadgen measures what they do.
if [ "${KAFKA_TOOLS:-}" = 1 ]; then
    n=$([ "$mode" = quick ] && echo 1000000 || echo 5000000)
    fresh_broker
    tool() { taskset -c "$loadgen_cpus" bash "$repo/bench/kafka/kafka.sh" tool "$@"; }
    for t in "kt-$run_id" "kt-e2e-$run_id"; do
        tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create \
            --topic "$t" --partitions "$([ "$t" = "kt-$run_id" ] && echo "$parts" || echo 1)" \
            >>"$out/kafka-tools.log" 2>&1 || echo "bench: creating $t failed" >&2
    done
    echo "bench: --- kafka tools: ProducerPerformance, $n x 1 KiB" >&2
    pp="$(tool org.apache.kafka.tools.ProducerPerformance --topic "kt-$run_id" --num-records "$n" \
        --record-size 1024 --throughput -1 --producer-props bootstrap.servers="$bootstrap" \
        acks=all batch.size=1048576 linger.ms=5 2>"$out/kafka-tools.log" | tail -1)" || true
    echo "bench: --- kafka tools: ConsumerPerformance" >&2
    cp_line="$(tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" \
        --topic "kt-$run_id" --messages "$n" --timeout 60000 2>>"$out/kafka-tools.log" | tail -1)" || true
    echo "bench: --- kafka tools: EndToEndLatency, 10000 x 1 KiB, acks=all" >&2
    e2e="$(tool org.apache.kafka.tools.EndToEndLatency "$bootstrap" "kt-e2e-$run_id" 10000 all 1024 \
        2>>"$out/kafka-tools.log")" || true
    stop_broker
    python3 - "$pp" "$cp_line" "$e2e" "$n" >"$out/kafka-tools.json" <<'PY'
import json, re, sys
pp, cp, e2e, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {"records": n, "producer_line": pp.strip(), "consumer_line": cp.strip()}
m = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", pp)
if m:
    out["producer"] = dict(zip(["records_per_sec", "mb_per_sec", "avg_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms"], map(float, m.groups())))
f = [x.strip() for x in cp.split(",")]
if len(f) >= 6:
    try:
        out["consumer"] = {"mb_per_sec": float(f[3]), "records_per_sec": float(f[5])}
    except ValueError:
        pass
avg = re.search(r"Avg latency: ([\d.]+) ms", e2e)
pct = re.search(r"50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", e2e)
if avg and pct:
    out["end_to_end"] = {"avg_ms": float(avg.group(1)), "p50_ms": float(pct.group(1)), "p99_ms": float(pct.group(2)), "p999_ms": float(pct.group(3))}
print(json.dumps(out, indent=2))
PY
fi

# 6. idle: the broker's own CPU with no client, with the wake guard (default) and without
#    it (`--wake-guard-us 0`, only to show what the guard costs; docs/architecture.md).
# Nanoseconds on CPU summed over the broker's threads (schedstat: finer than /proc/stat's
# 10 ms ticks, which an idle broker barely reaches).
broker_cpu_ns() {
    cat /proc/"$broker_pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}
idle_cpu_percent() { # seconds to watch; prints the broker's CPU as % of one core
    local a b
    sleep 1
    a="$(broker_cpu_ns)"
    sleep "$1"
    b="$(broker_cpu_ns)"
    awk -v a="$a" -v b="$b" -v s="$1" 'BEGIN { printf "%.3f\n", (b - a) / 1e7 / s }'
}
if [ -z "$external" ] && [ "$broker_kind" = caudal ]; then
    idle_s=$([ "$mode" = quick ] && echo 10 || echo 30)
    echo "bench: --- idle ($idle_s s with the wake guard, $idle_s s without)" >&2
    saved_args="${BROKER_ARGS:-}"
    # Both runs set the guard themselves, whatever BROKER_ARGS says of it.
    base_args="$(sed 's/--wake-guard-us [0-9]*//' <<<"$saved_args")"
    BROKER_ARGS="$base_args" fresh_broker
    on="$(idle_cpu_percent "$idle_s" || echo null)"
    stop_broker
    BROKER_ARGS="$base_args --wake-guard-us 0" start_broker
    off="$(idle_cpu_percent "$idle_s" || echo null)"
    stop_broker
    BROKER_ARGS="$saved_args"
    jq -n --argjson s "$idle_s" --argjson on "$on" --argjson off "$off" --argjson us 10000 \
        '{"seconds": $s, "cpu_percent": $on, "guard_off_cpu_percent": $off, "wake_guard_us": $us}' \
        >"$out/idle.json"
fi

# --- metadata, summary, plot, links ---------------------------------------------
jq -n --arg lbl "$label" --arg mode "$mode" --arg commit "$commit" --arg stamp "$stamp" \
    --arg bootstrap "${external:-$([ "$broker_kind" = kafka ] && echo "Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$repo/bench/kafka/pom.xml") (KRaft, one node, fresh per workload, 1 GiB heap)" || echo "caudal (fresh per workload)")}" --arg durability "$durability" \
    --arg broker_cpus "$broker_cpus" --arg loadgen_cpus "$loadgen_cpus" \
    --arg cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" --arg ncpu "$ncpu" \
    --arg kernel "$(uname -r)" --arg fanout "$fanout_mode" --arg broker_args "${BROKER_ARGS:-}" \
    --argjson catchup "$catchup_bytes" --argjson dur "$dur" \
    '{"label": $lbl, "mode": $mode, "commit": $commit, "utc": $stamp, "bootstrap": $bootstrap,
      "durability": $durability, "broker_cpus": $broker_cpus, "loadgen_cpus": $loadgen_cpus,
      "cpu": $cpu, "cpus": ($ncpu | tonumber), "kernel": $kernel, "fan_out_consumers": $fanout,
      "broker_args": $broker_args, "catch_up_bytes": $catchup, "workload_seconds": $dur}' >"$out/meta.json"
"$lg" summarize "$out"
ln -sfn "$name" "$repo/bench/results/latest"
ln -sfn "$name" "$repo/bench/results/latest-$label"
echo "bench: done: bench/results/$name (summary.json, latency.svg); make bench-report updates docs" >&2
