"""What an operator does to caudal with ordinary Kafka tooling: kafka-python's
KafkaAdminClient, confluent-kafka's AdminClient and kcat.

- a topic's whole life: create with configs, describe, alter configs (incremental and
  legacy), grow, restart, delete, reuse the name; each change checked by its effect;
- a live group of a kafka-python and a confluent-kafka member as the admin clients see
  it (ListGroups, DescribeGroups, OffsetFetch, ListOffsets);
- kcat's group mode (-G) committing, its offset query (-Q) and -o s@<time>;
- the Prometheus endpoint scraped around a produce/consume run (parsed with
  prometheus_client);
- retention.ms changed at run time deleting old segments.

The last two tests pin down bugs found by these clients and since fixed (see their
docstrings).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from typing import Optional

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigSource, OffsetSpec, ResourceType
from confluent_kafka.admin import ConfigResource as CkConfigResource
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import InvalidConfigurationError, InvalidPartitionsError, TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

from caudal_harness import (
    HOST,
    Broker,
    BrokerError,
    admin_client,
    create_topic,
    list_groups,
    pick_base_port,
    produce,
    unique_name,
    wait_until,
)

KCAT = shutil.which("kcat")

# Kafka's defaults for the topic configs caudal knows (DescribeConfigs answers all eight).
DEFAULTS = {
    "cleanup.policy": "delete",
    "max.message.bytes": "1048588",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
    "min.insync.replicas": "1",
    "message.timestamp.type": "CreateTime",
}
# DescribeConfigs config_source (v1+)
DYNAMIC_TOPIC_CONFIG = 1
DEFAULT_CONFIG = 5

# Kafka error codes
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_CONFIG = 40
OFFSET_OUT_OF_RANGE = 1


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def kcat(*args: str, input: Optional[str] = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run kcat with a deadline; fail with its stderr if it exits non-zero."""
    assert KCAT is not None, "kcat is not installed: run tests/clients/setup.sh"
    proc = subprocess.run([KCAT, *args], input=input, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def kcat_topics(bootstrap: str) -> dict:
    """`kcat -L -J`: {topic: [partition dicts sorted by id]} for every topic."""
    md = json.loads(kcat("-b", bootstrap, "-L", "-J").stdout)
    return {t["topic"]: sorted(t["partitions"], key=lambda p: p["partition"]) for t in md["topics"]}


@contextlib.contextmanager
def kp_admin(bootstrap: str, **conf):
    """A KafkaAdminClient, closed afterwards.

    Pass api_version=(2, 2) for the calls built on Metadata or DescribeGroups v3+
    (list_topics, describe_topics, describe_cluster, describe_consumer_groups): see
    test_kafka_python_admin_metadata_calls_with_authorized_operations."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="caudal-tooling", request_timeout_ms=15_000, **conf)
    try:
        yield admin
    finally:
        admin.close()


def kp_topic_configs(admin: KafkaAdminClient, topic: str) -> dict[str, tuple[str, int]]:
    """kafka-python DescribeConfigs of a topic: {name: (value, config_source)}; fails on
    a resource error."""
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [res] = [r for resp in responses for r in resp.resources]
    error_code, error_message, _type, name, entries = res[:5]
    assert (error_code, name) == (0, topic), f"DescribeConfigs {topic}: {error_code} {error_message}"
    return {e[0]: (e[1], e[3]) for e in entries}


def ck_topic_configs(bootstrap: str, topic: str) -> dict:
    """confluent-kafka DescribeConfigs of a topic: {name: ConfigEntry}."""
    admin = admin_client(bootstrap)
    [fut] = admin.describe_configs([CkConfigResource(ResourceType.TOPIC, topic)]).values()
    return fut.result(timeout=15)


def ck_incremental_alter(bootstrap: str, topic: str, entries: list[ConfigEntry]) -> None:
    admin = admin_client(bootstrap)
    resource = CkConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    [fut] = admin.incremental_alter_configs([resource]).values()
    fut.result(timeout=15)


def kp_alter_configs(admin: KafkaAdminClient, topic: str, configs: dict) -> tuple[int, Optional[str]]:
    """Legacy AlterConfigs (replaces the topic's whole override set): (error_code, message)."""
    response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    [res] = response.resources
    return res[0], res[1]


def ck_list_offsets(bootstrap: str, topic: str, partitions, spec: OffsetSpec) -> dict[int, int]:
    """confluent-kafka AdminClient.list_offsets (ListOffsets on each leader)."""
    admin = admin_client(bootstrap)
    futures = admin.list_offsets({CkTopicPartition(topic, p): spec for p in partitions}, request_timeout=15)
    return {tp.partition: f.result(timeout=15).offset for tp, f in futures.items()}


def kp_offsets(bootstrap: str, topic: str, partitions) -> tuple[dict[int, int], dict[int, int]]:
    """(beginning, end) offsets through a group-less KafkaConsumer (ListOffsets -2/-1)."""
    tps = [KpTopicPartition(topic, p) for p in partitions]
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=15_000)
    try:
        begin = {tp.partition: o for tp, o in c.beginning_offsets(tps).items()}
        end = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        return begin, end
    finally:
        c.close()


def kp_committed(admin: KafkaAdminClient, group: str) -> dict[tuple[str, int], int]:
    """kafka-python list_consumer_group_offsets: {(topic, partition): offset}."""
    return {(tp.topic, tp.partition): om.offset for tp, om in admin.list_consumer_group_offsets(group).items()}


def read_all(bootstrap: str, topic: str, partition: int, expected: int,
             timeout: float = 20.0) -> list[tuple[int, bytes]]:
    """[(offset, value)] of one partition from the beginning, `expected` records."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique_name("reader"), "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    got: list[tuple[int, bytes]] = []
    try:
        c.assign([CkTopicPartition(topic, partition, -2)])
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.2):
                assert m.error() is None, m.error()
                got.append((m.offset(), m.value()))
    finally:
        c.close()
    assert len(got) == expected, f"read {len(got)} of {expected} from {topic}[{partition}]"
    return got


# --------------------------------------------------------------------------------------
# 1. topic lifecycle
# --------------------------------------------------------------------------------------


@pytest.mark.broker_args("--no-auto-create-topics")
def test_topic_lifecycle_with_admin_clients_and_kcat(broker):
    """kafka-python CreateTopics with configs (duplicate name and bad configs refused,
    validate_only creates nothing); DescribeConfigs shows the overrides as
    DYNAMIC_TOPIC_CONFIG and Kafka's defaults for the rest; confluent-kafka
    IncrementalAlterConfigs SET/DELETE (max.message.bytes removed: a 1.5 MB record that
    was accepted is then refused with MSG_SIZE_TOO_LARGE); kafka-python AlterConfigs
    replaces the whole override set, a bad value changes nothing; CreatePartitions grows
    the topic (kcat -L -J sees it, kcat and confluent-kafka produce into the new
    partitions, shrinking is refused); configs, partitions and data survive a restart;
    DeleteTopics removes it from Metadata (kafka-python and kcat), DescribeConfigs and
    the data dir; the name is reused with fresh defaults and an empty log."""
    topic = unique_name("lifecycle")
    bs = broker.bootstrap
    with kp_admin(bs) as admin, kp_admin(bs, api_version=(2, 2)) as admin_md:
        # -- create -------------------------------------------------------------------------
        admin.create_topics([NewTopic(unique_name("dry-run"), 2, 1)], validate_only=True)
        response = admin.create_topics(
            [NewTopic(topic, 2, 1, topic_configs={"retention.ms": "3600000", "max.message.bytes": "2097152"})],
            timeout_ms=15_000,
        )
        assert [(t[0], t[1]) for t in response.topic_errors] == [(topic, 0)]
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, 2, 1)])
        bad = unique_name("bad-config")
        with pytest.raises(InvalidConfigurationError):
            admin.create_topics([NewTopic(bad, 1, 1, topic_configs={"retention.ms": "soon"})])
        with pytest.raises(InvalidConfigurationError):
            admin.create_topics([NewTopic(bad, 1, 1, topic_configs={"no.such.config": "1"})])
        assert admin_md.list_topics() == [topic]  # neither the dry run nor the refused ones

        # -- describe -----------------------------------------------------------------------
        overrides = {"retention.ms": "3600000", "max.message.bytes": "2097152"}
        configs = kp_topic_configs(admin, topic)
        assert configs == {
            name: (overrides[name], DYNAMIC_TOPIC_CONFIG) if name in overrides else (value, DEFAULT_CONFIG)
            for name, value in DEFAULTS.items()
        }
        [described] = admin_md.describe_topics([topic])
        assert (described["topic"], described["error_code"]) == (topic, 0)
        assert [p["partition"] for p in described["partitions"]] == [0, 1]
        assert {p["leader"] for p in described["partitions"]} <= {0, 1}
        assert [p["partition"] for p in kcat_topics(bs)[topic]] == [0, 1]

        # -- incremental alter (confluent-kafka): max.message.bytes back to its default -------
        big = [(0, None, b"x" * 1_500_000)]
        big_producer = {"message.max.bytes": 3_000_000, "retries": 0}
        produce(bs, topic, big, timeout=20, **big_producer)  # allowed by the 2 MiB override
        ck_incremental_alter(bs, topic, [
            ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
        ])
        entries = ck_topic_configs(bs, topic)
        watched = ("segment.ms", "max.message.bytes", "retention.ms")
        assert {n: (e.value, e.source) for n, e in entries.items() if n in watched} == {
            "segment.ms": ("600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
            "retention.ms": ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
            "max.message.bytes": (DEFAULTS["max.message.bytes"], ConfigSource.DEFAULT_CONFIG.value),
        }
        assert entries["max.message.bytes"].is_default
        with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE"):
            produce(bs, topic, big, timeout=20, **big_producer)
        with pytest.raises(KafkaException) as err:
            ck_incremental_alter(bs, topic, [
                ConfigEntry("retention.ms", "-5x", incremental_operation=AlterConfigOpType.SET),
            ])
        assert err.value.args[0].code() == INVALID_CONFIG

        # -- legacy alter (kafka-python): the given set replaces every override -------------
        assert kp_alter_configs(admin, topic, {"retention.ms": "7200000", "retention.bytes": "1000000000"})[0] == 0
        overrides = {"retention.ms": "7200000", "retention.bytes": "1000000000"}
        expected_configs = {
            name: (overrides[name], DYNAMIC_TOPIC_CONFIG) if name in overrides else (value, DEFAULT_CONFIG)
            for name, value in DEFAULTS.items()
        }
        assert kp_topic_configs(admin, topic) == expected_configs  # segment.ms override gone
        code, message = kp_alter_configs(admin, topic, {"retention.ms": "1", "segment.bytes": "big"})
        assert code == INVALID_CONFIG and "segment.bytes" in (message or ""), (code, message)
        assert kp_alter_configs(admin, unique_name("missing"), {"retention.ms": "1"})[0] == UNKNOWN_TOPIC_OR_PARTITION
        assert kp_topic_configs(admin, topic) == expected_configs  # the refused request changed nothing

        # -- create partitions ----------------------------------------------------------------
        admin.create_partitions({topic: NewPartitions(4)})
        [described] = admin_md.describe_topics([topic])
        assert [p["partition"] for p in described["partitions"]] == [0, 1, 2, 3]
        parts = kcat_topics(bs)[topic]
        assert [p["partition"] for p in parts] == [0, 1, 2, 3] and all("error" not in p for p in parts), parts
        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({topic: NewPartitions(3)})
        produce(bs, topic, [(2, None, b"p2-%d" % i) for i in range(5)])
        kcat("-P", "-b", bs, "-t", topic, "-p", "3", "-X", "acks=all", input="".join(f"p3-{i}\n" for i in range(7)))
        out = kcat("-C", "-b", bs, "-t", topic, "-o", "beginning", "-e", "-f", "%p %o %s\\n").stdout
        rows = Counter(line.split()[0] for line in out.splitlines())
        assert rows == {"0": 1, "2": 5, "3": 7}, out[-2000:]
        assert [v for _, v in read_all(bs, topic, 3, 7)] == [b"p3-%d" % i for i in range(7)]

    # -- restart: overrides, partitions and data persist -------------------------------------
    assert broker.restart() == 0
    with kp_admin(bs) as admin, kp_admin(bs, api_version=(2, 2)) as admin_md:
        assert kp_topic_configs(admin, topic) == expected_configs
        [described] = admin_md.describe_topics([topic])
        assert len(described["partitions"]) == 4
        assert kp_offsets(bs, topic, range(4))[1] == {0: 1, 1: 0, 2: 5, 3: 7}

        # -- delete ------------------------------------------------------------------------------
        response = admin.delete_topics([topic], timeout_ms=15_000)
        assert [tuple(t[:2]) for t in response.topic_error_codes] == [(topic, 0)]
        assert topic not in admin_md.list_topics()
        assert topic not in kcat_topics(bs)
        responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert [r[0] for resp in responses for r in resp.resources] == [UNKNOWN_TOPIC_OR_PARTITION]
        wait_until(
            lambda: not [d for d in broker.data_dir.iterdir() if d.name.startswith(topic + "-")],
            10, f"the partition directories of {topic} to go",
            detail=lambda: sorted(d.name for d in broker.data_dir.iterdir()),
        )

        # -- the name again: a new topic, nothing of the old one ---------------------------------
        create_topic(bs, topic, 1)
        assert kp_topic_configs(admin, topic) == {n: (v, DEFAULT_CONFIG) for n, v in DEFAULTS.items()}
        assert kp_offsets(bs, topic, [0]) == ({0: 0}, {0: 0})
        produce(bs, topic, [(0, None, b"again-%d" % i) for i in range(3)])
        assert read_all(bs, topic, 0, 3) == [(i, b"again-%d" % i) for i in range(3)]
    broker.check_alive()


# --------------------------------------------------------------------------------------
# 2. a live group seen through the admin clients
# --------------------------------------------------------------------------------------


class KpMember(threading.Thread):
    """A kafka-python KafkaConsumer in a group (auto-commit every 100 ms), polling in
    its own thread (the consumer is not thread-safe: it lives only there)."""

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str):
        super().__init__(daemon=True)
        self.args = (bootstrap, group, topic)
        self.client_id = client_id
        self.consumed = 0
        self.assigned: set[int] = set()
        self.error: Optional[BaseException] = None
        self._halt = threading.Event()

    def run(self):
        bootstrap, group, topic = self.args
        try:
            c = KafkaConsumer(
                topic, bootstrap_servers=bootstrap, group_id=group, client_id=self.client_id,
                auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=100,
                session_timeout_ms=6000, heartbeat_interval_ms=500, fetch_max_wait_ms=100,
            )
        except BaseException as err:
            self.error = err
            return
        try:
            while not self._halt.is_set():
                for records in c.poll(timeout_ms=100).values():
                    self.consumed += len(records)
                self.assigned = {tp.partition for tp in c.assignment()}
        except BaseException as err:
            self.error = err
        finally:
            c.close()  # commits what was consumed, then LeaveGroup

    def stop(self):
        self._halt.set()
        self.join(timeout=20)
        assert not self.is_alive(), f"{self.client_id} did not close"
        assert self.error is None, repr(self.error)


class CkMember(KpMember):
    """The same with a confluent-kafka Consumer."""

    def run(self):
        bootstrap, group, topic = self.args
        c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": self.client_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": True, "auto.commit.interval.ms": 100,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        })
        try:
            c.subscribe([topic])
            while not self._halt.is_set():
                self.consumed += sum(1 for m in c.consume(num_messages=100, timeout=0.1) if m.error() is None)
                self.assigned = {tp.partition for tp in c.assignment()}
        except BaseException as err:
            self.error = err
        finally:
            c.close()


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
def test_live_group_of_two_client_libraries_through_the_admin_clients(broker):
    """A kafka-python and a confluent-kafka member share a group on a 3-partition topic.
    While both run: kafka-python and confluent-kafka ListGroups list it (Stable,
    consumer); DescribeGroups (kafka-python pinned to v2, and confluent-kafka) shows
    both members by client id with disjoint assignments covering the topic, matching
    what each member holds, protocol range; the committed offsets (kafka-python and
    confluent-kafka OffsetFetch) reach the high watermarks, which ListOffsets reports
    the same through KafkaConsumer.end_offsets and AdminClient.list_offsets. Once both
    left and 10 more records per partition arrived: the group is Empty, its offsets
    stay and the lag (end - committed) is 10 per partition."""
    topic, group = unique_name("live"), unique_name("live-group")
    bs = broker.bootstrap
    partitions = range(3)
    create_topic(bs, topic, 3)
    produce(bs, topic, [(i % 3, None, b"v%d" % i) for i in range(300)])

    members = [KpMember(bs, group, topic, "kp-member"), CkMember(bs, group, topic, "ck-member")]
    with kp_admin(bs) as admin, kp_admin(bs, api_version=(2, 2)) as admin_v2:
        try:
            for m in members:
                m.start()
            wait_until(
                lambda: all(m.assigned for m in members) and sum(len(m.assigned) for m in members) == 3
                and sum(m.consumed for m in members) >= 300,
                30, "both members to hold partitions and the records to be consumed",
                detail=lambda: [(m.client_id, m.assigned, m.consumed, m.error) for m in members],
            )
            end = {(topic, p): 100 for p in partitions}
            wait_until(lambda: kp_committed(admin, group) == end, 15, "the committed offsets to reach the end",
                       detail=lambda: kp_committed(admin, group))

            # -- ListGroups ---------------------------------------------------------------------
            assert (group, "consumer") in [tuple(g[:2]) for g in admin.list_consumer_groups()]
            assert list_groups(bs)[group].state == ConsumerGroupState.STABLE

            # -- DescribeGroups -----------------------------------------------------------------
            [info] = admin_v2.describe_consumer_groups([group])
            assert (info.error_code, info.state, info.protocol_type, info.protocol) == (
                0, "Stable", "consumer", "range"), info
            kp_view = {
                m.client_id: {p for t, ps in m.member_assignment.assignment for p in ps if t == topic}
                for m in info.members
            }
            assert kp_view == {m.client_id: m.assigned for m in members}, (kp_view, [m.assigned for m in members])
            assert set().union(*kp_view.values()) == set(partitions) and sum(map(len, kp_view.values())) == 3
            ck_admin = admin_client(bs)
            [fut] = ck_admin.describe_consumer_groups([group], request_timeout=10).values()
            desc = fut.result(timeout=10)
            assert desc.state == ConsumerGroupState.STABLE and desc.partition_assignor == "range"
            ck_view = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}
            assert ck_view == kp_view

            # -- OffsetFetch and ListOffsets, two clients each -------------------------------------
            [fut] = ck_admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
            assert {(tp.topic, tp.partition): tp.offset for tp in fut.result(timeout=10).topic_partitions} == end
            assert kp_offsets(bs, topic, partitions) == ({p: 0 for p in partitions}, {p: 100 for p in partitions})
            assert ck_list_offsets(bs, topic, partitions, OffsetSpec.earliest()) == {p: 0 for p in partitions}
            assert ck_list_offsets(bs, topic, partitions, OffsetSpec.latest()) == {p: 100 for p in partitions}
        finally:
            for m in members:
                m.stop()

        # -- left: Empty, offsets kept, lag visible ------------------------------------------------
        wait_until(lambda: admin_v2.describe_consumer_groups([group])[0].state == "Empty", 15, "the group to be Empty")
        assert admin_v2.describe_consumer_groups([group])[0].members == []
        produce(bs, topic, [(i % 3, None, b"late%d" % i) for i in range(30)])
        committed = kp_committed(admin, group)
        _, end = kp_offsets(bs, topic, partitions)
        assert {p: end[p] - committed[(topic, p)] for p in partitions} == {p: 10 for p in partitions}


# --------------------------------------------------------------------------------------
# 3. kcat: group mode, offset query, start at a time
# --------------------------------------------------------------------------------------


@pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "0")
def test_kcat_group_mode_commits_and_offsets_for_times(broker):
    """Two produce runs with timestamps a minute apart (separate batches). kcat -G
    (auto.offset.reset=earliest) consumes everything once and exits at the end (-e); kafka-python's admin then lists
    the group (Empty, no members) with committed offsets at the end of each partition.
    A second kcat -G run of the same group after 5 more records per partition reads
    exactly those. kcat -Q gives 0 before everything, the first offset of the second
    run between the two, -1 after everything; kcat -C -o s@<between> starts there."""
    topic, group = unique_name("kcat-g"), unique_name("kcat-group")
    bs = broker.bootstrap
    create_topic(bs, topic, 2)
    now = int(time.time() * 1000)
    t_first, t_second = now - 120_000, now - 60_000
    produce(bs, topic, [(i % 2, None, b"a%d" % i, t_first) for i in range(40)])
    produce(bs, topic, [(i % 2, None, b"b%d" % i, t_second) for i in range(20)])

    def kcat_group_run() -> list[tuple[int, int, str]]:
        # Not `-o beginning`: in -G mode kcat assigns every partition at the -o offset,
        # overriding the committed ones; auto.offset.reset only applies without them.
        out = kcat("-b", bs, "-G", group, topic, "-X", "topic.auto.offset.reset=earliest", "-e",
                   "-f", "%p %o %s\\n", timeout=45).stdout
        rows = [line.split() for line in out.splitlines() if line]
        return sorted((int(p), int(o), v) for p, o, v in rows)

    rows = kcat_group_run()
    assert len(rows) == 60 and len({(p, o) for p, o, _ in rows}) == 60, rows[:10]
    assert {p: max(o for q, o, _ in rows if q == p) for p in (0, 1)} == {0: 29, 1: 29}

    with kp_admin(bs) as admin, kp_admin(bs, api_version=(2, 2)) as admin_v2:
        assert kp_committed(admin, group) == {(topic, 0): 30, (topic, 1): 30}
        assert (group, "consumer") in [tuple(g[:2]) for g in admin.list_consumer_groups()]
        [info] = admin_v2.describe_consumer_groups([group])
        assert (info.error_code, info.state, info.members) == (0, "Empty", []), info

        produce(bs, topic, [(i % 2, None, b"c%d" % i) for i in range(10)])
        assert kcat_group_run() == sorted((i % 2, 30 + i // 2, f"c{i}") for i in range(10))
        assert kp_committed(admin, group) == {(topic, 0): 35, (topic, 1): 35}

    def query(ts: int) -> dict[int, int]:
        out = kcat("-b", bs, "-Q", "-J", "-t", f"{topic}:0:{ts}", "-t", f"{topic}:1:{ts}").stdout
        res = json.loads(out)[topic]
        return {int(k): v["offset"] for k, v in res.items() if k != "topic"}

    middle = (t_first + t_second) // 2
    assert query(t_first - 1000) == {0: 0, 1: 0}
    assert query(t_first) == {0: 0, 1: 0}
    assert query(middle) == {0: 20, 1: 20}
    assert query(t_second) == {0: 20, 1: 20}
    assert query(now + 3_600_000) == {0: -1, 1: -1}

    out = kcat("-C", "-b", bs, "-t", topic, "-p", "1", "-o", f"s@{middle}", "-e", "-f", "%o %T %s\\n").stdout
    rows = [line.split() for line in out.splitlines() if line]
    assert [int(o) for o, _, _ in rows] == list(range(20, 35))
    assert [v for _, _, v in rows[:10]] == [f"b{i}" for i in range(1, 20, 2)]
    assert {int(ts) for _, ts, _ in rows[:10]} == {t_second}


# --------------------------------------------------------------------------------------
# 4. metrics
# --------------------------------------------------------------------------------------


class Scrape:
    """One GET /metrics, parsed with prometheus_client's text parser."""

    def __init__(self, url: str):
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            self.content_type = resp.headers.get("Content-Type", "")
            self.text = resp.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples: dict[str, list] = defaultdict(list)
        for f in self.families.values():
            for s in f.samples:
                self.samples[s.name].append(s)

    def total(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))

    def per(self, name: str, key: str, **labels) -> dict[str, float]:
        """{label `key`: value} of the samples of `name` matching `labels`."""
        return {
            s.labels[key]: s.value
            for s in self.samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())
        }


