"""A Caudal cluster for the real-client tests: three nodes as separate processes, each
in its own network namespace on one bridge, one shard each.

    root namespace: bridge cdlbr<tag>, 10.<a>.<b>.254/24   (the clients run here)
    namespace cdl<tag>-<n>: eth0 10.<a>.<b>.<n>/24, node n on :9092, peers on :9192

Every node runs `caudal --node-id n --peers 1@10.a.b.1:9192,2@...,3@...`. The namespaces,
bridge and veths are created per cluster and removed when it stops; the test skips
(with the reason) where they cannot be made (not root, no `ip`). Every wait has a
deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from caudal_harness import TMP_ROOT, session_bin

# Debian's libfaketime (package faketime), thread-safe variant.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
KAFKA_PORT = 9092
PEER_PORT = 9192
# With a proxy between the nodes: node n's peers reach node m at 127.0.0.1:PROXY_PORT+m.
PROXY_PORT = 19200
NETPROXY = Path(__file__).resolve().parent / "netproxy.py"
# A node restarted after a SIGKILL scans its active segments first: after an hour of
# the soak's load that took a debug build 20 s.
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


class ClusterUnavailable(RuntimeError):
    """Network namespaces cannot be made here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise ClusterUnavailable(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def _remove_stale_namespaces() -> None:
    """Namespaces and bridges of earlier runs whose process is gone (killed before it
    cleaned up); each is named after its creator's pid."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0]
        if not name.startswith("cdl") or "-" not in name:
            continue
        pid = name[3:].split("x")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _ip("netns", "delete", name, check=False)
    links = _ip("-o", "link", "show", "type", "bridge", check=False).stdout.split("\n")
    for line in links:
        parts = line.split(": ")
        if len(parts) > 1 and parts[1].startswith("cdlbr"):
            pid = parts[1][5:].split("x")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _ip("link", "delete", parts[1].split("@")[0], check=False)


class Node:
    """One caudal process in its namespace."""

    def __init__(self, cluster: "Cluster", node_id: int):
        self.cluster = cluster
        self.id = node_id
        self.netns = f"{cluster.tag}-{node_id}"
        self.host = f"{cluster.subnet}.{node_id}"
        self.data_dir = cluster.root / f"node{node_id}"
        self.data_dir.mkdir()
        self.log_path = cluster.root / f"node{node_id}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{KAFKA_PORT}"

    @property
    def broker_id(self) -> int:
        """Broker id of its shard 0 (node * 1024 + shard)."""
        return self.id * 1024

    def command(self) -> list[str]:
        return [
            "ip", "netns", "exec", self.netns,
            str(self.cluster.binary),
            "--node-id", str(self.id),
            "--data-dir", str(self.data_dir),
            "--listen", f"{self.host}:{KAFKA_PORT}",
            "--shards", "1",
            "--peers", self.cluster.peers_for(self.id),
            "--cluster-id", self.cluster.tag,
            *self.cluster.extra_args,
        ]

    @property
    def clock_file(self) -> Path:
        """With a fake clock: the offset libfaketime adds to the node's wall time."""
        return self.cluster.root / f"node{self.id}.faketime"

    def clock_env(self) -> dict[str, str]:
        """The environment that runs the node under libfaketime (wall time only; the
        monotonic clock, which timers and timeouts use, stays true), when the cluster
        has fake clocks."""
        if not self.cluster.fake_clock:
            return {}
        if not self.clock_file.exists():
            self.clock_file.write_text("+0\n")
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} starting: {' '.join(self.command())}\n".encode())
            offset = log.tell()
            env = dict(os.environ, RUST_BACKTRACE="1", NO_COLOR="1", **self.clock_env())
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.paused = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.id} exited with {self.proc.returncode} at start\n{self.tail()}")
            if "ready" in self.log_text(offset) and self.accepts():
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.id} not ready within {READY_TIMEOUT_S:.0f}s\n{self.tail()}")

    def accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, KAFKA_PORT), timeout=0.5):
                return True
        except OSError:
            return False

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: a crash as far as its files are concerned."""
        if self.proc and self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.paused = False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bound."""
        if self.proc and self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process stops answering but keeps its sockets (a long GC pause)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Three caudal nodes in network namespaces. Use as a context manager."""

    def __init__(self, nodes: int = 3, extra_args: tuple[str, ...] = (), start: Optional[int] = None,
                 listed: Optional[int] = None, fake_clock: bool = False,
                 small_disk_node: Optional[int] = None, small_disk_mb: int = 256, proxy: bool = False):
        if os.geteuid() != 0:
            raise ClusterUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise ClusterUnavailable("the `ip` command (iproute2) is missing")
        self.binary = session_bin()
        if not self.binary.is_file():
            raise RuntimeError(f"caudal binary not found at {self.binary}")
        _remove_stale_namespaces()
        # pid and a random suffix: concurrent runs never share a name or a subnet.
        self.tag = f"cdl{os.getpid()}x{random.randint(0, 999)}"
        self.bridge = f"cdlbr{os.getpid()}x{random.randint(0, 99)}"[:15]
        # RFC 2544 benchmarking addresses: never routed anywhere real.
        self.subnet = f"198.{random.randint(18, 19)}.{random.randint(0, 255)}"
        self.extra_args = tuple(extra_args)
        # Nodes run under libfaketime, so a nemesis can move their wall clocks.
        self.fake_clock = fake_clock and LIBFAKETIME.is_file()
        # One node's data directory on a small filesystem of its own, for disk-full faults.
        self.small_disk_node = small_disk_node
        self.small_disk_mb = small_disk_mb
        self._mounts: list[Path] = []
        self.small_disk_why = ""
        # Inter-node traffic through netproxy.py, which a nemesis can tell to delay,
        # duplicate or reorder it.
        self.proxy = proxy
        self._proxies: list[subprocess.Popen] = []
        TMP_ROOT.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="cluster-", dir=TMP_ROOT))
        self.count = nodes
        # Nodes started at first (the others are started later).
        self.started = nodes if start is None else start
        # Nodes every node's --peers names; a later one names those and itself (it joins).
        self.listed = nodes if listed is None else listed
        self.peers = ",".join(f"{n}@{self.subnet}.{n}:{PEER_PORT}" for n in range(1, nodes + 1))
        self.nodes: list[Node] = []
        self._made_netns: list[str] = []
        self._made_bridge = False

    # -- network -----------------------------------------------------------------------

    def _make_network(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n in range(1, self.count + 1):
            ns = f"{self.tag}-{n}"
            _ip("netns", "add", ns)
            self._made_netns.append(ns)
            # Named after this cluster's tag: a namespace deleted just before may still
            # hold the last cluster's veths for a moment (a JVM still exiting in it).
            veth = f"v{self.tag[3:]}n{n}"[:15]
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{self.subnet}.{n}/24", "dev", "eth0")
            _ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def _make_network_or_clean_up(self) -> None:
        """The bridge and namespaces; what was made is removed if any step fails."""
        try:
            self._make_network()
        except ClusterUnavailable:
            self._remove_network()
            raise

    def _remove_network(self) -> None:
        for ns in self._made_netns:
            _ip("netns", "delete", ns, check=False)
        self._made_netns = []
        if self._made_bridge:
            _ip("link", "delete", self.bridge, check=False)
            self._made_bridge = False

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "Cluster":
        self._make_network_or_clean_up()
        try:
            self.nodes = [Node(self, n) for n in range(1, self.count + 1)]
            for node in self.nodes:
                node.proc = None
            if self.proxy:
                self._start_proxies()
            self._prepare_small_disk()
            # All at once: each waits for the others only to replicate, not to start.
            for node in self.nodes[: self.started]:
                node.start()
            self.wait_formed()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes:
            try:
                node.kill() if exc and exc[0] is not None else node.stop()
            except Exception:
                node.kill()
        for proc in self._proxies:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        self._proxies = []
        self._remove_network()
        for mount in self._mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
        self._mounts = []
        if not exc or exc[0] is None:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def proxy_control(self) -> Path:
        """The file netproxy.py takes its mode from."""
        return self.root / "netproxy.json"

    def set_proxy_mode(self, mode: str) -> None:
        """Tells every node's proxy to pass (none), delay, dup or reorder frames."""
        tmp = self.proxy_control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mode": mode}))
        tmp.replace(self.proxy_control)

    def proxy_stats(self) -> dict[str, int]:
        """Frames the proxies carried, delayed and duplicated, summed over the nodes (as
        of the last mode change)."""
        total: dict[str, int] = {}
        for node in self.nodes:
            lines = (self.root / f"proxy{node.id}.log").read_text(errors="replace").splitlines()
            last = next((json.loads(l) for l in reversed(lines) if l.startswith("{")), {})
            for k, v in last.items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
        return total

    def _start_proxies(self) -> None:
        """One netproxy.py in each node's namespace, for its connections to the others."""
        self.set_proxy_mode("none")
        for node in self.nodes:
            routes = [a for m in self.nodes if m is not node
                      for a in ("--route", f"{PROXY_PORT + m.id}={m.host}:{PEER_PORT}")]
            log = open(self.root / f"proxy{node.id}.log", "wb")
            proc = subprocess.Popen(
                ["ip", "netns", "exec", node.netns, sys.executable, str(NETPROXY),
                 "--control", str(self.proxy_control), "--seed", str(node.id), *routes],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            )
            log.close()
            self._proxies.append(proc)
            ready = select.select([proc.stdout], [], [], READY_TIMEOUT_S)[0]
            if not ready or b"ready" not in proc.stdout.readline():
                raise RuntimeError(f"netproxy for node {node.id} did not start: "
                                   f"{(self.root / f'proxy{node.id}.log').read_text()[-2000:]}")

    def _prepare_small_disk(self) -> None:
        """Mounts the small filesystem of `small_disk_node`, if any; where it cannot be
        made, the disk-full fault is skipped (with `small_disk_why`) and everything else
        runs."""
        if self.small_disk_node is None:
            return
        try:
            self._mount_small_disk(self.node(self.small_disk_node))
        except ClusterUnavailable as e:
            self.small_disk_why = str(e)
            self.small_disk_node = None

    def _mount_small_disk(self, node: Node) -> None:
        """Puts `node`'s data directory on its own small ext4 filesystem (a loop-mounted
        file), which a nemesis can fill."""
        image = self.root / f"node{node.id}.img"
        with open(image, "wb") as f:
            f.truncate(self.small_disk_mb << 20)
        for cmd in (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(node.data_dir)]):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise ClusterUnavailable(f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
        self._mounts.append(node.data_dir)

    def wait_formed(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every node's Metadata lists every node (each has registered with the
        controller node and received the metadata back)."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        pending = [n for n in self.nodes if n.is_running()]
        while pending and time.monotonic() < deadline:
            node = pending[0]
            try:
                md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=2)
                if len(md.brokers) == len([n for n in self.nodes if n.is_running()]) and md.controller_id > 0:
                    pending.pop(0)
                    continue
            except Exception:
                pass
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"node {pending[0].id} does not list the whole cluster after {timeout:.0f}s\n{self.logs()}")

    def peers_for(self, node_id: int) -> str:
        ids = list(range(1, self.listed + 1))
        if node_id not in ids:
            ids.append(node_id)
        if self.proxy:
            # Every other node through this node's proxy; itself as it listens.
            return ",".join(f"{n}@{self.subnet}.{n}:{PEER_PORT}" if n == node_id else f"{n}@127.0.0.1:{PROXY_PORT + n}"
                            for n in ids)
        return ",".join(f"{n}@{self.subnet}.{n}:{PEER_PORT}" for n in ids)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes[: max(self.started, 1)])

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def node_of_broker(self, broker_id: int) -> Node:
        return self.node(broker_id // 1024)

    def logs(self) -> str:
        return "\n".join(f"--- node {n.id} ---\n{n.tail(60)}" for n in self.nodes)


@contextlib.contextmanager
def cluster_or_skip(make):
    """The cluster `make()` builds, started, and stopped at the end of the `with`; skips
    the test (with the reason) where network namespaces cannot be made."""
    import pytest

    try:
        c = make()
    except ClusterUnavailable as e:
        pytest.skip(f"no cluster in network namespaces here: {e}")
    try:
        with c:
            yield c
    except ClusterUnavailable as e:
        pytest.skip(f"no cluster in network namespaces here: {e}")
