#!/bin/bash
# What many partitions cost after a load: throughput, broker memory right after it and
# after 12 s idle, and disk allocated against data held (docs/benchmarks.md, issue 15).
#   bench/many-partitions.sh BROKER_BIN LOADGEN_BIN PARTITIONS [broker args...]
# One shard on CPU 0, the loadgen on CPU 1, the Java producer's shape (16 KiB batches,
# 8 in flight, 2 producers), 10 s after 2 s of warm-up; the data is deleted after.
set -euo pipefail
bin=$1 lg=$2 parts=$3
shift 3
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$repo/target/tmp"
data="$(mktemp -d -p "$repo/target/tmp" many-partitions.XXXXXX)"
port=$((20000 + RANDOM % 20000))
mport=$((port + 1))
taskset -c 0 "$bin" --data-dir "$data" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" \
    --shards 1 --cpus 0 --retention-check-ms 1000 "$@" >"$data.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$data.log" "$data.lg.log"' EXIT
for _ in $(seq 300); do grep -q "caudal ready" "$data.log" && break; sleep 0.1; done
rss() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status"; }
taskset -c 1 "$lg" produce --bootstrap "127.0.0.1:$port" --topic t --partitions "$parts" --message-size 1024 \
    --batch-bytes 16384 --producers 2 --max-in-flight 8 --duration 10 --warmup 2 --cores 1 \
    2>"$data.lg.log" >/dev/null
grep -E "^produce:|^latency" "$data.lg.log"
echo "broker RSS after the load: $(rss) MiB"
echo "disk allocated: $(du -s --block-size=1M "$data" | cut -f1) MiB"
sleep 12
echo "broker RSS after 12 s idle: $(rss) MiB"
curl -s "http://127.0.0.1:$mport/metrics" | awk '
    /^caudal_partition_size_bytes/ { s += $2 }
    /^caudal_tail_cache_bytes/ { c += $2 }
    /^caudal_disk_reserved_ahead_bytes/ { r += $2 }
    END { printf "data held %d MiB, tail cache %d MiB, reserved ahead %d MiB\n", s / 1048576, c / 1048576, r / 1048576 }'