def check_exposition(scrape: Scrape) -> None:
    """What the parser lets through: every sample line parsed into a family with a
    TYPE; counters and gauges finite and counters non-negative; each histogram series
    has cumulative buckets ending in +Inf == _count, and a _sum."""
    lines = [line for line in scrape.text.splitlines() if line and not line.startswith("#")]
    assert sum(len(f.samples) for f in scrape.families.values()) == len(lines)
    for f in scrape.families.values():
        assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
        assert f.documentation, f"{f.name} has no HELP"
        if f.type == "counter":
            assert all(s.value >= 0 for s in f.samples), f.name
        if f.type != "histogram":
            continue
        series: dict[tuple, dict] = defaultdict(lambda: {"buckets": []})
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            else:
                series[key][s.name.rsplit("_", 1)[1]] = s.value
        for key, ser in series.items():
            buckets = ser["buckets"]
            les = [le for le, _ in buckets]
            counts = [c for _, c in buckets]
            assert les == sorted(les) and les[-1] == float("inf"), (f.name, key, les)
            assert counts == sorted(counts), (f.name, key, counts)
            assert counts[-1] == ser.get("count"), (f.name, key, ser)
            assert "sum" in ser and ser["sum"] >= 0, (f.name, key, ser)


@pytest.fixture
def metrics_broker(request):
    """A broker with --metrics-listen on a free port (and no initial rebalance delay);
    yields (broker, metrics url)."""
    keep_failed = None
    for attempt in range(3):
        port = pick_base_port(1)
        b = Broker(extra_args=["--metrics-listen", f"{HOST}:{port}", "--group-initial-rebalance-delay-ms", "0"])
        request.node._caudal_brokers = getattr(request.node, "_caudal_brokers", []) + [b]
        try:
            b.start()
            break
        except BrokerError as err:
            b.cleanup()
            keep_failed = err
            if "in use" not in str(err).lower() or attempt == 2:
                raise
    else:
        raise keep_failed
    yield b, f"http://{HOST}:{port}/metrics"
    b.cleanup()
    if b.crashed_returncode is not None:
        pytest.fail(f"caudal died during the test (exit code {b.crashed_returncode})")


