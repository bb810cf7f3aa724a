"""The two Python Kafka clients against caudal, each through its whole ordinary
life: admin create, produce with acks=all, read back by hand-assigned partitions,
offset queries and topic configs."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import ConfigResource as CkConfigResource
from confluent_kafka.admin import ResourceType
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from caudal_harness import (
    admin_client,
    assert_contiguous_from,
    consume_partitions,
    consumer,
    create_topic,
    produce,
)

MESSAGES = 50_000
PARTITIONS = 3


def expected_values(partition: int) -> list[bytes]:
    """Values sent to `partition` (message i goes to partition i % 3), in send order."""
    return [b"%d" % i for i in range(partition, MESSAGES, PARTITIONS)]


# --------------------------------------------------------------------------------------
# kafka-python
# --------------------------------------------------------------------------------------


def test_kafka_python_creates_produces_reads_back_and_describes_a_topic(broker):
    topic = "kafka-python"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="caudal-tests", request_timeout_ms=30_000)
    try:
        # CreateTopics goes to the controller named in Metadata; errors raise.
        response = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                       timeout_ms=30_000)
        assert [(name, code) for name, code, *_ in response.topic_errors] == [(topic, 0)]

        # -- produce -------------------------------------------------------------------
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap,
            acks="all",
            linger_ms=5,
            batch_size=64 * 1024,
            max_block_ms=30_000,
        )
        try:
            assert producer.partitions_for(topic) == set(range(PARTITIONS))
            futures = [producer.send(topic, value=b"%d" % i, partition=i % PARTITIONS) for i in range(MESSAGES)]
            producer.flush(timeout=90)
        finally:
            producer.close(timeout=10)

        acked: dict[int, list[int]] = defaultdict(list)
        for i, f in enumerate(futures):
            assert f.is_done, f"send {i} not completed after flush"
            assert f.succeeded(), f"send {i} failed: {f.exception!r}"
            acked[f.value.partition].append(f.value.offset)
        for p in range(PARTITIONS):
            # One producer, no retries: each partition's offsets are handed out in send order.
            assert_contiguous_from(acked[p], 0, f"acked offsets of {topic}[{p}]")
            assert len(acked[p]) == len(expected_values(p))

        # -- read back -------------------------------------------------------------------
        tps = [KpTopicPartition(topic, p) for p in range(PARTITIONS)]
        cons = KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=None,  # no group: partitions are assigned by hand, nothing is committed
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            fetch_max_wait_ms=200,
        )
        try:
            cons.assign(tps)
            cons.seek_to_beginning()
            got: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
            count = 0
            deadline = time.monotonic() + 90
            while count < MESSAGES and time.monotonic() < deadline:
                for tp, records in cons.poll(timeout_ms=500).items():
                    for r in records:
                        got[tp.partition].append((r.offset, r.value))
                        count += 1
            # Poll a little longer: a duplicate or stray record would show up here.
            settle = time.monotonic() + 1.0
            while time.monotonic() < settle:
                for tp, records in cons.poll(timeout_ms=200).items():
                    got[tp.partition].extend((r.offset, r.value) for r in records)
                    count += len(records)
            assert count == MESSAGES, f"read {count} of {MESSAGES} records"
            for p in range(PARTITIONS):
                assert_contiguous_from([o for o, _ in got[p]], 0, f"{topic}[{p}]")
                assert [v for _, v in got[p]] == expected_values(p), f"{topic}[{p}] values out of order"

            # seek() to an offset in the middle reads from exactly there.
            cons.seek(tps[1], 1234)
            first = None
            deadline = time.monotonic() + 15
            while first is None and time.monotonic() < deadline:
                records = cons.poll(timeout_ms=500, max_records=10).get(tps[1], [])
                if records:
                    first = records[0]
            assert first is not None, "nothing read after seek"
            assert (first.offset, first.value) == (1234, expected_values(1)[1234])

            # ListOffsets: earliest and latest.
            assert cons.beginning_offsets(tps) == {tp: 0 for tp in tps}
            assert cons.end_offsets(tps) == {tp: len(expected_values(tp.partition)) for tp in tps}
        finally:
            cons.close(autocommit=False)

        # -- topic configs ----------------------------------------------------------------
        responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        resources = [r for resp in responses for r in resp.resources]
        assert len(resources) == 1, resources
        error_code, _error_message, resource_type, resource_name, entries = resources[0][:5]
        assert (error_code, resource_type, resource_name) == (0, ConfigResourceType.TOPIC.value, topic)
        configs = {e[0]: e[1] for e in entries}
        for name in ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms"):
            assert name in configs, f"{name} missing from DescribeConfigs: {sorted(configs)}"
        assert int(configs["retention.ms"]) >= -1
    finally:
        admin.close()


# --------------------------------------------------------------------------------------
# confluent-kafka (librdkafka 2.16)
# --------------------------------------------------------------------------------------


def test_confluent_kafka_creates_produces_reads_back_and_describes_a_topic(broker):
    topic = "confluent-kafka"
    create_topic(broker.bootstrap, topic, PARTITIONS, config={"retention.ms": "3600000"})

    # Two halves with explicit CreateTime timestamps a minute apart (recent enough that
    # retention.ms=1h keeps them), produced by separate flushed producers so that no
    # batch holds both: offsets_for_times then has one exact answer per partition.
    now = int(time.time() * 1000)
    t_first, t_second = now - 120_000, now - 60_000
    half = MESSAGES // 2

    def batch(indices, ts):
        return [(i % PARTITIONS, b"k%d" % i, b"%d" % i, ts) for i in indices]

    acks = produce(broker.bootstrap, topic, batch(range(half), t_first), timeout=90)
    acks += produce(broker.bootstrap, topic, batch(range(half, MESSAGES), t_second), timeout=90)

    acked: dict[int, list[int]] = defaultdict(list)
    for i, (p, off) in enumerate(acks):
        assert p == i % PARTITIONS
        acked[p].append(off)
    for p in range(PARTITIONS):
        assert_contiguous_from(acked[p], 0, f"acked offsets of {topic}[{p}]")
    first_half_count = Counter(i % PARTITIONS for i in range(half))

    # -- read back ---------------------------------------------------------------------
    got = consume_partitions(broker.bootstrap, topic, range(PARTITIONS), expected=MESSAGES, timeout=90)
    assert sum(len(v) for v in got.values()) == MESSAGES
    for p in range(PARTITIONS):
        records = got[p]
        assert_contiguous_from([o for o, *_ in records], 0, f"{topic}[{p}]")
        assert [v for _, _, v, _ in records] == expected_values(p), f"{topic}[{p}] values out of order"
        assert all(k == b"k" + v for _, k, v, _ in records), f"{topic}[{p}] keys do not match values"
        # Record timestamps come back as produced (CreateTime).
        n1 = first_half_count[p]
        assert {ts for *_, ts in records[:n1]} == {t_first}
        assert {ts for *_, ts in records[n1:]} == {t_second}

    c = consumer(broker.bootstrap)
    try:
        # ListOffsets earliest/latest.
        for p in range(PARTITIONS):
            low, high = c.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10)
            assert (low, high) == (0, len(expected_values(p))), f"watermarks of {topic}[{p}]"

        # ListOffsets by timestamp (v1+): before everything -> 0; between the halves ->
        # the first offset of the second half; after everything -> -1 (end).
        def offsets_at(ts):
            res = c.offsets_for_times([CkTopicPartition(topic, p, ts) for p in range(PARTITIONS)], timeout=10)
            assert all(r.error is None for r in res), res
            return {r.partition: r.offset for r in res}

        assert offsets_at(t_first - 60_000) == {p: 0 for p in range(PARTITIONS)}
        assert offsets_at((t_first + t_second) // 2) == {p: first_half_count[p] for p in range(PARTITIONS)}
        assert offsets_at(now + 3_600_000) == {p: -1 for p in range(PARTITIONS)}
    finally:
        c.close()

    # -- topic configs -------------------------------------------------------------------
    admin = admin_client(broker.bootstrap)
    futures = admin.describe_configs([CkConfigResource(ResourceType.TOPIC, topic)])
    (configs,) = [f.result(timeout=30) for f in futures.values()]
    assert "retention.ms" in configs, sorted(configs)
    assert configs["retention.ms"].value == "3600000"
