"""A clean restart (SIGTERM, start on the same data dir and ports) keeps the cluster
metadata, the partition placement and every acknowledged message, and the logs
continue where they stopped."""

from __future__ import annotations

from collections import defaultdict

from caudal_harness import (
    admin_client,
    assert_contiguous_from,
    consume_partitions,
    consumer,
    create_topic,
    partition_leaders,
    produce,
    wait_for_topic,
)
from confluent_kafka import TopicPartition

TOPICS = {"restart-three": 3, "restart-four": 4}
BEFORE = 3_000  # messages per topic before the restart
AFTER = 1_000  # and after


def messages(topic: str, partitions: int, start: int, count: int):
    """(partition, key, value) with message i on partition i % partitions."""
    return [(i % partitions, f"{topic}-k{i}".encode(), f"{topic}-v{i}".encode()) for i in range(start, start + count)]


def watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


def test_restart_keeps_topics_placements_and_messages(broker):
    # -- before ----------------------------------------------------------------------------
    produced: dict[str, dict[int, list[tuple[int, bytes, bytes]]]] = {}  # topic -> p -> [(offset, k, v)]
    leaders_before = {}
    for topic, n in TOPICS.items():
        create_topic(broker.bootstrap, topic, n)
        msgs = messages(topic, n, 0, BEFORE)
        acks = produce(broker.bootstrap, topic, msgs)
        per_partition = defaultdict(list)
        for (p, off), (_, k, v) in zip(acks, msgs):
            per_partition[p].append((off, k, v))
        produced[topic] = per_partition
        leaders_before[topic] = partition_leaders(broker.bootstrap, topic)
    # 3 + 4 partitions placed on the least-loaded shard each time use both shards.
    assert set().union(*(set(l.values()) for l in leaders_before.values())) == {0, 1}, leaders_before
    high_before = {t: {p: hw for p, (_, hw) in watermarks(broker.bootstrap, t, n).items()} for t, n in TOPICS.items()}
    for topic, n in TOPICS.items():
        assert high_before[topic] == {p: len(produced[topic][p]) for p in range(n)}

    # -- restart ---------------------------------------------------------------------------
    # Every client above is closed, so only the broker's own sockets are in play.
    code = broker.restart()
    assert code == 0, f"caudal exited with {code} on SIGTERM instead of stopping cleanly"

    # -- after: metadata ---------------------------------------------------------------------
    admin = admin_client(broker.bootstrap)
    for topic, n in TOPICS.items():
        wait_for_topic(admin, topic, n)
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 1]
    user_topics = {t for t in md.topics if not t.startswith("__")}
    assert user_topics == set(TOPICS), user_topics
    for topic in TOPICS:
        assert partition_leaders(broker.bootstrap, topic) == leaders_before[topic], f"placement of {topic} changed"

    # -- after: every acknowledged message is still there, at its offset -----------------------
    for topic, n in TOPICS.items():
        assert {p: hw for p, (_, hw) in watermarks(broker.bootstrap, topic, n).items()} == high_before[topic]
        got = consume_partitions(broker.bootstrap, topic, range(n), expected=BEFORE, timeout=60, settle=0.5)
        for p in range(n):
            assert [(o, k, v) for o, k, v, _ in got.get(p, [])] == produced[topic][p], f"{topic}[{p}] after restart"

    # -- after: new appends continue right after the old high watermark ------------------------
    for topic, n in TOPICS.items():
        msgs = messages(topic, n, BEFORE, AFTER)
        acks = produce(broker.bootstrap, topic, msgs)
        new_offsets = defaultdict(list)
        for p, off in acks:
            new_offsets[p].append(off)
        for p in range(n):
            assert_contiguous_from(new_offsets[p], high_before[topic][p], f"{topic}[{p}] appends after restart")

        got = consume_partitions(broker.bootstrap, topic, range(n), expected=BEFORE + AFTER, timeout=60, settle=0.5)
        assert sum(len(v) for v in got.values()) == BEFORE + AFTER
        for p in range(n):
            assert_contiguous_from([o for o, *_ in got[p]], 0, f"{topic}[{p}] after the new appends")
