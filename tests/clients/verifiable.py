"""Kafka's own VerifiableProducer and VerifiableConsumer (the tools Kafka's system tests
drive) against a cluster while a nemesis (nemesis.py) injects faults, and a check of
what they printed.

    VerifiableProducer   acks=all, idempotent (retries unbounded, as the Java client's
                         defaults are; the tool itself turns retries off), increasing
                         integers as values, throttled to a rate, to a topic of 3
                         partitions, replication 3, min.insync.replicas=2
    VerifiableConsumer   N members of one group (the classic protocol, range assignor),
                         --verbose, committing synchronously after every poll; a third
                         into the load one member leaves (SIGTERM) and a new one joins,
                         so partitions change hands while the faults run

Both run in the root namespace against `c.bootstrap` and print one JSON object a line,
which goes to a file in the cluster's directory (kept when a test fails). After the
faults are healed the producer is stopped (SIGTERM: it flushes, then prints
shutdown_complete), the group is given a bounded time to read every acknowledged
value, and the consumers are stopped the same way. `check` then reports:

    lost                 acknowledged, never consumed, below the highest offset consumed
                         in its partition
    unseen               acknowledged, never consumed, above it (the group never got there)
    inconsistent         two values at one (partition, offset), among the acknowledgements
                         and the records consumed, or a value consumed elsewhere than where
                         it was acknowledged
    committed_backwards  a successful commit below the highest offset the group had
                         committed successfully before it, in the same partition
    duplicates           records the group consumed more than once (allowed: a group reads
                         at least once) and values in the log twice (log_duplicates)

Why a commit going backwards is an anomaly even across a rebalance: the Java consumer
commits with its generation and member id, and refuses to commit at all when it has no
stable generation (CommitFailedException, RebalanceInProgressException); the broker
refuses commits from older generations (ILLEGAL_GENERATION). A member that takes over
a partition starts from the committed offset, so its commits are at or above every
commit acknowledged before. Only an acknowledged commit that was then forgotten (or an
unfenced commit from a member that lost the partition) brings a later commit below an
earlier one. Events are merged across members by their timestamps (taken right after
the commit returned), which cannot reorder a handover: the next owner's first commit
comes a join, a sync, an offset fetch and a fetch later.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

from confluent_kafka.admin import AdminClient, NewTopic

from caudal_harness import unique_name, wait_for_topic
from cluster_harness import Cluster
from nemesis import Nemesis

PRODUCER = "org.apache.kafka.tools.VerifiableProducer"
CONSUMER = "org.apache.kafka.tools.VerifiableConsumer"
PARTITIONS = 3

# The Java client's defaults for an idempotent producer, but for a bound on each send
# (so that stopping the producer after the faults is bounded too) and a shorter request
# timeout (a request to an isolated leader fails over in 10 s, not 30 s).
PRODUCER_CONFIG = {
    "enable.idempotence": "true",
    "acks": "all",
    "retries": "2147483647",
    "max.in.flight.requests.per.connection": "5",
    "delivery.timeout.ms": "30000",
    "request.timeout.ms": "10000",
}

# The tools log WARN and above to stderr, so that their stdout is only JSON.
TOOLS_LOG4J2 = (
    "rootLogger.level = WARN\nrootLogger.appenderRef.stderr.ref = stderr\n"
    "appender.stderr.type = Console\nappender.stderr.name = stderr\nappender.stderr.target = SYSTEM_ERR\n"
    "appender.stderr.layout.type = PatternLayout\nappender.stderr.layout.pattern = [%d] %p %m (%c)%n\n"
)

# Bounds: a producer's flush after SIGTERM (each send is bounded by delivery.timeout.ms),
# a consumer's close (commitSync and close each within their own timeouts).
PRODUCER_STOP_S = 50.0
CONSUMER_STOP_S = 45.0
ASSIGN_TIMEOUT_S = 60.0
SESSION_TIMEOUT_MS = 10_000


class JavaUnavailable(RuntimeError):
    """Java or Kafka's jars cannot be had here; the message says why."""


def java_libs() -> Path:
    """The Kafka 4.4 classpath directory; raises JavaUnavailable where Java or Maven (to
    resolve the jars the first time) is missing."""
    if shutil.which("java") is None:
        raise JavaUnavailable("java is not on PATH (OpenJDK 17: make client-deps)")
    from kafka_cluster import kafka_libs

    try:
        return kafka_libs()
    except RuntimeError as e:
        if "mvn is missing" in str(e):
            raise JavaUnavailable(str(e)) from e
        raise


