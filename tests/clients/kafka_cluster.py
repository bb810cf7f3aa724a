"""Three Apache Kafka nodes (KRaft, combined broker and controller) in network
namespaces, laid out like cluster_harness.py's Caudal nodes, so that the same nemesis
(nemesis.py) and the same workload (`caudal-loadgen verify`) run against both.

    namespace cdl<tag>-<n>: eth0 <subnet>.<n>/24, Kafka on :9092, its controller on :9093

The classpath comes from bench/kafka/kafka.sh (Kafka 4.4.0, docs/kafka.md); the server
settings are those of `kafka.sh start-cluster`: a static quorum of the three,
`min.insync.replicas=2`, unclean leader election off (Kafka's default). Every wait has
a deadline.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from caudal_harness import REPO
from cluster_harness import Cluster, Node

KAFKA_SH = REPO / "bench" / "kafka" / "kafka.sh"
CONTROLLER_PORT = 9093
START_TIMEOUT_S = 120.0


def kafka_libs() -> Path:
    """The classpath directory (resolved with Maven once, then cached)."""
    out = subprocess.run(["bash", str(KAFKA_SH), "libs"], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"kafka.sh libs failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip())


class KafkaNode(Node):
    """One Kafka JVM in its namespace; kill, pause and restart as a Caudal node."""

    def __init__(self, cluster: "KafkaCluster", node_id: int):
        super().__init__(cluster, node_id)
        self.props = self.data_dir / "server.properties"

    def write_props(self, voters: str) -> None:
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{self.host}:9092,CONTROLLER://{self.host}:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://{self.host}:9092,CONTROLLER://{self.host}:{CONTROLLER_PORT}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir / 'data'}",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "share.coordinator.state.topic.replication.factor=3",
            "share.coordinator.state.topic.min.isr=2",
            "group.initial.rebalance.delay.ms=0",
            "min.insync.replicas=2",
            "unclean.leader.election.enable=false",
        ]
        self.props.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        c = self.cluster
        return [
            "ip", "netns", "exec", self.netns,
            "java", "-Xmx512M", "-Xms512M", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j2.configurationFile={c.root / 'log4j2-server.properties'}",
            "-cp", f"{c.libs}/*", "kafka.Kafka", str(self.props),
        ]

    def start(self) -> None:
        self.wait_started(self.launch())

    def launch(self) -> int:
        """Starts the JVM; returns where its server.log stood."""
        server_log = self.data_dir / "server.log"
        offset = server_log.stat().st_size if server_log.exists() else 0
        env = dict(os.environ, **self.clock_env())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.paused = False
        return offset

    def wait_started(self, offset: int) -> None:
        """Until the node says it started (past `offset` of its server.log) and accepts."""
        server_log = self.data_dir / "server.log"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafka node {self.id} exited with {self.proc.returncode}\n{self.tail()}")
            try:
                with open(server_log, "rb") as f:
                    f.seek(offset)
                    started = b"Kafka Server started" in f.read()
            except OSError:
                started = False
            if started and self.accepts():
                return
            time.sleep(0.2)
        raise RuntimeError(f"kafka node {self.id} not started within {START_TIMEOUT_S:.0f}s\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The first errors of the node's server.log, then its last lines."""
        try:
            text = (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            text = self.log_text()
        all_lines = text.splitlines()
        errors = [line for line in all_lines if " ERROR " in line][:5]
        return "\n".join(errors + ["..."] + all_lines[-lines:])


class KafkaCluster(Cluster):
    """Three Kafka nodes in network namespaces. Use as a context manager."""

    def __init__(self, nodes: int = 3, fake_clock: bool = False, small_disk_node: int | None = None):
        super().__init__(nodes=nodes, fake_clock=fake_clock, small_disk_node=small_disk_node)
        self.libs = kafka_libs()
        # The broker logs INFO to its server.log; the tools WARN to stderr.
        (self.root / "log4j2-server.properties").write_text(
            "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\n"
            "appender.file.type = File\nappender.file.name = file\n"
            "appender.file.fileName = ${sys:kafka.logs.dir}/server.log\n"
            "appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        )
        (self.root / "log4j2-tools.properties").write_text(
            "rootLogger.level = WARN\nrootLogger.appenderRef.stderr.ref = stderr\n"
            "appender.stderr.type = Console\nappender.stderr.name = stderr\nappender.stderr.target = SYSTEM_ERR\n"
            "appender.stderr.layout.type = PatternLayout\nappender.stderr.layout.pattern = [%d] %p %m (%c)%n\n"
        )

    def __enter__(self) -> "KafkaCluster":
        self._make_network_or_clean_up()
        try:
            self.nodes = [KafkaNode(self, n) for n in range(1, self.count + 1)]
            self._prepare_small_disk()
            voters = ",".join(f"{n.id}@{n.host}:{CONTROLLER_PORT}" for n in self.nodes)
            cluster_id = self._tool("kafka.tools.StorageTool", "random-uuid").strip()
            for n in self.nodes:
                n.write_props(voters)
                self._tool("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(n.props))
            # All at once: a node registers only once a quorum of the three runs.
            offsets = [n.launch() for n in self.nodes]
            for n, offset in zip(self.nodes, offsets):
                n.wait_started(offset)
        except BaseException as e:
            # Kept for reading: the root goes only after a clean exit.
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def node_of_broker(self, broker_id: int) -> "KafkaNode":
        return self.node(broker_id)

    def _tool(self, *args: str) -> str:
        out = subprocess.run(
            ["java", "-Xmx256M", f"-Dlog4j2.configurationFile={self.root / 'log4j2-tools.properties'}",
             "-cp", f"{self.libs}/*", *args],
            capture_output=True, text=True, timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout
