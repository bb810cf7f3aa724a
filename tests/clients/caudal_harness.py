"""Harness for the real-client tests: runs the caudal binary and wraps the few
confluent-kafka calls that every test repeats.

The broker under test is started as a child process:

    caudal --data-dir DIR --listen 127.0.0.1:PORT --shards 2 [--default-partitions N]
           [--advertised-host H] [EXTRA ARGS...]

EXTRA ARGS come from the test (e.g. ``--group-initial-rebalance-delay-ms 0``; see the
``broker_args`` marker in conftest.py).

Shard k listens on PORT+k and is advertised in Metadata as broker id k. The broker
prints one line per shard and then a line containing ``ready``; it stops on SIGTERM.

Every wait here has a deadline: a broker that hangs makes a test fail, never stall.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "caudal"
# Brokers write with O_DIRECT, which tmpfs refuses: keep test data on the repo's disk.
TMP_ROOT = REPO / "target" / "tmp"

HOST = "127.0.0.1"
SHARDS = 2
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def caudal_bin() -> Path:
    """The broker binary: $CAUDAL_BIN, else the debug build in this repo."""
    return Path(os.environ.get("CAUDAL_BIN", str(DEFAULT_BIN)))


_snapshot: Optional[Path] = None


def session_bin() -> Path:
    """A private copy of caudal_bin(), made on first use and removed at exit, that every
    broker of this test session runs. target/debug/caudal may be rebuilt while the suite
    runs (cargo replaces the file); a broker restarted mid-test must not find it missing
    or changed."""
    global _snapshot
    if _snapshot is None:
        src = caudal_bin()
        if not src.is_file():
            return src  # Broker.start() reports it
        TMP_ROOT.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_snapshots()
        d = Path(tempfile.mkdtemp(prefix=f"clients-bin-{os.getpid()}-", dir=TMP_ROOT))
        atexit.register(shutil.rmtree, d, True)
        dst = d / "caudal"
        shutil.copy2(src, dst)
        _snapshot = dst
    return _snapshot


def _remove_orphaned_snapshots() -> None:
    """Remove the binary copies of earlier sessions whose process is gone (killed before
    its atexit ran); each is named clients-bin-<pid>-*."""
    for d in TMP_ROOT.glob("clients-bin-*-*"):
        try:
            pid = int(d.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------


def ports_free(base: int, count: int) -> bool:
    """True when base..base+count-1 can all be bound on HOST right now.

    No SO_REUSEADDR, so a port still in TIME_WAIT also counts as taken.
    """
    socks = []
    try:
        for port in range(base, base + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def pick_base_port(count: int = SHARDS, attempts: int = 200) -> int:
    """A random base port in 20000-60000 such that base..base+count-1 are free."""
    for _ in range(attempts):
        base = random.randint(20000, 60000 - count)
        if ports_free(base, count):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found on {HOST}")


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to HOST:port succeeds (the connection is closed at once)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------------------


class BrokerError(RuntimeError):
    """The broker failed to start or stop; the message carries the tail of its log."""


class Broker:
    """One caudal process with its own data directory and ports.

    Layout of the temp dir (under <repo>/target/tmp):
        <root>/data/        the broker's --data-dir
        <root>/broker.log   its stdout and stderr, appended across restarts

    The log sits beside the data dir rather than inside it so that the broker never
    finds a file it did not write among its own.
    """

    def __init__(
        self,
        shards: int = SHARDS,
        default_partitions: Optional[int] = None,
        advertised_host: Optional[str] = None,
        binary: Optional[Path] = None,
        extra_args: Iterable[str] = (),
    ):
        self.binary = Path(binary) if binary else session_bin()
        self.shards = shards
        self.default_partitions = default_partitions
        self.advertised_host = advertised_host
        self.extra_args = [str(a) for a in extra_args]
        TMP_ROOT.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="clients-", dir=TMP_ROOT))
        self.data_dir = self.root / "data"
        self.data_dir.mkdir()
        self.log_path = self.root / "broker.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log_file = None
        self._started_once = False
        self._saved_tail: Optional[str] = None
        self._stopped = False
        # Set when the process was found dead without us having stopped it.
        self.crashed_returncode: Optional[int] = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers for clients: shard 0's listener."""
        return f"{HOST}:{self.port}"

    @property
    def ports(self) -> list[int]:
        """One listener per shard: PORT, PORT+1, ..."""
        assert self.port is not None, "broker not started"
        return [self.port + k for k in range(self.shards)]

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--data-dir", str(self.data_dir),
            "--listen", f"{HOST}:{self.port}",
            "--shards", str(self.shards),
        ]
        if self.default_partitions is not None:
            cmd += ["--default-partitions", str(self.default_partitions)]
        if self.advertised_host is not None:
            cmd += ["--advertised-host", self.advertised_host]
        return cmd + self.extra_args

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until every shard accepts connections.

        On the very first start, a port taken between our probe and the broker's bind
        ("address in use") makes us pick new ports and try again; a restart always
        reuses the same ports.
        """
        if not self.binary.is_file():
            raise BrokerError(f"caudal binary not found at {self.binary} (set CAUDAL_BIN or run `make build`)")
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            if not self._started_once:
                self.port = pick_base_port(self.shards)
            log_offset = self._launch()
            try:
                self._wait_ready(log_offset)
                self._started_once = True
                return
            except BrokerError as err:
                self._kill()
                self._stopped = True
                self._close_log()
                in_use = "in use" in self._read_log(log_offset).lower()
                if not in_use or attempt == attempts - 1:
                    raise err

    def _launch(self) -> int:
        """Spawn the process with stdout/stderr appended to broker.log; returns the log
        offset where this run's output starts."""
        self._log_file = open(self.log_path, "ab")
        log_offset = self._log_file.tell()
        banner = f"\n=== {time.strftime('%H:%M:%S')} starting: {' '.join(self.command())}\n"
        self._log_file.write(banner.encode())
        self._log_file.flush()
        log_offset += len(banner)
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log lines in broker.log
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )
        self.crashed_returncode = None
        self._stopped = False
        return log_offset

    def _wait_ready(self, log_offset: int) -> None:
        """Poll until the log shows `ready` and a TCP connect to each shard port works."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BrokerError(f"caudal exited with code {code} before it was ready\n{self.log_tail()}")
            said_ready = "ready" in self._read_log(log_offset).lower()
            if said_ready and all(port_accepts(p) for p in self.ports):
                return
            time.sleep(0.05)
        raise BrokerError(
            f"caudal not ready within {READY_TIMEOUT_S:.0f}s on ports {self.ports}\n{self.log_tail()}"
        )

    def stop(self) -> Optional[int]:
        """SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit code (negative for a
        signal, as subprocess reports it); None if it was never started."""
        if self.proc is None:
            return None
        if self._stopped:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._append_log(f"=== did not stop within {STOP_TIMEOUT_S:.0f}s of SIGTERM: SIGKILL\n")
                self._kill()
        else:
            # It was gone before we asked it to stop.
            self.crashed_returncode = self.proc.returncode
        self._stopped = True
        code = self.proc.returncode
        self._append_log(f"=== exited with code {code}\n")
        self._close_log()
        return code

    def kill(self) -> Optional[int]:
        """SIGKILL: the broker gets no chance to flush or close anything (a crash, as far
        as its files are concerned). Returns the exit code (-9); None if never started."""
        if self.proc is None:
            return None
        if self._stopped:
            return self.proc.returncode
        if self.proc.poll() is None:
            self._kill()
        else:
            self.crashed_returncode = self.proc.returncode
        self._stopped = True
        code = self.proc.returncode
        self._append_log(f"=== killed (SIGKILL by the test), exit code {code}\n")
        self._close_log()
        return code

    def restart(self, kill: bool = False) -> Optional[int]:
        """Stop (SIGTERM, or SIGKILL when `kill`), then start again on the same data dir
        and ports. Returns the exit code of the stop."""
        code = self.kill() if kill else self.stop()
        self.start()
        return code

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise (with the log tail) if the process has died."""
        if not self.is_running():
            code = self.proc.returncode if self.proc else None
            raise BrokerError(f"caudal is not running (exit code {code})\n{self.log_tail()}")

    def cleanup(self, keep: bool = False) -> None:
        """Stop the process and remove the temp dir (kept when `keep`)."""
        self.stop()
        self._saved_tail = self.log_tail()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- log -----------------------------------------------------------------------------

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _append_log(self, text: str) -> None:
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.write(text.encode())
            self._log_file.flush()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of broker.log (kept in memory once the temp dir is removed)."""
        if not self.log_path.exists() and self._saved_tail is not None:
            return self._saved_tail
        text = self._read_log()
        tail = text.splitlines()[-lines:]
        return f"--- tail of {self.log_path} ---\n" + "\n".join(tail)


# --------------------------------------------------------------------------------------
# confluent-kafka helpers
# --------------------------------------------------------------------------------------


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_for_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 15.0):
    """Poll Metadata until the topic shows `partitions` partitions, each with a leader.
    Returns the TopicMetadata."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(topic=name, timeout=5)
            t = md.topics.get(name)
            last = t
            if (
                t is not None
                and t.error is None
                and len(t.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in t.partitions.values())
            ):
                return t
        except Exception as err:  # KafkaException on a timed-out request: retry
            last = err
        time.sleep(0.1)
    raise AssertionError(f"topic {name!r} with {partitions} partitions not in metadata after {timeout}s: {last!r}")


