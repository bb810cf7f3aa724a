"""Committed offsets are durable: a group commits, the broker stops (SIGTERM, or
SIGKILL with no chance to flush anything) and starts again on the same data dir, and a
new member of the group resumes exactly at the committed offsets."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from caudal_harness import (
    assert_contiguous_from,
    create_topic,
    describe_group,
    group_committed,
    high_watermarks,
    list_groups,
    produce,
    unique_name,
    wait_until,
)
from confluent_kafka import ConsumerGroupState

PARTITIONS = 4
BEFORE = 400  # messages produced before the restart, message i to partition i % 4
AFTER = 40  # and after
# What the first member processes and commits on partition p before the restart.
COMMIT_AT = {p: 20 + 7 * p for p in range(PARTITIONS)}


def group_member(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            # A group with no committed offset would start at the beginning: losing the
            # commits would show as messages below the committed offsets.
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_group_resumes_at_committed_offsets_after_broker_restart(broker, stop):
    """A member subscribes, processes partition p's messages up to COMMIT_AT[p], commits
    exactly those positions (with metadata) synchronously and leaves. The broker
    restarts (SIGTERM or SIGKILL). Then OffsetFetch returns the same offsets and
    metadata, ListGroups/DescribeGroups show the group (Empty), and a new member of the
    group (auto.offset.reset=earliest) receives on each partition exactly the offsets
    COMMIT_AT[p] .. high watermark, including messages produced after the restart, and
    nothing below the committed offsets."""
    topic, group = unique_name("resume"), unique_name("resume-group")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, [(i % PARTITIONS, b"k%d" % i, b"v%d" % i) for i in range(BEFORE)])

    # -- first member: process up to COMMIT_AT, commit, leave -----------------------------------
    c = group_member(broker.bootstrap, group)
    seen: dict[int, list[int]] = defaultdict(list)
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while any(len(seen[p]) < COMMIT_AT[p] for p in range(PARTITIONS)):
            assert time.monotonic() < deadline, f"first member got only {dict(seen)}"
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error() is None and len(seen[m.partition()]) < COMMIT_AT[m.partition()]:
                    seen[m.partition()].append(m.offset())  # "processing"
        for p in range(PARTITIONS):
            assert_contiguous_from(seen[p], 0, f"first member, partition {p}")
        result = c.commit(
            offsets=[TopicPartition(topic, p, COMMIT_AT[p], metadata=f"meta-{p}") for p in range(PARTITIONS)],
            asynchronous=False,
        )
        assert all(tp.error is None for tp in result), result
    finally:
        c.close()
    assert group_committed(broker.bootstrap, group, topic, range(PARTITIONS)) == COMMIT_AT

    # -- restart ------------------------------------------------------------------------------
    code = broker.restart(kill=(stop == "sigkill"))
    assert code == (-9 if stop == "sigkill" else 0), f"caudal stopped with {code}"

    # -- the commits survived ---------------------------------------------------------------------
    probe = group_member(broker.bootstrap, group)
    try:
        tps = probe.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    finally:
        probe.close()
    assert {tp.partition: tp.offset for tp in tps} == COMMIT_AT
    assert {tp.partition: tp.metadata for tp in tps} == {p: f"meta-{p}" for p in range(PARTITIONS)}
    assert group in list_groups(broker.bootstrap), "the group is not listed after the restart"
    desc = describe_group(broker.bootstrap, group)
    assert desc.state == ConsumerGroupState.EMPTY and not desc.members, desc

    produce(broker.bootstrap, topic, [(i % PARTITIONS, b"k%d" % i, b"v%d" % i) for i in range(BEFORE, BEFORE + AFTER)])
    hw = high_watermarks(broker.bootstrap, topic, range(PARTITIONS))
    assert hw == {p: (BEFORE + AFTER) // PARTITIONS for p in range(PARTITIONS)}

    # -- a new member resumes at the committed offsets ------------------------------------------
    expected = sum(hw[p] - COMMIT_AT[p] for p in range(PARTITIONS))
    got: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    c = group_member(broker.bootstrap, group)
    try:
        c.subscribe([topic])
        wait_until(lambda: _drain_into(c, got) >= expected, 60, f"{expected} messages after the committed offsets",
                   interval=0, detail=lambda: {p: (v[0][0], len(v)) for p, v in got.items()})
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:  # duplicates or extra messages would show here
            _drain_into(c, got)
        c.commit(asynchronous=False)
    finally:
        c.close()
    for p in range(PARTITIONS):
        assert_contiguous_from([o for o, _ in got[p]], COMMIT_AT[p], f"partition {p} after the restart")
        assert len(got[p]) == hw[p] - COMMIT_AT[p], f"partition {p}: {len(got[p])} messages"
        assert [v for _, v in got[p]] == [b"v%d" % (o * PARTITIONS + p) for o, _ in got[p]]
    assert group_committed(broker.bootstrap, group, topic, range(PARTITIONS)) == hw
    broker.check_alive()


def _drain_into(c: Consumer, got: dict) -> int:
    for m in c.consume(num_messages=500, timeout=0.2):
        err = m.error()
        if err is not None:
            assert err.code() == KafkaError._PARTITION_EOF, err
            continue
        got[m.partition()].append((m.offset(), m.value()))
    return sum(len(v) for v in got.values())
