"""One consumer-group member for test_consumer_groups.py, run as its own process so the
test can SIGKILL it (no LeaveGroup, no last commit) as well as stop it cleanly.

    python group_member.py BOOTSTRAP GROUP TOPIC EVENTS_FILE [--commit-delay-ms MS]

A confluent-kafka Consumer subscribes to TOPIC in GROUP (eager `range` assignor,
enable.auto.commit=false, session.timeout.ms=6000, heartbeat.interval.ms=500) and loops:
consume a batch, "process" it, then commit the batch's next offsets synchronously.
Every step is appended to EVENTS_FILE as one JSON line, flushed at once (the kernel keeps
what was written even if this process is SIGKILLed; only a torn last line can be lost):

    {"ev": "start", "pid": N, "t": T}
    {"ev": "assign" | "revoke" | "lost", "partitions": [p, ...], "t": T}
    {"ev": "processed", "msgs": [[partition, offset, value], ...], "t": T}
        written before the batch's commit is sent (processing = this record)
    {"ev": "committed", "msgs": [...the same batch...], "offsets": {p: next}, "t": T}
        written only after the synchronous OffsetCommit succeeded for every partition
    {"ev": "commit_failed", "msgs": [...], "error": "...", "t": T}
    {"ev": "dropped", "msgs": [...], "t": T}
        messages consume() returned for a partition no longer assigned (not processed)
    {"ev": "error", "error": "...", "t": T}
    {"ev": "closed", "t": T}

T is time.monotonic(), comparable across processes on Linux (CLOCK_MONOTONIC).
--commit-delay-ms sleeps between "processed" and the commit, which widens the window in
which a SIGKILL leaves processed-but-uncommitted messages behind.

SIGTERM (or SIGINT) ends the loop; the consumer then close()s, which leaves the group
(LeaveGroup) without committing anything more.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("group")
    ap.add_argument("topic")
    ap.add_argument("events")
    ap.add_argument("--commit-delay-ms", type=int, default=0)
    args = ap.parse_args()

    out = open(args.events, "a", buffering=1)

    def emit(ev: str, **fields) -> None:
        fields = {"ev": ev, **fields, "t": time.monotonic()}
        out.write(json.dumps(fields) + "\n")
        out.flush()

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    assigned: set[int] = set()

    def on_assign(consumer, partitions):
        assigned.update(tp.partition for tp in partitions)
        emit("assign", partitions=sorted(tp.partition for tp in partitions))

    def on_revoke(consumer, partitions):
        # Everything processed so far was committed before this consume() call, so
        # there is nothing left to commit here.
        assigned.difference_update(tp.partition for tp in partitions)
        emit("revoke", partitions=sorted(tp.partition for tp in partitions))

    def on_lost(consumer, partitions):
        assigned.difference_update(tp.partition for tp in partitions)
        emit("lost", partitions=sorted(tp.partition for tp in partitions))

    def on_error(err):
        emit("error", error=str(err))

    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": f"group-member-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            # Also the rebalance timeout of the JoinGroup: keep it bounded.
            "max.poll.interval.ms": 30000,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": on_error,
        }
    )
    emit("start", pid=os.getpid())
    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    try:
        while not stop:
            batch, dropped = [], []
            for m in c.consume(num_messages=100, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        emit("error", error=str(err))
                    continue
                rec = [m.partition(), m.offset(), m.value().decode()]
                (batch if m.partition() in assigned else dropped).append(rec)
            if dropped:
                emit("dropped", msgs=dropped)
            if not batch:
                continue
            emit("processed", msgs=batch)
            if args.commit_delay_ms:
                time.sleep(args.commit_delay_ms / 1000)
            offsets: dict[int, int] = {}
            for p, o, _ in batch:
                offsets[p] = max(offsets.get(p, -1), o + 1)
            try:
                result = c.commit(
                    offsets=[TopicPartition(args.topic, p, o) for p, o in sorted(offsets.items())],
                    asynchronous=False,
                )
                errors = [f"{tp.partition}: {tp.error}" for tp in result if tp.error is not None]
            except Exception as exc:  # KafkaException: the whole request failed
                errors = [repr(exc)]
            if errors:
                emit("commit_failed", msgs=batch, error="; ".join(errors))
            else:
                emit("committed", msgs=batch, offsets=offsets)
    finally:
        c.close()
        emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