def create_topic(bootstrap: str, name: str, partitions: int, config: Optional[dict] = None, timeout: float = 30.0):
    """Create a topic with confluent_kafka's AdminClient (CreateTopics, replication 1),
    wait for the result, then until Metadata lists every partition with a leader.
    Returns the TopicMetadata."""
    admin = admin_client(bootstrap)
    new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
    futures = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    return wait_for_topic(admin, name, partitions)


def partition_leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """{partition: leader broker id} from Metadata."""
    md = admin_client(bootstrap).list_topics(topic=topic, timeout=10)
    return {p: pm.leader for p, pm in md.topics[topic].partitions.items()}


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple],
    timeout: float = 60.0,
    **conf,
) -> list[tuple[int, int]]:
    """Produce (partition, key, value[, timestamp_ms]) tuples with acks=all.

    partition may be None for the default partitioner. Returns [(partition, offset)]
    in produce order, from the delivery reports; raises if any delivery failed or the
    flush did not finish within `timeout`.
    """
    config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    config.update(conf)
    producer = Producer(config)
    results: list = []
    errors: list = []

    def on_delivery_for(idx):
        def cb(err, msg):
            if err is not None:
                errors.append((idx, err))
            else:
                results[idx] = (msg.partition(), msg.offset())

        return cb

    deadline = time.monotonic() + timeout
    for idx, m in enumerate(messages):
        partition, key, value = m[0], m[1], m[2]
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery_for(idx)}
        if partition is not None:
            kwargs["partition"] = partition
        if len(m) > 3 and m[3] is not None:
            kwargs["timestamp"] = m[3]
        results.append(None)
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                if time.monotonic() > deadline:
                    raise AssertionError("producer queue stayed full until the deadline")
                producer.poll(0.05)
        if idx % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert not errors, f"{len(errors)} delivery failures, first: {errors[:3]}"
    assert all(r is not None for r in results), "a delivery report is missing"
    return results


