"""Faults for a cluster in network namespaces (cluster_harness.py), Jepsen's nemesis in
our own suite. A schedule is random from a seed it prints, so a failing run replays
with the same faults in the same order (their timing against the workload varies).

Fault kinds:
    kill       SIGKILL a node, restart it on its data after a while
    pause      SIGSTOP a node (a long GC pause), SIGCONT after a while
    isolate    cut one node off from the other nodes, both ways
    partition  split the nodes into a majority and a minority (with five: 3 | 2)
    bridge     two halves that only one node connects (with three: 1 - 2 - 3)
    one-way    one node hears nothing from the others, but its own packets go out
    loss       every node drops a share of the packets from the other nodes, at random
               (iptables' `statistic` match; this kernel has no netem)
    clock      one node's wall clock jumps by a minute to a day, either way (libfaketime;
               the cluster must be started with fake_clock=True)
    disk-full  the node whose data directory is on a small filesystem of its own (the
               cluster's small_disk_node) finds it full: a ballast file takes every block
    elect      preferred-leader election for every partition: leaders that earlier faults
               moved are transferred back while load runs (only useful mixed)
    delay      the traffic between nodes is delayed by up to 400 ms a frame
    dup        frames between nodes arrive twice (the copy on a second connection)
    reorder    copies of frames between nodes arrive 0.5-3 s late, after newer ones
               (the last three through netproxy.py: the cluster must be started with
               proxy=True)
    move       one partition of the topic moves: one of its replicas is swapped for a node
               that holds none (with more nodes than replicas), or its replicas are
               rotated, which moves its preferred leader (AlterPartitionReassignments, by
               `caudal-loadgen reassign`); the move goes on while the next faults run

Network faults touch only traffic between nodes: clients (in the root namespace, on
the bridge's address) still reach every node, as in Jepsen's Kafka tests. Every fault
is healed by `heal()`, which the runner calls at the end whatever happened.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster_harness import Cluster, Node

KINDS = ("kill", "pause", "isolate", "partition", "bridge", "one-way", "loss", "clock", "disk-full", "elect", "move",
         "delay", "dup", "reorder")

# Kinds that need the proxy between the nodes (Cluster(proxy=True)).
PROXY_KINDS = ("delay", "dup", "reorder")

# Kinds aimed at a partition's leader when the nemesis knows the topic: the time until
# that partition acknowledges again is the fault's recovery time.
LEADER_KINDS = ("kill", "pause", "isolate", "partition", "one-way")


def _iptables(node: Node, *args: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables", "-w", "5", *args],
        capture_output=True,
        text=True,
        timeout=15,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} in {node.netns} failed: {proc.stderr.strip()}")


def nemesis_seed() -> int:
    """The seed from CAUDAL_NEMESIS_SEED (to replay a run), else a random one."""
    seed = os.environ.get("CAUDAL_NEMESIS_SEED")
    return int(seed) if seed else random.randrange(1 << 31)


def iptables_works(c: Cluster) -> str | None:
    """None when iptables can filter in the cluster's namespaces, else why not."""
    try:
        _iptables(c.nodes[0], "-S")
        return None
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return str(e)


@dataclass
class Event:
    """One fault as injected: when (seconds from the start), what, on which nodes."""

    at: float
    kind: str
    nodes: list[int]
    held: float
    healed_at: float = -1.0
    # The partition whose leader it hit (leader kinds, when the topic is known).
    partition: int | None = None
    # Wall-clock times (time.time()) of injection and heal, to line up with a history.
    wall_at: float = 0.0
    wall_healed: float = 0.0


