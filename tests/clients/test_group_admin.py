"""Group administration against caudal's coordinators: ListGroups, DescribeGroups,
OffsetFetch and DeleteGroups through confluent-kafka's AdminClient and kafka-python's
KafkaAdminClient, for a live group, the same group once empty, and after deletion."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException
from confluent_kafka.error import KafkaError
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient

from caudal_harness import (
    SHARDS,
    admin_client,
    create_topic,
    describe_group,
    group_committed,
    list_groups,
    produce,
    unique_name,
    wait_until,
)

PARTITIONS = 4
MESSAGES = 200


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bitwise: the hash caudal places groups with."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


class PollingMember(threading.Thread):
    """A confluent-kafka group member polling in a thread (auto-commit every 100 ms)
    until stop(), which close()s it (LeaveGroup)."""

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str):
        super().__init__(daemon=True)
        self.client_id = client_id
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": client_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 100,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        self.consumer.subscribe([topic])
        self.consumed = 0
        self.assigned: set[int] = set()
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            while not self._halt.is_set():
                for m in self.consumer.consume(num_messages=100, timeout=0.1):
                    if m.error() is None:
                        self.consumed += 1
                self.assigned = {tp.partition for tp in self.consumer.assignment()}
        except BaseException as err:
            self.error = err
        finally:
            self.consumer.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=20)
        assert not self.is_alive(), f"{self.client_id} did not close"
        assert self.error is None, self.error


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
def test_list_describe_and_delete_groups_with_both_admin_clients(broker):
    """Two members of a group consume a 4-partition topic (auto-commit). While they run:
    ListGroups (confluent-kafka and kafka-python) lists the group as Stable/consumer;
    DescribeGroups (both clients) shows state Stable, protocol type consumer, assignor
    range, both members by client id with disjoint assignments covering the topic, and
    the coordinator is shard crc32c(group) % shards; DeleteGroups on the live group
    fails with NON_EMPTY_GROUP. Once both have left: the group is Empty with no members
    and its committed offsets (OffsetFetch, both clients) are the high watermarks. After
    DeleteGroups: the group is no longer listed, DescribeGroups says Dead (or
    GROUP_ID_NOT_FOUND) and its offsets are gone."""
    topic, group = unique_name("admin"), unique_name("admin-group")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, [(i % PARTITIONS, None, b"v%d" % i) for i in range(MESSAGES)])
    coordinator = crc32c(group.encode()) % SHARDS

    members = [PollingMember(broker.bootstrap, group, topic, f"admin-member-{k}") for k in (1, 2)]
    kp_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="caudal-tests-admin",
                                request_timeout_ms=15_000)
    try:
        for m in members:
            m.start()
        wait_until(
            lambda: all(m.assigned for m in members) and sum(len(m.assigned) for m in members) == PARTITIONS,
            30, "both members to get partitions",
            detail=lambda: [(m.client_id, m.assigned) for m in members],
        )
        wait_until(lambda: sum(m.consumed for m in members) >= MESSAGES, 30, "the members to consume everything")

        # -- ListGroups -----------------------------------------------------------------------
        listed = list_groups(broker.bootstrap)
        assert group in listed, sorted(listed)
        assert listed[group].state == ConsumerGroupState.STABLE
        assert listed[group].is_simple_consumer_group is False
        assert (group, "consumer") in [tuple(g[:2]) for g in kp_admin.list_consumer_groups()]

        # -- DescribeGroups: confluent-kafka --------------------------------------------------
        desc = describe_group(broker.bootstrap, group)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE, desc
        assert desc.is_simple_consumer_group is False
        assert desc.partition_assignor == "range"
        assert desc.coordinator.id == coordinator, f"coordinator {desc.coordinator}, expected shard {coordinator}"
        by_client = {m.client_id: m for m in desc.members}
        assert sorted(by_client) == ["admin-member-1", "admin-member-2"]
        assignments = [{tp.partition for tp in by_client[m.client_id].assignment.topic_partitions} for m in members]
        assert assignments == [m.assigned for m in members]
        assert all(tp.topic == topic for d in desc.members for tp in d.assignment.topic_partitions)
        assert set().union(*assignments) == set(range(PARTITIONS)) and not (assignments[0] & assignments[1])
        assert len({d.member_id for d in desc.members}) == 2 and all(d.member_id for d in desc.members)

        # -- DescribeGroups: kafka-python ----------------------------------------------------------
        # kafka-python 2.3.3 cannot decode DescribeGroups v3+ unless the broker reports
        # authorized operations: it turns the "not requested" value INT32_MIN (which Kafka
        # itself sends too) into bit 31 and fails on ACLOperation(31) (fixed in 3.x). So
        # this client is pinned to Kafka 2.2's API versions: DescribeGroups v2.
        kp_v2 = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="caudal-tests-admin-v2",
                                 request_timeout_ms=15_000, api_version=(2, 2))
        try:
            [info] = kp_v2.describe_consumer_groups([group])
        finally:
            kp_v2.close()
        assert (info.error_code, info.group, info.state, info.protocol_type, info.protocol) == (
            0, group, "Stable", "consumer", "range"
        ), info
        kp_members = {m.client_id: m for m in info.members}
        assert sorted(kp_members) == ["admin-member-1", "admin-member-2"]
        for m, parts in zip(members, assignments):
            meta = kp_members[m.client_id]
            assert list(meta.member_metadata.topics) == [topic]
            assert {(t, p) for t, ps in meta.member_assignment.assignment for p in ps} == {(topic, p) for p in parts}

        # -- a live group cannot be deleted ----------------------------------------------------
        admin = admin_client(broker.bootstrap)  # kept referenced until its futures are done
        with pytest.raises(KafkaException) as err:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        assert err.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, err.value
    finally:
        for m in members:
            m.stop()
        close = getattr(kp_admin, "close", None)
        if close:
            close()

    # -- empty: offsets stay ------------------------------------------------------------------------
    desc = wait_until(lambda: (d := describe_group(broker.bootstrap, group)).state == ConsumerGroupState.EMPTY and d,
                      15, "the group to be Empty after both members left")
    assert desc.members == [], desc
    hw = {p: MESSAGES // PARTITIONS for p in range(PARTITIONS)}
    assert group_committed(broker.bootstrap, group, topic, range(PARTITIONS)) == hw
    kp_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="caudal-tests-admin")
    try:
        offsets = kp_admin.list_consumer_group_offsets(group)
        assert {tp: om.offset for tp, om in offsets.items()} == {KpTopicPartition(topic, p): o for p, o in hw.items()}
        assert list_groups(broker.bootstrap)[group].state == ConsumerGroupState.EMPTY

        # -- deleted: gone -------------------------------------------------------------------------
        admin = admin_client(broker.bootstrap)
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        assert group not in list_groups(broker.bootstrap)
        assert group not in [g[0] for g in kp_admin.list_consumer_groups()]
    finally:
        kp_admin.close()
    try:
        desc = describe_group(broker.bootstrap, group)
        assert desc.state == ConsumerGroupState.DEAD and not desc.members, desc
    except KafkaException as err:
        assert err.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, err
    assert group_committed(broker.bootstrap, group, topic, range(PARTITIONS)) == {p: -1001 for p in range(PARTITIONS)}
    broker.check_alive()
