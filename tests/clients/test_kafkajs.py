"""kafkajs 2.2.4 (Node.js, pinned in js/package.json) against caudal: the example that
every Kafka introduction shows, and a keyed produce/consume through a consumer group.

The Node scripts live in js/; `setup.sh` installs their node_modules. Each script gets
the broker's port in $CAUDAL_PORT and exits 0 only when its own checks passed; pytest
then checks what it reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from caudal_harness import admin_client, consume_partitions, consumer, unique_name, wait_for_topic

JS_DIR = Path(__file__).resolve().parent / "js"


def run_node(script: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run js/<script> with node and the given extra environment; fail the test with
    the script's output unless it exits 0 within `timeout` seconds."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH (run `make client-deps`)")
    if not (JS_DIR / "node_modules" / "kafkajs" / "package.json").is_file():
        pytest.fail(f"kafkajs is not installed in {JS_DIR}/node_modules (run `make client-deps`)")
    full_env = dict(os.environ)
    full_env["KAFKAJS_NO_PARTITIONER_WARNING"] = "1"
    full_env["CAUDAL_DEADLINE_MS"] = str(int((timeout - 5) * 1000))  # the script gives up first
    full_env.update({k: str(v) for k, v in env.items()})
    try:
        proc = subprocess.run(
            [node, script], cwd=JS_DIR, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"node {script} did not finish within {timeout}s\nstdout:\n{err.stdout}\nstderr:\n{err.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"node {script} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch), without joining the group."""
    c = consumer(bootstrap, **{"group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_kafkajs_readme_example_receives_the_message(broker):
    """The issue's example, verbatim but for the port, on a broker with the default
    group.initial.rebalance.delay (3 s, like Kafka): 'Hello, Kafka!' reaches eachMessage
    through group 'my-group' on the auto-created 'my-topic'; the clean disconnect leaves
    the group with its offset committed past the message."""
    proc = run_node("hello.js", {"CAUDAL_PORT": broker.port}, timeout=60)
    received = [json.loads(line[len("RECEIVED "):]) for line in proc.stdout.splitlines() if line.startswith("RECEIVED ")]
    assert received == [{"topic": "my-topic", "partition": 0, "offset": "0", "value": "Hello, Kafka!"}], proc.stdout
    assert "{ value: 'Hello, Kafka!' }" in proc.stdout  # the example's own console.log
    assert proc.stdout.rstrip().endswith("DONE")

    # kafkajs commits what it processed when it disconnects.
    assert committed_offsets(broker.bootstrap, "my-group", "my-topic", 1) == {0: 1}
    broker.check_alive()


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
def test_kafkajs_admin_keyed_producer_and_group_consumer_exactly_once_in_order(broker, tmp_path):
    """kafkajs admin creates a 3-partition topic; a kafkajs producer sends 10,000 keyed
    messages (100 distinct keys, values 0..9999 in send order); a kafkajs consumer group
    reads them all. Every value arrives exactly once; each partition arrives in offset
    order 0, 1, 2, ... with its values in send order; every key stays on one partition;
    the group's committed offsets end at the high watermarks; and an independent
    confluent-kafka read of the topic sees exactly what the group saw."""
    count, partitions = 10_000, 3
    topic, group = unique_name("kafkajs-keyed"), unique_name("kafkajs-group")
    out = tmp_path / "kafkajs.json"
    run_node(
        "keyed_group.js",
        {
            "CAUDAL_PORT": broker.port,
            "TOPIC": topic,
            "GROUP": group,
            "OUT": out,
            "PARTITIONS": partitions,
            "COUNT": count,
            "KEYS": 100,
            "CHUNK": 500,
            "SETTLE_MS": 1500,
        },
        timeout=120,
    )
    report = json.loads(out.read_text())
    consumed = report["consumed"]

    # -- exactly once --------------------------------------------------------------------
    values = [int(v) for _, _, _, v in consumed]
    assert len(values) == count, f"consumed {len(values)} messages, expected {count}"
    assert sorted(values) == list(range(count)), "a value is missing or duplicated"

    # -- per-partition order -------------------------------------------------------------
    by_partition: dict[int, list] = defaultdict(list)
    for p, offset, key, value in consumed:
        by_partition[p].append((offset, key, int(value)))
    assert sorted(by_partition) == list(range(partitions)), f"partitions used: {sorted(by_partition)}"
    for p, recs in by_partition.items():
        assert [o for o, _, _ in recs] == list(range(len(recs))), f"partition {p}: offsets not 0, 1, 2, ..."
        vals = [v for _, _, v in recs]
        assert vals == sorted(vals), f"partition {p}: values not in send order"

    # -- keys are sticky to a partition ---------------------------------------------------
    key_partitions: dict[str, set] = defaultdict(set)
    for p, _, key, _ in consumed:
        key_partitions[key].add(p)
    assert len(key_partitions) == 100
    assert all(len(ps) == 1 for ps in key_partitions.values()), {k: ps for k, ps in key_partitions.items() if len(ps) > 1}

    # -- the producer's acks agree --------------------------------------------------------
    acked: dict[int, list[int]] = defaultdict(list)
    for p, base in report["acks"]:
        acked[p].append(base)
    for p, bases in acked.items():
        assert bases[0] == 0 and bases == sorted(set(bases)), f"partition {p}: acked base offsets {bases[:10]}..."
        assert bases[-1] < len(by_partition[p])

    # -- the group committed everything ---------------------------------------------------
    assert committed_offsets(broker.bootstrap, group, topic, partitions) == {
        p: len(recs) for p, recs in by_partition.items()
    }

    # -- another client reads the same log ------------------------------------------------
    wait_for_topic(admin_client(broker.bootstrap), topic, partitions)
    got = consume_partitions(broker.bootstrap, topic, range(partitions), expected=count, timeout=60, settle=0.5)
    for p in range(partitions):
        theirs = [(o, k.decode(), int(v)) for o, k, v, _ in got.get(p, [])]
        assert theirs == by_partition[p], f"partition {p}: confluent-kafka read differs from the kafkajs group"
    broker.check_alive()
