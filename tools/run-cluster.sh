#!/usr/bin/env bash
# `make run-cluster`: three Caudal nodes on 127.0.0.1 for a try-out, one shard each.
#   node N: Kafka listener 127.0.0.1:9N92 (9192, 9292, 9392), peers on 127.0.0.1:9N99,
#           data in ./data/N (DATA_DIR/N), log in DATA_DIR/N.log
# Topics are created with 3 replicas unless asked otherwise. Ctrl-C (or SIGTERM) stops
# all three cleanly.
set -euo pipefail
bin="${CAUDAL_BIN:-./target/release/caudal}"
data="${DATA_DIR:-./data}"
peers="1@127.0.0.1:9199,2@127.0.0.1:9299,3@127.0.0.1:9399"
pids=()
stopping=0
stop() {
    stopping=1
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait || true
}
trap stop INT TERM EXIT
for n in 1 2 3; do
    mkdir -p "$data/$n"
    "$bin" --node-id "$n" --peers "$peers" --data-dir "$data/$n" \
        --listen "127.0.0.1:9${n}92" --shards 1 --default-replication-factor 3 \
        >"$data/$n.log" 2>&1 &
    pids+=("$!")
done
echo "three nodes: bootstrap 127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392 (logs in $data/N.log); Ctrl-C stops them"
wait -n "${pids[@]}" || true
[ "$stopping" = 1 ] || echo "a node exited; stopping the others (see $data/N.log)" >&2