def test_metrics_move_during_produce_and_consume(metrics_broker):
    """Scrape /metrics, produce 1000 records to each of 2 partitions (acks=all), consume
    them in a group that commits half, then all, and read one partition from an offset
    past its end; scrape again. The text parses as Prometheus exposition format (served
    as text/plain; version=0.0.4) with consistent histograms. Messages in per partition
    moved by exactly 1000, bytes in by at least the payload, messages out by at least
    1000, the high watermark is 1000; Produce and Fetch latency histograms counted
    requests; fsync count and latency moved; connections and tail cache bytes are
    non-zero; the OFFSET_OUT_OF_RANGE fetch is counted in caudal_errors_total; group lag
    is 500 per partition after the half commit and 0 after the last. Deleting the topic
    removes every series labelled with it."""
    broker, url = metrics_broker
    bs = broker.bootstrap
    topic, group = unique_name("metrics"), unique_name("metrics-group")
    create_topic(bs, topic, 2)

    before = Scrape(url)
    assert before.content_type.startswith("text/plain") and "version=0.0.4" in before.content_type, before.content_type
    check_exposition(before)
    expected_types = {
        "caudal_partition_messages_in": "counter",
        "caudal_partition_bytes_in": "counter",
        "caudal_partition_messages_out": "counter",
        "caudal_partition_high_watermark": "gauge",
        "caudal_group_lag": "gauge",
        "caudal_request_duration_seconds": "histogram",
        "caudal_fsyncs": "counter",
        "caudal_fsync_duration_seconds": "histogram",
        "caudal_errors": "counter",
        "caudal_connections": "gauge",
        "caudal_tail_cache_bytes": "gauge",
    }
    assert {n: before.families[n].type for n in expected_types if n in before.families} == expected_types

    def lag() -> dict[str, float]:
        return Scrape(url).per("caudal_group_lag", "partition", group=group, topic=topic)

    value = b"m" * 100
    produce(bs, topic, [(i % 2, None, value) for i in range(2000)])

    c = Consumer({
        "bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })
    try:
        c.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 30
        while got < 2000 and time.monotonic() < deadline:
            got += sum(1 for m in c.consume(num_messages=1000, timeout=0.2) if m.error() is None)
        assert got == 2000, f"consumed {got} of 2000"
        during = Scrape(url)
        assert during.total("caudal_connections") >= 2, during.per("caudal_connections", "shard")

        c.commit(offsets=[CkTopicPartition(topic, p, 500) for p in (0, 1)], asynchronous=False)
        wait_until(lambda: lag() == {"0": 500, "1": 500}, 10, "group lag 500 per partition", detail=lag)
        c.commit(offsets=[CkTopicPartition(topic, p, 1000) for p in (0, 1)], asynchronous=False)
    finally:
        c.close()
    wait_until(lambda: lag() == {"0": 0, "1": 0}, 10, "group lag 0", detail=lag)

    # A fetch past the end: OFFSET_OUT_OF_RANGE, then the consumer resets to earliest.
    c = Consumer({"bootstrap.servers": bs, "group.id": unique_name("oor"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.assign([CkTopicPartition(topic, 0, 5000)])
        first = None
        deadline = time.monotonic() + 15
        while first is None and time.monotonic() < deadline:
            first = next((m for m in c.consume(num_messages=10, timeout=0.2) if m.error() is None), None)
        assert first is not None and first.offset() == 0, "no reset to earliest after OFFSET_OUT_OF_RANGE"
    finally:
        c.close()

    after = Scrape(url)
    check_exposition(after)

    def delta(name, **labels):
        return after.total(name, **labels) - before.total(name, **labels)

    for p in ("0", "1"):
        assert delta("caudal_partition_messages_in_total", topic=topic, partition=p) == 1000
        assert delta("caudal_partition_bytes_in_total", topic=topic, partition=p) >= 1000 * len(value)
        assert delta("caudal_partition_messages_out_total", topic=topic, partition=p) >= 1000
        assert after.total("caudal_partition_high_watermark", topic=topic, partition=p) == 1000
    assert delta("caudal_request_duration_seconds_count", api="Produce") >= 1
    assert delta("caudal_request_duration_seconds_count", api="Fetch") >= 2
    assert delta("caudal_request_duration_seconds_sum", api="Produce") > 0
    assert delta("caudal_request_duration_seconds_count", api="OffsetCommit") >= 2
    assert delta("caudal_fsyncs_total") >= 2  # acks=all, fsync before every acknowledgement
    assert delta("caudal_fsync_duration_seconds_count") >= 2
    assert after.total("caudal_tail_cache_bytes") > 0
    assert delta("caudal_errors_total", code=str(OFFSET_OUT_OF_RANGE)) >= 1, after.per("caudal_errors_total", "code")
    assert after.per("caudal_group_lag", "partition", group=group, topic=topic) == {"0": 0, "1": 0}
    assert set(after.per("caudal_connections", "shard")) == {"0", "1"}

    # Deleting the topic drops its partition and lag series: no stale labels stay behind.
    admin = admin_client(bs)
    admin.delete_topics([topic], operation_timeout=15)[topic].result(timeout=15)

    def series_of_topic():
        return sorted({s.name for ss in Scrape(url).samples.values() for s in ss if s.labels.get("topic") == topic})

    wait_until(lambda: not series_of_topic(), 5, f"the series of deleted {topic} to go", detail=series_of_topic)


# --------------------------------------------------------------------------------------
# 5. retention changed at run time
# --------------------------------------------------------------------------------------


@pytest.mark.broker_args("--retention-check-ms", "300")
def test_runtime_retention_change_deletes_old_segments(broker):
    """A 2-partition topic with segment.bytes=1 MiB: partition 0 gets 5000 1 KB records
    stamped an hour ago (CreateTime), partition 1 the same stamped now, each filling
    several segments. With the default retention (7 days) nothing goes. kafka-python's
    AlterConfigs then sets retention.ms=60000 (keeping segment.bytes, since AlterConfigs
    replaces the override set): within a few retention checks (every 300 ms) partition 0
    loses every segment, the active one too (as Kafka, it is rolled first): files gone,
    earliest offset = latest = 5000; partition 1 keeps everything, and both still take
    produces."""
    topic = unique_name("retention")
    bs = broker.bootstrap
    create_topic(bs, topic, 2, config={"segment.bytes": "1048576"})
    hour_ago = int(time.time() * 1000) - 3_600_000
    payload = b"r" * 1000
    produce(bs, topic, [(0, None, payload, hour_ago) for _ in range(5000)])
    produce(bs, topic, [(1, None, payload) for _ in range(5000)])

    def segments(p: int) -> list[int]:
        return sorted(int(f.stem) for f in (broker.data_dir / f"{topic}-{p}").glob("*.log"))

    old, fresh = segments(0), segments(1)
    assert len(old) >= 4 and len(fresh) >= 4, (old, fresh)
    time.sleep(1.0)  # three retention checks at the default retention.ms
    assert (segments(0), segments(1)) == (old, fresh)
    assert kp_offsets(bs, topic, [0, 1]) == ({0: 0, 1: 0}, {0: 5000, 1: 5000})

    with kp_admin(bs) as admin:
        code, message = kp_alter_configs(admin, topic, {"retention.ms": "60000", "segment.bytes": "1048576"})
        assert code == 0, message
        assert kp_topic_configs(admin, topic)["retention.ms"] == ("60000", DYNAMIC_TOPIC_CONFIG)

    # The expired active segment is rolled, so a new, empty one starts at 5000.
    wait_until(lambda: segments(0) == [5000], 10, f"{topic}[0] to keep only a new, empty segment",
               detail=lambda: segments(0))
    wait_until(lambda: kp_offsets(bs, topic, [0])[0] == {0: 5000}, 5, "the earliest offset to move",
               detail=lambda: kp_offsets(bs, topic, [0]))
    older = [f.name for f in (broker.data_dir / f"{topic}-0").iterdir()
             if f.name[0].isdigit() and int(f.name.split(".")[0]) < 5000]
    assert not older, older
    time.sleep(1.0)  # more checks: the recent records stay
    assert segments(1) == fresh
    assert kp_offsets(bs, topic, [0, 1]) == ({0: 5000, 1: 0}, {0: 5000, 1: 5000})
    assert ck_list_offsets(bs, topic, [0], OffsetSpec.earliest()) == {0: 5000}

    produce(bs, topic, [(0, None, b"new"), (1, None, b"new")])
    rows = read_all(bs, topic, 0, 1)
    assert [o for o, _ in rows] == [5000]
    assert kp_offsets(bs, topic, [0, 1])[1] == {0: 5001, 1: 5001}
    broker.check_alive()


# --------------------------------------------------------------------------------------
# regressions: bugs these clients found
# --------------------------------------------------------------------------------------


def test_kafka_python_admin_metadata_calls_with_authorized_operations(broker):
    """kafka-python's KafkaAdminClient (negotiated versions) sends Metadata v8 with
    include_cluster_authorized_operations and include_topic_authorized_operations set
    for list_topics(), describe_topics() and describe_cluster(). Kafka then returns a
    bit field of the operations allowed (without an authorizer: every operation the
    resource supports, e.g. DESCRIBE = bit 8 for a topic), never INT32_MIN."""
    topic = unique_name("authz")
    create_topic(broker.bootstrap, topic, 1)
    with kp_admin(broker.bootstrap) as admin:
        assert topic in admin.list_topics()
        [described] = admin.describe_topics([topic])
        assert "DESCRIBE" in described["authorized_operations"], described
        assert "DESCRIBE" in admin.describe_cluster()["authorized_operations"]


def test_offsets_for_times_inside_one_batch(broker):
    """Ten records in one batch (one flush, linger.ms=100) stamped t, t+1s, ..., t+9s.
    kcat -Q at t+5s and confluent-kafka offsets_for_times at t+5s must give offset 5 with
    timestamp t+5s, as Kafka does (it searches the records of the batch it finds)."""
    topic = unique_name("ts-in-batch")
    bs = broker.bootstrap
    create_topic(bs, topic, 1)
    t = int(time.time() * 1000) - 60_000
    acks = produce(bs, topic, [(0, None, b"%d" % i, t + i * 1000) for i in range(10)], **{"linger.ms": 100})
    assert [o for _, o in acks] == list(range(10))

    res = json.loads(kcat("-b", bs, "-Q", "-J", "-t", f"{topic}:0:{t + 5000}").stdout)
    kcat_offset = res[topic]["0"]["offset"]
    c = Consumer({"bootstrap.servers": bs, "group.id": unique_name("ts"), "enable.auto.commit": False})
    try:
        [found] = c.offsets_for_times([CkTopicPartition(topic, 0, t + 5000)], timeout=10)
    finally:
        c.close()
    admin = admin_client(bs)
    [fut] = admin.list_offsets({CkTopicPartition(topic, 0): OffsetSpec.for_timestamp(t + 5000)}).values()
    info = fut.result(timeout=10)
    assert (kcat_offset, found.offset, info.offset, info.timestamp) == (5, 5, 5, t + 5000)