def consumer(bootstrap: str, **conf) -> Consumer:
    """A Consumer that never commits. librdkafka requires a group.id even when
    partitions are assigned by hand; the group is never joined."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": unique_name("caudal-tests"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    config.update(conf)
    return Consumer(config)


def consume_partitions(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    expected: int,
    timeout: float = 60.0,
    settle: float = 1.0,
    **conf,
) -> dict[int, list[tuple[int, Optional[bytes], Optional[bytes], int]]]:
    """Read the given partitions from the beginning with assign() until `expected`
    messages came back, then keep polling `settle` seconds more so duplicates or extra
    messages would show. Returns {partition: [(offset, key, value, timestamp_ms)]} in
    the order received. Fails if `expected` is not reached within `timeout`."""
    c = consumer(bootstrap, **conf)
    got: dict[int, list] = defaultdict(list)
    count = 0
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if settle_until is None and count >= expected:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            if settle_until is None and now >= deadline:
                raise AssertionError(f"consumed {count} of {expected} messages from {topic} within {timeout}s")
            for msg in c.consume(num_messages=5000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consume error on {topic}: {err}")
                got[msg.partition()].append((msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
                count += 1
    finally:
        c.close()
    return dict(got)


def assert_contiguous_from(offsets: list[int], start: int, what: str) -> None:
    """Offsets must be start, start+1, ... in the order received."""
    expected = list(range(start, start + len(offsets)))
    if offsets != expected:
        bad = next(i for i, (a, b) in enumerate(zip(offsets, expected)) if a != b)
        raise AssertionError(
            f"{what}: offsets not contiguous from {start}: at index {bad} got {offsets[bad]}, "
            f"expected {expected[bad]} (around: {offsets[max(0, bad - 3):bad + 3]})"
        )


def assert_clients_work(broker: Broker, shards: int = SHARDS) -> None:
    """A normal client on fresh connections lists both shards in Metadata, creates a
    topic, produces to every partition and reads it all back."""
    broker.check_alive()
    md = admin_client(broker.bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == list(range(shards)), f"brokers in metadata: {md.brokers}"
    topic = unique_name("alive")
    create_topic(broker.bootstrap, topic, 2)
    msgs = [(i % 2, f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    produce(broker.bootstrap, topic, msgs, timeout=30)
    got = consume_partitions(broker.bootstrap, topic, [0, 1], expected=20, timeout=30, settle=0.3)
    values = sorted(v for recs in got.values() for (_, _, v, _) in recs)
    assert values == sorted(m[2] for m in msgs)
    broker.check_alive()


# --------------------------------------------------------------------------------------
# Consumer groups
# --------------------------------------------------------------------------------------


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05, detail=None):
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` seconds
    pass (AssertionError naming `what`, plus `detail()` when given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def describe_group(bootstrap: str, group: str, timeout: float = 10.0):
    """confluent-kafka's DescribeConsumerGroups (DescribeGroups on the coordinator):
    a ConsumerGroupDescription with .state, .members, .partition_assignor, .coordinator."""
    admin = admin_client(bootstrap)
    futures = admin.describe_consumer_groups([group], request_timeout=timeout)
    return futures[group].result(timeout=timeout)


def list_groups(bootstrap: str, timeout: float = 10.0) -> dict:
    """confluent-kafka's ListConsumerGroups (ListGroups on every broker):
    {group_id: ConsumerGroupListing}. Raises if any broker answered with an error."""
    admin = admin_client(bootstrap)
    result = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    if result.errors:
        raise AssertionError(f"ListGroups errors: {result.errors}")
    return {g.group_id: g for g in result.valid}


def group_committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch on the coordinator) without joining it;
    -1001 (OFFSET_INVALID) where nothing is committed."""
    c = consumer(bootstrap, **{"group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        for tp in tps:
            assert tp.error is None, f"OffsetFetch {topic}[{tp.partition}] for {group}: {tp.error}"
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def high_watermarks(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        c.close()
