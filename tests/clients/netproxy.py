"""A userspace proxy for the traffic between Caudal nodes, which delays, duplicates and
reorders it on command: this machine's kernel has no netem, so `tc qdisc ... netem`
cannot. One proxy runs in each node's network namespace and carries that node's
outgoing peer connections: the node's `--peers` names 127.0.0.1:<port> for every other
node, and the proxy dials the real address from the node's own namespace (so iptables
faults still see the node's address).

It reads Caudal's inter-node framing (docs/protocol.md, "Between nodes": every frame is
`{ length: u32, crc32c: u32, body }`, the first a hello) and acts on whole frames, as
a network that delays, duplicates and reorders messages would:

    none     frames pass as they come
    delay    each frame waits 0-400 ms more than the one before it may (order kept)
    dup      some frames are sent again soon after, on a second connection
    reorder  some frames are sent again 0.5-3 s later, on a second connection, after
             newer ones

Duplicates travel on their own connection because TCP never repeats or reorders bytes
within one, and a node keeps per-connection state (the last full heartbeat of each
group): the second connection replays the hello and every frame of the connection up to
the duplicated one, so the receiver decodes each exactly as it did the first time. Only
the first RECORDED frames of a connection can be duplicated; when a dup or reorder
fault starts, the proxy closes every live connection, so that the nodes dial again and
the frames duplicated are fresh.

The mode is read from a JSON control file (`{"mode": "delay"}`), checked every 100 ms.

    python3 netproxy.py --control FILE --route 19202=10.0.0.2:9192 [--route ...] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys

FRAME_HEADER = 8
MAX_FRAME = 64 << 20
RECORDED = 64
DELAY_S = (0.0, 0.4)
DUP_P = 0.05
DUP_DELAY_S = (0.0, 0.1)
REORDER_DELAY_S = (0.5, 3.0)
DIAL_TIMEOUT_S = 5.0


class Control:
    """The mode in the control file, re-read when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self.mode = "none"
        self._mtime = 0.0
        self.generation = 0

    def poll(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            self._mtime = mtime
            with open(self.path) as f:
                mode = json.load(f).get("mode", "none")
        except (OSError, ValueError):
            return
        if mode != self.mode:
            self.mode = mode
            self.generation += 1


class Proxy:
    """Every connection of one node to its peers."""

    def __init__(self, control: Control, rng: random.Random):
        self.control = control
        self.rng = rng
        self.live: set[asyncio.StreamWriter] = set()
        self.stats = {"frames": 0, "delayed": 0, "duplicated": 0, "connections": 0}

    async def watch(self) -> None:
        seen = self.control.generation
        while True:
            self.control.poll()
            if self.control.generation != seen:
                seen = self.control.generation
                # What was done so far, for the test to check that faults happened.
                print(json.dumps({"mode": self.control.mode, **self.stats}), file=sys.stderr, flush=True)
                if self.control.mode in ("dup", "reorder"):
                    for w in list(self.live):
                        w.close()
            await asyncio.sleep(0.1)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]):
        self.stats["connections"] += 1
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*target), DIAL_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        self.live.add(writer)
        back = asyncio.create_task(pipe(up_r, writer))
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.create_task(release(queue, up_w))
        frames: list[bytes] = []
        due = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                header = await reader.readexactly(FRAME_HEADER)
                length = int.from_bytes(header[:4], "big")
                if length > MAX_FRAME:
                    break
                frame = header + await reader.readexactly(length)
                self.stats["frames"] += 1
                if len(frames) < RECORDED:
                    frames.append(frame)
                mode = self.control.mode
                now = loop.time()
                if mode == "delay":
                    due = max(due, now + self.rng.uniform(*DELAY_S))
                    self.stats["delayed"] += 1
                else:
                    due = max(due, now)
                await queue.put((due, frame))
                if mode in ("dup", "reorder") and len(frames) < RECORDED and self.rng.random() < DUP_P:
                    wait = self.rng.uniform(*(DUP_DELAY_S if mode == "dup" else REORDER_DELAY_S))
                    self.stats["duplicated"] += 1
                    asyncio.create_task(replay(list(frames), wait, target))
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.live.discard(writer)
            await queue.put(None)
            back.cancel()
            try:
                await asyncio.wait_for(sender, 5)
            except (asyncio.TimeoutError, OSError):
                sender.cancel()
            for w in (writer, up_w):
                w.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies bytes as they come (the hello's reply goes back this way)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def release(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    """Writes each frame when it is due, in order."""
    loop = asyncio.get_running_loop()
    try:
        while (item := await queue.get()) is not None:
            due, frame = item
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            writer.write(frame)
            await writer.drain()
    except OSError:
        pass


async def replay(frames: list[bytes], wait: float, target: tuple[str, int]) -> None:
    """Sends `frames` (a hello and what followed it) again on a connection of their own."""
    await asyncio.sleep(wait)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(*target), DIAL_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return
    try:
        for frame in frames:
            w.write(frame)
        await asyncio.wait_for(w.drain(), DIAL_TIMEOUT_S)
        # The hello's reply, then let the receiver read the rest before closing.
        await asyncio.wait_for(r.read(4096), DIAL_TIMEOUT_S)
        await asyncio.sleep(0.5)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        w.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--control", required=True)
    ap.add_argument("--route", action="append", default=[], help="LOCALPORT=HOST:PORT")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    proxy = Proxy(Control(args.control), random.Random(args.seed))
    servers = []
    for route in args.route:
        port, _, target = route.partition("=")
        host, _, tport = target.rpartition(":")
        dest = (host, int(tport))

        def handler(r, w, dest=dest):
            return proxy.serve(r, w, dest)

        servers.append(await asyncio.start_server(handler, "127.0.0.1", int(port)))
    print("ready", flush=True)
    await proxy.watch()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
