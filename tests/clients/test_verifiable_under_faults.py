"""Kafka's own VerifiableProducer and VerifiableConsumer (the Java client, as Kafka's
system tests drive it) against three Caudal nodes while a nemesis kills and isolates
nodes, checked from what the tools print (verifiable.py): no acknowledged value lost,
no two values at one offset, no committed offset going backwards.

With CAUDAL_VERIFIABLE_KAFKA=1 the same run goes against three Apache Kafka 4.4 nodes
(kafka_cluster.py) and prints the same counts, for docs/reliability.md. Replay a
schedule with CAUDAL_NEMESIS_SEED=<seed>. Skipped with the reason where network
namespaces, iptables or Java are missing. Every wait is bounded.
"""

from __future__ import annotations

import os

import pytest

from cluster_harness import Cluster, cluster_or_skip
from nemesis import iptables_works, nemesis_seed
from verifiable import JavaUnavailable, VerifiableRun, java_libs

CLUSTER_ARGS = ("--replica-lag-time-max-ms", "1500")
KINDS = ("kill", "isolate")
SECONDS = float(os.environ.get("CAUDAL_VERIFIABLE_SECONDS", "20"))


def java_or_skip() -> None:
    """Skips the test (with the reason) where Java or Kafka's jars cannot be had."""
    try:
        java_libs()
    except JavaUnavailable as e:
        pytest.skip(f"no Java client here: {e}")


def run_or_skip(c: Cluster) -> dict:
    """The tools under the nemesis against `c` (skipped where iptables cannot filter)."""
    why = iptables_works(c)
    if why is not None:
        pytest.skip(f"iptables cannot filter in the namespaces here: {why}")
    return VerifiableRun(c, KINDS, nemesis_seed(), seconds=SECONDS).run()


@pytest.mark.timeout(240)
def test_kafkas_verifiable_clients_lose_nothing_on_caudal_under_faults():
    java_or_skip()
    with cluster_or_skip(lambda: Cluster(extra_args=CLUSTER_ARGS)) as c:
        r = run_or_skip(c)
        context = (f"seed {r['seed']} (CAUDAL_NEMESIS_SEED={r['seed']}), tools' output in {r['output']}, "
                   f"examples {r['examples']}\n{c.logs()}")
        assert r["acked"] > 0, f"nothing acknowledged under faults\n{context}"
        assert r["commits_ok"] > 0, f"the group committed nothing\n{context}"
        assert r["lost"] == 0 and r["unseen"] == 0, f"acknowledged values never read\n{context}"
        assert r["inconsistent"] == 0, f"two values at one offset\n{context}"
        assert r["committed_backwards"] == 0, f"a committed offset went backwards\n{context}"
        assert r["caught_up"], f"the group did not read every acknowledged value\n{context}"
        assert not r["unclean_stops"], f"the tools did not shut down cleanly: {r['unclean_stops']}\n{context}"


@pytest.mark.skipif(os.environ.get("CAUDAL_VERIFIABLE_KAFKA") != "1",
                    reason="Kafka beside Caudal with the Verifiable tools: CAUDAL_VERIFIABLE_KAFKA=1")
@pytest.mark.timeout(600)
def test_kafkas_verifiable_clients_on_kafka_under_the_same_faults():
    # The comparison for docs/reliability.md: the same run against Apache Kafka 4.4
    # (three KRaft nodes, min.insync.replicas=2, no unclean election); counts printed,
    # not asserted.
    from kafka_cluster import KafkaCluster

    java_or_skip()
    with cluster_or_skip(KafkaCluster) as c:
        r = run_or_skip(c)
    print(
        f"--- Kafka under {','.join(KINDS)} (seed {r['seed']}): {r['acked']} acknowledged, {r['failed']} failed, "
        f"{r['consumed']} consumed; lost {r['lost']}, unseen {r['unseen']}, inconsistent {r['inconsistent']}, "
        f"committed backwards {r['committed_backwards']}, duplicates {r['duplicates']}"
    )
