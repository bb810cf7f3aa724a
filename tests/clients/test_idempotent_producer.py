"""An idempotent confluent-kafka producer (enable.idempotence=true) keeps sending while
the broker is restarted under it, by SIGTERM and by SIGKILL: librdkafka retries what was
in flight with the same producer id and sequence numbers, and the broker, its producer
state rebuilt from the log on start, acknowledges a batch it already has at the offset
it has it at instead of appending it again."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from caudal_harness import (
    assert_contiguous_from,
    consume_partitions,
    create_topic,
    high_watermarks,
    unique_name,
)

MESSAGES = 50_000
PARTITIONS = 4
RATE = 4_000  # messages per second: the stream lasts about 12 s
# (messages acknowledged before the restart, how the broker is stopped). Counting acks
# rather than sends makes every restart cut into traffic that is flowing again: after a
# restart librdkafka may take a second or two to rediscover the cluster.
RESTARTS = [(8_000, "sigterm"), (16_000, "sigkill"), (24_000, "sigkill"), (32_000, "sigterm"), (40_000, "sigkill")]


class RetryCounter(logging.Handler):
    """Counts librdkafka's debug lines (debug=msg) about a ProduceRequest that failed
    after it was sent (MsgPossiblyPersisted): the retries of those batches are the ones
    the broker may already have, i.e. where its duplicate detection matters."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.possibly_persisted = 0

    def emit(self, record):
        msg = record.getMessage()
        if "MessageSet with" in msg and "MsgPossiblyPersisted" in msg:
            self.possibly_persisted += 1


def debug_logger() -> tuple[logging.Logger, RetryCounter]:
    counter = RetryCounter()
    log = logging.getLogger(f"caudal-tests.rdkafka.{id(counter)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(counter)
    return log, counter


@pytest.mark.timeout(300)
def test_idempotent_producer_across_broker_restarts_writes_each_message_once_in_order(broker):
    """50,000 messages (value = sequence number i, partition i % 4, sent at ~4,000/s)
    from one idempotent producer while the broker is restarted five times mid-stream
    (SIGTERM, SIGKILL, SIGKILL, SIGTERM, SIGKILL). Every message gets a successful
    delivery report and no fatal error is raised; afterwards each partition holds
    exactly its messages, each once, in send order, at offsets 0, 1, 2, ...; and every
    delivery report's offset is where that message is in the log (a retried batch was
    acked with its original offset). Then a second idempotent producer (a new producer
    id, allocated after the restarts) appends 1,000 more, all of which land after the
    first producer's messages: no id is reused across restarts, so none of its batches
    is mistaken for a retry."""
    topic = unique_name("idempotent")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    errors: list = []  # error_cb: transport errors are expected while the broker is down
    failed: list = []
    acked: dict[int, tuple[int, int]] = {}  # i -> (partition, offset)

    def on_delivery(err, msg):
        i = int(msg.value())
        if err is not None:
            failed.append((i, err))
        else:
            acked[i] = (msg.partition(), msg.offset())

    rdkafka_log, retries = debug_logger()
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,  # implies acks=all, retries, max.in.flight <= 5
            "linger.ms": 5,
            "batch.num.messages": 1000,
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "error_cb": lambda err: errors.append(err),
            "debug": "msg",  # counted by RetryCounter, not printed
        },
        logger=rdkafka_log,
    )

    queued = 0
    restarts_done: list[tuple[str, int, int, int]] = []  # (how, exit code, acked, unacked) at the stop
    restart_error: list[BaseException] = []

    def restarter():
        try:
            for at, how in RESTARTS:
                deadline = time.monotonic() + 60
                while len(acked) < at:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"only {len(acked)} of {at} messages acknowledged after 60 s")
                    time.sleep(0.005)
                acked_then = len(acked)
                unacked_then = queued - acked_then
                code = broker.restart(kill=(how == "sigkill"))
                restarts_done.append((how, code, acked_then, unacked_then))
        except BaseException as err:  # reported by the main thread
            restart_error.append(err)

    thread = threading.Thread(target=restarter, daemon=True)
    thread.start()
    start = time.monotonic()
    for i in range(MESSAGES):
        while i > (time.monotonic() - start) * RATE:
            producer.poll(0.005)
        if restart_error:
            break
        while True:
            try:
                producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        queued = i + 1
        if i % 100 == 0:
            producer.poll(0)
    # Delivery reports (which the restarter counts) are served by poll(): keep polling.
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        producer.poll(0.05)
    assert not restart_error, f"restart failed: {restart_error[0]!r}"
    assert not thread.is_alive(), "the restarts did not finish"
    left = producer.flush(150)

    fatal = [e for e in errors if e.fatal()]
    assert not fatal, f"fatal producer errors: {fatal}"
    assert left == 0, f"{left} messages undelivered; {len(acked)} acked; errors: {errors[-5:]}"
    assert not failed, f"{len(failed)} deliveries failed, first: {failed[:3]}"
    assert len(acked) == MESSAGES
    assert [(how, code) for how, code, _, _ in restarts_done] == [
        (how, -9 if how == "sigkill" else 0) for _, how in RESTARTS
    ], restarts_done
    print(f"restarts (how, exit code, acked, sent but unacked): {restarts_done}; "
          f"{retries.possibly_persisted} batches retried after a send with no answer; "
          f"{len(errors)} non-fatal client errors, e.g. {[str(e) for e in errors[:3]]}")

    # -- the log: each message once, in send order, where its delivery report said --------------
    hw = high_watermarks(broker.bootstrap, topic, range(PARTITIONS))
    assert hw == {p: MESSAGES // PARTITIONS for p in range(PARTITIONS)}, f"high watermarks {hw}: duplicates or loss"
    got = consume_partitions(broker.bootstrap, topic, range(PARTITIONS), expected=MESSAGES, timeout=90, settle=0.5)
    for p in range(PARTITIONS):
        recs = got.get(p, [])
        assert_contiguous_from([o for o, *_ in recs], 0, f"partition {p}")
        values = [int(v) for _, _, v, _ in recs]
        assert values == list(range(p, MESSAGES, PARTITIONS)), f"partition {p}: messages missing, repeated or reordered"
    by_offset = defaultdict(dict)
    for p, recs in got.items():
        for o, _, v, _ in recs:
            by_offset[p][o] = int(v)
    wrong = [(i, po) for i, po in acked.items() if by_offset[po[0]].get(po[1]) != i]
    assert not wrong, f"{len(wrong)} delivery reports name an offset holding another message, e.g. {wrong[:3]}"

    # -- a new idempotent producer after the restarts ------------------------------------------
    second = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    more: list = []
    for i in range(MESSAGES, MESSAGES + 1000):
        second.produce(topic, value=str(i).encode(), partition=i % PARTITIONS,
                       on_delivery=lambda err, msg: more.append((err, msg.partition(), msg.offset())))
    assert second.flush(60) == 0
    assert [e for e, _, _ in more if e is not None] == []
    for p in range(PARTITIONS):
        offs = [o for e, q, o in more if q == p]
        assert_contiguous_from(offs, MESSAGES // PARTITIONS, f"second producer, partition {p}")
    assert high_watermarks(broker.bootstrap, topic, range(PARTITIONS)) == {
        p: (MESSAGES + 1000) // PARTITIONS for p in range(PARTITIONS)
    }
    broker.check_alive()
