"""kafka-python pinned to old Kafka releases (`api_version=(0, 11)` and `(1, 0)`), as
deployments that never moved still configure it: it then speaks that release's request
versions without asking ApiVersions first. Each must create a topic, produce, consume in
a group, commit, and resume from the commit. (Sarama pinned the same way: tests/go.)"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic


def _consume(bootstrap, version, topic, group, want):
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        api_version=version,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        got = []
        for m in c:
            got.append(m.value)
            if len(got) >= want:
                break
        # Anything after `want` within the timeout would be a duplicate.
        got.extend(m.value for m in c)
        c.commit()
        return got
    finally:
        c.close()


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
@pytest.mark.parametrize("version", [(0, 11), (1, 0)], ids=["0.11", "1.0"])
def test_pinned_kafka_python_produces_consumes_commits_and_resumes(broker, version):
    bootstrap = broker.bootstrap
    topic = "old-py-" + uuid.uuid4().hex[:8]
    group = topic + "-group"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=version)
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"retention.ms": "86400000"})])
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert "86400000" in str(described)
    finally:
        admin.close()

    p = KafkaProducer(bootstrap_servers=bootstrap, api_version=version, acks="all")
    for i in range(40):
        p.send(topic, b"first-%d" % i)
    p.flush(30)

    first = _consume(bootstrap, version, topic, group, 40)
    assert sorted(first) == sorted(b"first-%d" % i for i in range(40))

    for i in range(10):
        p.send(topic, b"second-%d" % i)
    p.flush(30)
    p.close()

    again = _consume(bootstrap, version, topic, group, 10)
    assert sorted(again) == sorted(b"second-%d" % i for i in range(10)), "resumed at the commit"