@dataclass
class Nemesis:
    """Runs a random schedule of `kinds` faults against `cluster` from `seed`."""

    cluster: Cluster
    seed: int
    kinds: tuple[str, ...] = KINDS
    hold: tuple[float, float] = (2.0, 5.0)
    quiet: tuple[float, float] = (1.0, 3.0)
    events: list[Event] = field(default_factory=list)
    # The workload's topic: leader kinds then hit the leader of one of its partitions.
    topic: str | None = None
    # caudal-loadgen, which sends the reassignments of `move`.
    loadgen: Path | None = None
    # What each move asked for, and how the cluster answered.
    moves: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._start = time.monotonic()

    # -- faults --------------------------------------------------------------------

    def _others(self, node: Node) -> list[Node]:
        return [n for n in self.cluster.nodes if n is not node and n.proc is not None]

    def _cut(self, a: list[Node], b: list[Node]) -> None:
        """Drops every packet between the nodes of `a` and those of `b`, both ways."""
        for x in a:
            for y in b:
                _iptables(x, "-A", "INPUT", "-s", y.host, "-j", "DROP")
                _iptables(y, "-A", "INPUT", "-s", x.host, "-j", "DROP")

    def _inject(self, kind: str, node: Node) -> list[int]:
        """Injects `kind` around `node`; returns the nodes it touched."""
        nodes = [n for n in self.cluster.nodes if n.proc is not None]
        if kind == "kill":
            node.kill()
        elif kind == "pause":
            node.pause()
        elif kind == "isolate":
            self._cut([node], self._others(node))
        elif kind == "partition":
            # Majority and minority: the minority holds `node`.
            shuffled = [node] + self.rng.sample(self._others(node), len(nodes) - 1)
            minority = shuffled[: (len(nodes) - 1) // 2]
            self._cut(minority, shuffled[len(minority):])
            return [n.id for n in minority]
        elif kind == "bridge":
            # Two halves that only `node` connects (Jepsen's bridge).
            others = self.rng.sample(self._others(node), len(nodes) - 1)
            half = len(others) // 2
            self._cut(others[:half], others[half:])
        elif kind == "one-way":
            for other in self._others(node):
                _iptables(node, "-A", "INPUT", "-s", other.host, "-j", "DROP")
        elif kind == "clock":
            # A jump of a minute to a day, either way (NTP stepping a clock, a VM
            # resumed): timers run on the monotonic clock, wall time is what moves.
            seconds = self.rng.randint(60, 86_400) * self.rng.choice((1, -1))
            node.clock_file.write_text(f"{seconds:+d}\n")
        elif kind == "disk-full":
            # The node with a small filesystem of its own (whichever node was picked):
            # a ballast file takes every free block.
            small = self.cluster.small_disk_node
            if small is None:
                return []
            node = self.cluster.node(small)
            st = os.statvfs(node.data_dir)
            subprocess.run(
                ["fallocate", "-l", str(st.f_bavail * st.f_frsize), str(node.data_dir / "ballast")],
                capture_output=True, timeout=30,
            )
        elif kind == "elect":
            self._elect_preferred_leaders()
            return []
        elif kind == "move":
            self._move_a_partition()
            return []
        elif kind in PROXY_KINDS:
            if not getattr(self.cluster, "proxy", False):
                return []
            self.cluster.set_proxy_mode(kind)
            return [n.id for n in nodes]
        elif kind == "loss":
            for n in nodes:
                for other in self._others(n):
                    _iptables(n, "-A", "INPUT", "-s", other.host, "-m", "statistic",
                              "--mode", "random", "--probability", "0.25", "-j", "DROP")
            return [n.id for n in nodes]
        else:
            raise ValueError(f"unknown fault kind {kind}")
        return [node.id]

    def _elect_preferred_leaders(self) -> None:
        """Preferred-leader election for every partition (ElectLeaders, as
        kafka-leader-election does): each leader that a fault moved off its partition's
        first replica is transferred back. Refusals (no election needed, a replica out of
        sync) are part of the game."""
        from confluent_kafka import ElectionType
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
        try:
            admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=15)
        except Exception:  # noqa: BLE001 - any outcome of the election is acceptable
            pass

    def _topic_metadata(self):
        """The cluster's metadata for the workload's topic (raises when none comes in 3 s)."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.cluster.bootstrap}).list_topics(self.topic, timeout=3)

    def _move_a_partition(self) -> None:
        """Starts moving one partition of the topic: a replica swapped for a node that
        holds none, or, when every node holds one, its replicas rotated. Refusals (a move
        already under way, a node down) are part of the game and recorded."""
        if self.topic is None or self.loadgen is None:
            return
        try:
            md = self._topic_metadata()
            parts = md.topics[self.topic].partitions
            brokers = sorted(md.brokers)
        except Exception as e:  # noqa: BLE001 - no metadata now: no move
            self.moves.append(f"no metadata: {e}")
            return
        partition = self.rng.choice(sorted(parts))
        replicas = list(parts[partition].replicas)
        spare = [b for b in brokers if b not in replicas]
        if spare and replicas:
            replicas[self.rng.randrange(len(replicas))] = self.rng.choice(spare)
        else:
            replicas = replicas[1:] + replicas[:1]
        running = [n for n in self.cluster.nodes if n.is_running() and not n.paused]
        via = self.rng.choice(running).bootstrap if running else self.cluster.bootstrap.split(",")[0]
        out = subprocess.run(
            [str(self.loadgen), "reassign", "--bootstrap", via, "--topic", self.topic,
             "--partition", str(partition), "--replicas", ",".join(map(str, replicas))],
            capture_output=True, text=True, timeout=60,
        )
        answer = "started" if out.returncode == 0 else out.stderr.strip().splitlines()[-1:]
        self.moves.append(f"p{partition} -> {replicas}: {answer}")

    def _a_leader(self) -> tuple[Node, int] | None:
        """The node leading a random partition of the topic, and that partition; None
        when the topic or its leaders are unknown (then a random node is hit)."""
        if self.topic is None:
            return None
        try:
            parts = self._topic_metadata().topics[self.topic].partitions
        except Exception:  # noqa: BLE001 - no metadata now: hit a random node
            return None
        led = sorted((p, m.leader) for p, m in parts.items() if m.leader >= 0)
        if not led:
            return None
        partition, broker = self.rng.choice(led)
        node = self.cluster.node_of_broker(broker)
        return (node, partition) if node.proc is not None else None

    def faults(self, started_unix_ms: int) -> list[dict]:
        """The faults injected, on the clock of a history that started at
        `started_unix_ms` (for `caudal-loadgen recovery`)."""
        def ms(wall: float) -> int:
            return max(int(wall * 1000) - started_unix_ms, 0)

        return [
            {"kind": e.kind, "partition": e.partition, "at_ms": ms(e.wall_at), "healed_ms": ms(e.wall_healed)}
            for e in self.events
            if e.wall_healed > 0
        ]

    def heal(self) -> None:
        """Ends every fault: network rules flushed, paused nodes resumed, killed nodes
        started again on their data."""
        for n in self.cluster.nodes:
            if n.proc is None:
                continue
            try:
                _iptables(n, "-F")
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
        if getattr(self.cluster, "proxy", False):
            self.cluster.set_proxy_mode("none")
        for n in self.cluster.nodes:
            if n.clock_file.exists():
                n.clock_file.write_text("+0\n")
            (n.data_dir / "ballast").unlink(missing_ok=True)
        for n in self.cluster.nodes:
            if n.proc is None:
                continue
            if n.paused:
                n.resume()
            if not n.is_running():
                n.start()

    # -- schedule ------------------------------------------------------------------

    def _run(self, seconds: float) -> None:
        end = self._start + seconds
        try:
            while not self._stop.wait(self.rng.uniform(*self.quiet)):
                hold = self.rng.uniform(*self.hold)
                if time.monotonic() + hold > end:
                    break
                kind = self.rng.choice(self.kinds)
                running = [n for n in self.cluster.nodes if n.proc is not None]
                node = self.rng.choice(running)
                partition = None
                if kind in LEADER_KINDS:
                    aimed = self._a_leader()
                    if aimed is not None:
                        node, partition = aimed
                event = Event(round(time.monotonic() - self._start, 2), kind, [node.id], round(hold, 2))
                event.partition = partition
                self.events.append(event)
                event.wall_at = time.time()
                event.nodes = self._inject(kind, node)
                self._stop.wait(hold)
                self.heal()
                event.wall_healed = time.time()
                event.healed_at = round(time.monotonic() - self._start, 2)
        except BaseException as e:  # reported by stop()
            self._error = e
        finally:
            try:
                self.heal()
            except BaseException as e:
                self._error = self._error or e

    def start(self, seconds: float) -> None:
        """Injects faults for at most `seconds` in a thread, healing each before the
        next and everything at the end."""
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stops the schedule, waits for its last heal, and raises what went wrong in it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the nemesis did not stop within {timeout:.0f}s")
        if self._error is not None:
            raise RuntimeError(f"the nemesis failed: {self._error}") from self._error

    def describe(self) -> str:
        lines = [f"nemesis seed {self.seed} (replay: CAUDAL_NEMESIS_SEED={self.seed}), kinds {','.join(self.kinds)}:"]
        for e in self.events:
            leader = f" (leader of p{e.partition})" if e.partition is not None else ""
            lines.append(f"  {e.at:7.2f}s {e.kind:8} node {e.nodes}{leader} for {e.held}s, healed at {e.healed_at}s")
        lines.extend(f"  move {m}" for m in self.moves)
        return "\n".join(lines)