class JsonLines:
    """A tool's stdout file, parsed as it grows: its JSON events in order, and the lines
    that were not JSON."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict] = []
        self.other: list[str] = []
        self._offset = 0

    def poll(self) -> list[dict]:
        """Parses the complete lines written since the last call; returns their events."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        new = []
        for line in chunk[:end].decode(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    new.append(json.loads(line))
                    continue
                except ValueError:
                    pass
            if line.strip():
                self.other.append(line)
        self.events.extend(new)
        return new


class Tool:
    """One Verifiable tool's JVM: JSON on stdout to `<name>.jsonl`, logs to `<name>.log`."""

    def __init__(self, name: str, cmd: list[str], run_dir: Path):
        self.name = name
        self.cmd = cmd
        self.out_path = run_dir / f"{name}.jsonl"
        self.err_path = run_dir / f"{name}.log"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.out = JsonLines(self.out_path)

    def poll(self) -> list[dict]:
        """The events printed since the last poll."""
        return self.out.poll()

    def terminate(self) -> None:
        """SIGTERM: the tool's shutdown hook flushes or closes, then prints shutdown_complete."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        """Waits for the process to exit within `timeout`; true if it did."""
        try:
            self.proc.wait(timeout=max(timeout, 0.0))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """SIGKILL, for the paths where it did not stop in time (or the test failed)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def shut_down(self) -> bool:
        """True once the tool printed shutdown_complete."""
        self.poll()
        return any(e.get("name") == "shutdown_complete" for e in self.out.events)

    def stderr_tail(self, lines: int = 30) -> str:
        """The end of its log, for failure messages."""
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_summary(self, top: int = 8) -> dict[str, int]:
        """Its WARN and ERROR log lines, numbers and timestamps blanked, most frequent first:
        what the Java client saw go wrong."""
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return {}
        seen: Counter = Counter()
        for line in text.splitlines():
            m = re.match(r"\[[^\]]*\] (WARN|ERROR) (.*)", line)
            if m:
                msg = re.sub(r"\d+", "N", re.sub(r"verifiable(-group)?-[0-9a-f]{8}", r"<verifiable\1>", m.group(2)))
                seen[f"{m.group(1)} {msg[:200]}"] += 1
        return dict(seen.most_common(top))


def java_cmd(libs: Path, run_dir: Path, main: str, *args: str) -> list[str]:
    """The command that runs a Kafka tool, as KafkaCluster._tool does."""
    return ["java", "-Xmx256M", f"-Dlog4j2.configurationFile={run_dir / 'log4j2-tools.properties'}",
            "-cp", f"{libs}/*", main, *args]


def create_topic(c: Cluster, topic: str, timeout: float = 30.0) -> None:
    """The topic the tools use: 3 partitions, 3 replicas, min.insync.replicas=2; waits
    (bounded) until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[topic].result(timeout=timeout)
    wait_for_topic(admin, topic, PARTITIONS, timeout=timeout)


def check(produced: list[dict], consumed: list[list[dict]], examples: int = 10) -> dict:
    """The anomalies in the producer's events and each consumer's events (see the module
    docstring); a dict of counts, with a few examples of each anomaly."""
    acked: dict[str, tuple[int, int]] = {}
    acked_at: dict[tuple[int, int], set[str]] = defaultdict(set)
    failed: set[str] = set()
    failures: Counter = Counter()
    sent = None
    for e in produced:
        name = e.get("name")
        if name == "producer_send_success":
            acked[e["value"]] = (e["partition"], e["offset"])
            acked_at[(e["partition"], e["offset"])].add(e["value"])
        elif name == "producer_send_error":
            failed.add(e["value"])
            failures[f"{e.get('exception', '?').split('.')[-1]}: {re.sub(r'[0-9]+', 'N', e.get('message') or '')}"] += 1
        elif name == "tool_data":
            sent = e.get("sent")

    found: dict[str, list[str]] = defaultdict(list)

    def note(kind: str, text: str) -> None:
        if len(found[kind]) < examples:
            found[kind].append(text)

    # Inconsistent offsets among the acknowledgements.
    inconsistent = 0
    for (p, o), values in sorted(acked_at.items()):
        if len(values) > 1:
            inconsistent += 1
            note("inconsistent", f"p{p} offset {o} acknowledged for values {sorted(values)}")

    # What the group read: every record_data, in each member's order.
    read_at: dict[tuple[int, int], set[str]] = defaultdict(set)
    where: dict[str, set[tuple[int, int]]] = defaultdict(set)
    records = 0
    highest_read: dict[int, int] = {}
    for events in consumed:
        for e in events:
            if e.get("name") != "record_data":
                continue
            records += 1
            p, o, v = e["partition"], e["offset"], e["value"]
            read_at[(p, o)].add(v)
            where[v].add((p, o))
            highest_read[p] = max(highest_read.get(p, -1), o)
    for (p, o), values in sorted(read_at.items()):
        if len(values) > 1:
            inconsistent += 1
            note("inconsistent", f"p{p} offset {o} read as values {sorted(values)}")
        elif acked_at.get((p, o)) and values != acked_at[(p, o)]:
            inconsistent += 1
            note("inconsistent", f"p{p} offset {o} acknowledged as {sorted(acked_at[(p, o)])}, "
                                 f"read as {sorted(values)}")
    for v, (p, o) in sorted(acked.items(), key=lambda kv: kv[1]):
        if v in where and (p, o) not in where[v]:
            inconsistent += 1
            note("inconsistent", f"value {v} acknowledged at p{p} offset {o}, read at {sorted(where[v])}")

    lost = unseen = 0
    for v, (p, o) in sorted(acked.items(), key=lambda kv: kv[1]):
        if v in where:
            continue
        if o < highest_read.get(p, -1):
            lost += 1
            note("lost", f"value {v} acknowledged at p{p} offset {o}, never read (read up to {highest_read[p]})")
        else:
            unseen += 1
            note("unseen", f"value {v} acknowledged at p{p} offset {o}, never read "
                           f"(read up to {highest_read.get(p, 'nothing')})")
    log_duplicates = sum(1 for places in where.values() if len(places) > 1)
    for v, places in where.items():
        if len(places) > 1:
            note("log_duplicates", f"value {v} at {sorted(places)}")

    # Commits, merged across members in time order.
    commits = []
    assigned = 0
    for member, events in enumerate(consumed):
        for i, e in enumerate(events):
            if e.get("name") == "offsets_committed":
                commits.append((e.get("timestamp", 0), member, i, e))
            elif e.get("name") == "partitions_assigned":
                assigned += 1
    commits.sort(key=lambda t: t[:3])
    committed: dict[int, tuple[int, int, int]] = {}
    backwards = commits_ok = commits_failed = 0
    for ts, member, _, e in commits:
        if not e.get("success"):
            commits_failed += 1
            continue
        commits_ok += 1
        for entry in e.get("offsets", []):
            p, o = entry["partition"], entry["offset"]
            before = committed.get(p)
            if before is not None and o < before[0]:
                backwards += 1
                note("committed_backwards", f"p{p}: member {member} committed {o} at {ts}, after member "
                                            f"{before[1]} committed {before[0]} at {before[2]}")
            if before is None or o >= before[0]:
                committed[p] = (o, member, ts)

    distinct = len(read_at)
    return {
        "sent": sent,
        "acked": len(acked),
        "failed": len(failed),
        "unknown": None if sent is None else sent - len(acked) - len(failed),
        "failed_but_read": len(failed & where.keys()),
        "consumed": records,
        "consumed_distinct": distinct,
        "lost": lost,
        "unseen": unseen,
        "inconsistent": inconsistent,
        "committed_backwards": backwards,
        "duplicates": records - distinct,
        "log_duplicates": log_duplicates,
        "commits_ok": commits_ok,
        "commits_failed": commits_failed,
        "assignments": assigned,
        "committed": {p: o for p, (o, _, _) in sorted(committed.items())},
        "send_errors": dict(failures.most_common(6)),
        "examples": dict(found),
    }


class VerifiableRun:
    """One run of the tools against `c` under a nemesis of `kinds` from `seed`: start it
    with `run()`, which returns the report and leaves no process behind."""

    def __init__(self, c: Cluster, kinds: tuple[str, ...], seed: int, seconds: float = 20.0,
                 throughput: int = 300, consumers: int = 2, settle: float = 60.0, bounce: bool = True):
        self.c = c
        self.seconds = seconds
        self.throughput = throughput
        self.settle = settle
        self.libs = java_libs()
        self.topic = unique_name("verifiable")
        self.group = unique_name("verifiable-group")
        self.dir = c.root / self.topic
        self.dir.mkdir()
        (self.dir / "log4j2-tools.properties").write_text(TOOLS_LOG4J2)
        self.nemesis = Nemesis(c, seed, kinds, topic=self.topic)
        self.producer: Optional[Tool] = None
        self.consumers: list[Tool] = []
        self.n_consumers = consumers
        # One member leaves a third into the load and a new one joins: partitions change
        # hands (two rebalances) while faults run.
        self.bounce = bounce
        self.left: list[Tool] = []
        self.timings: dict[str, float] = {}

    # -- the tools -------------------------------------------------------------------

    def start_consumer(self, i: int) -> Tool:
        """A VerifiableConsumer in the run's group, printing every record, committing
        synchronously after every poll (the tool's default without --enable-autocommit).
        Its session times out in 10 s, not 45: a member whose LeaveGroup was lost to a
        fault, or undone by a coordinator failover (a classic group's members are written
        to __consumer_offsets only when a generation completes, in Kafka as in Caudal),
        holds a rebalance until its session expires."""
        cmd = java_cmd(self.libs, self.dir, CONSUMER, "--bootstrap-server", self.c.bootstrap,
                       "--topic", self.topic, "--group-id", self.group, "--reset-policy", "earliest",
                       "--session-timeout", str(SESSION_TIMEOUT_MS), "--verbose")
        return Tool(f"consumer{i}", cmd, self.dir)

    def start_producer(self) -> Tool:
        """The VerifiableProducer: acks=all, idempotent, `throughput` values a second, for
        at most twice the load time (it is stopped before)."""
        config = self.dir / "producer.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in PRODUCER_CONFIG.items()))
        cmd = java_cmd(self.libs, self.dir, PRODUCER, "--bootstrap-server", self.c.bootstrap,
                       "--topic", self.topic, "--acks", "-1", "--throughput", str(self.throughput),
                       "--max-messages", str(int(self.throughput * self.seconds * 2)),
                       "--command-config", str(config))
        return Tool("producer", cmd, self.dir)

    def tools(self) -> list[Tool]:
        """Every tool started so far."""
        return ([self.producer] if self.producer else []) + self.consumers

    def context(self) -> str:
        """The nemesis's schedule, where the tools' output is, and their logs' tails."""
        lines = [self.nemesis.describe(), f"topic {self.topic}, group {self.group}, output in {self.dir}"]
        for t in self.tools():
            code = t.proc.poll()
            lines.append(f"--- {t.name} (exit {code}): {' '.join(t.cmd[-12:])}\n{t.stderr_tail()}")
        return "\n".join(lines)

    def _exited_early(self) -> Optional[Tool]:
        """A tool that exited on its own, which none should before it is stopped."""
        return next((t for t in self.tools() if t not in self.left and t.proc.poll() is not None), None)

    def _wait_load(self, timeout: float) -> None:
        """Waits `timeout` seconds of load; fails if a tool exits meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            early = self._exited_early()
            if early is not None:
                raise AssertionError(f"{early.name} exited during the load\n{self.context()}")
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))

    def _wait_assigned(self) -> None:
        """Until the group has every partition assigned to some member (bounded)."""
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        owned: dict[int, set[int]] = {}
        while time.monotonic() < deadline:
            for i, t in enumerate(self.consumers):
                for e in t.poll():
                    if e.get("name") == "partitions_assigned":
                        owned[i] = {p["partition"] for p in e["partitions"]}
                    elif e.get("name") == "partitions_revoked":
                        owned[i] = set()
            if set().union(*owned.values()) == set(range(PARTITIONS)):
                return
            early = self._exited_early()
            if early is not None:
                raise AssertionError(f"{early.name} exited before it was stopped\n{self.context()}")
            time.sleep(0.2)
        raise AssertionError(f"the group was not assigned every partition within {ASSIGN_TIMEOUT_S:.0f}s: "
                             f"{owned}\n{self.context()}\n{self.c.logs()}")

    def _wait_read(self, expected: set[str], timeout: float) -> bool:
        """Until the group has read every value of `expected` (bounded); true if it had."""
        read: set[str] = set()
        for t in self.consumers:
            read.update(e["value"] for e in t.out.events if e.get("name") == "record_data")
        deadline = time.monotonic() + timeout
        while True:
            for t in self.consumers:
                read.update(e["value"] for e in t.poll() if e.get("name") == "record_data")
            if expected <= read:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _stop(self, tools: list[Tool], timeout: float) -> list[str]:
        """SIGTERM to each of `tools`, then waits for them (bounded, killed after); the
        names of those that did not shut down cleanly."""
        for t in tools:
            t.terminate()
        deadline = time.monotonic() + timeout
        unclean = []
        for t in tools:
            if not t.wait(deadline - time.monotonic()):
                t.kill()
                unclean.append(f"{t.name} (killed after {timeout:.0f}s)")
            elif not t.shut_down():
                unclean.append(f"{t.name} (exit {t.proc.returncode}, no shutdown_complete)")
        return unclean

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict:
        """Consumers first (until the group owns every partition), then the producer and
        the nemesis for `seconds` (a member leaving and another joining a third into it);
        heals, stops the producer, lets the group read every
        acknowledged value (or `settle` passes), stops the group, and checks. Returns the
        report (also printed)."""
        started = time.monotonic()
        try:
            create_topic(self.c, self.topic)
            self.consumers = [self.start_consumer(i) for i in range(self.n_consumers)]
            self._wait_assigned()
            self.timings["group_ready_s"] = round(time.monotonic() - started, 1)
            self.producer = self.start_producer()
            # Faults end 2 s before the load does.
            load_end = time.monotonic() + self.seconds
            self.nemesis.start(max(self.seconds - 2.0, 1.0))
            unclean = []
            if self.bounce:
                self._wait_load(self.seconds / 3)
                leaving = self.consumers[-1]
                self.left.append(leaving)
                t = time.monotonic()
                unclean += self._stop([leaving], CONSUMER_STOP_S)
                self.timings["member_leave_s"] = round(time.monotonic() - t, 1)
                self.consumers.append(self.start_consumer(len(self.consumers)))
            self._wait_load(load_end - time.monotonic())
            self.nemesis.stop()
            t = time.monotonic()
            unclean += self._stop([self.producer], PRODUCER_STOP_S)
            self.timings["producer_stop_s"] = round(time.monotonic() - t, 1)
            self.producer.poll()
            acked = {e["value"] for e in self.producer.out.events if e.get("name") == "producer_send_success"}
            t = time.monotonic()
            caught_up = self._wait_read(acked, self.settle)
            self.timings["catch_up_s"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            unclean += self._stop([m for m in self.consumers if m not in self.left], CONSUMER_STOP_S)
            self.timings["consumers_stop_s"] = round(time.monotonic() - t, 1)
        finally:
            try:
                self.nemesis.stop()
            except RuntimeError:
                pass  # raised above already, or a failure in flight says more
            for tool in self.tools():
                tool.kill()
        for tool in self.tools():
            tool.poll()
        report = check(self.producer.out.events, [t.out.events for t in self.consumers])
        report["caught_up"] = caught_up
        report["unclean_stops"] = unclean
        report["seed"] = self.nemesis.seed
        report["output"] = str(self.dir)
        report["faults"] = [f"{e.kind} node {e.nodes} for {e.held}s" for e in self.nemesis.events]
        report["client_logs"] = {t.name: t.log_summary() for t in self.tools()}
        report["non_json_stdout"] = {t.name: t.out.other[:5] for t in self.tools() if t.out.other}
        self.timings["total_s"] = round(time.monotonic() - started, 1)
        report["timings"] = self.timings
        self.keep(report)
        print(self.nemesis.describe())
        print(f"topic {self.topic}, group {self.group}, output in {self.dir}")
        print(json.dumps(report, indent=1))
        return report


    def keep(self, report: dict) -> None:
        """With CAUDAL_VERIFIABLE_OUT set, copies the tools' output, the nodes' logs and the
        report to <dir>/<topic>/ (the cluster's directory goes when a test passes)."""
        out = os.environ.get("CAUDAL_VERIFIABLE_OUT")
        if not out:
            return
        dest = Path(out) / self.topic
        shutil.copytree(self.dir, dest)
        for n in self.c.nodes:
            for log in (n.log_path, n.data_dir / "server.log"):
                if log.is_file():
                    shutil.copy(log, dest / f"node{n.id}-{log.name}")
        (dest / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (dest / "nemesis.txt").write_text(self.nemesis.describe() + "\n")

