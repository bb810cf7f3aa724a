"""kcat (librdkafka 2.0 from Debian) against caudal: metadata listing and a keyed
round trip through every compression codec."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict

import pytest

from caudal_harness import assert_contiguous_from, create_topic

KCAT = shutil.which("kcat")

LINES = 10_000
KEYS = 100  # keys repeat, so per-key order is a real check


def kcat(*args: str, input: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run kcat with a deadline; fail with its stderr if it exits non-zero."""
    assert KCAT is not None, "kcat is not installed: run tests/clients/setup.sh"
    proc = subprocess.run(
        [KCAT, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def test_kcat_lists_both_shards_as_brokers_and_the_topic(broker):
    create_topic(broker.bootstrap, "listed", 4)

    # The human-readable listing, as an operator would read it.
    text = kcat("-b", broker.bootstrap, "-L", timeout=30).stdout
    assert re.search(r"^\s*2 brokers:", text, re.M), text
    listed = {int(i): int(port) for i, port in re.findall(r"^\s*broker (\d+) at [^:\s]+:(\d+)", text, re.M)}
    assert listed == {0: broker.port, 1: broker.port + 1}, text
    assert re.search(r'^\s*topic "listed" with 4 partitions:', text, re.M), text

    # The same through -J, for exact fields.
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", timeout=30).stdout)
    brokers = {b["id"]: b["name"] for b in md["brokers"]}
    assert sorted(brokers) == [0, 1], md["brokers"]
    assert brokers[0].endswith(f":{broker.port}") and brokers[1].endswith(f":{broker.port + 1}"), brokers
    assert md["controllerid"] in brokers, md

    topics = {t["topic"]: t for t in md["topics"]}
    assert "listed" in topics, topics.keys()
    topic = topics["listed"]
    assert "error" not in topic, topic
    parts = sorted(topic["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert "error" not in p, p
        assert p["leader"] in brokers, p
        # One node, no replication: each partition's only replica is its leader.
        assert [r["id"] for r in p["replicas"]] == [p["leader"]], p
        assert [r["id"] for r in p["isrs"]] == [p["leader"]], p
    # Placement puts a new partition on the shard with the fewest: 4 partitions
    # on a fresh broker land on both shards.
    assert {p["leader"] for p in parts} == {0, 1}, parts


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trips_keyed_lines_with_every_codec(broker, codec):
    topic = f"kcat-{codec}"
    create_topic(broker.bootstrap, topic, 4)

    produced = [(f"key-{i % KEYS}", f"value-{i}") for i in range(LINES)]
    stdin = "".join(f"{k}\t{v}\n" for k, v in produced)
    # -K '\t': kcat splits each line into key and value at the first tab.
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K", "\\t", "-z", codec, "-X", "acks=all", input=stdin)

    out = kcat(
        "-C", "-b", broker.bootstrap, "-t", topic,
        "-o", "beginning", "-e",
        "-X", "check.crcs=true",  # librdkafka verifies each batch CRC it fetches
        "-f", "%p\\t%o\\t%k\\t%s\\n",
    ).stdout

    rows = [line.split("\t") for line in out.splitlines() if line]
    assert all(len(r) == 4 for r in rows), [r for r in rows if len(r) != 4][:5]

    # Every line came back exactly once.
    consumed = sorted((k, v) for _, _, k, v in rows)
    assert len(rows) == LINES, f"consumed {len(rows)} lines, produced {LINES}"
    assert consumed == sorted(produced)

    by_partition: dict[int, list[int]] = defaultdict(list)
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)  # key -> [(partition, i)]
    for p, o, k, v in rows:
        by_partition[int(p)].append(int(o))
        by_key[k].append((int(p), int(v.removeprefix("value-"))))

    # Within each partition, offsets run 0, 1, 2, ... in the order fetched.
    assert set(by_partition) <= {0, 1, 2, 3}
    for p, offsets in by_partition.items():
        assert_contiguous_from(offsets, 0, f"{topic}[{p}]")

    # The key partitioner keeps a key on one partition, so its values keep produce order.
    for k, seen in by_key.items():
        assert len({p for p, _ in seen}) == 1, f"{k} spread over partitions {sorted({p for p, _ in seen})}"
        indices = [i for _, i in seen]
        assert indices == sorted(indices), f"values of {k} out of produce order: {indices[:20]}"
