"""Simulated agents heartbeating on `Session` streams, for the fault tests and bench/fleet.py.

Each node has its own mTLS connection and certificate and behaves as the agent's
StreamSession does: one stream, a beat written and its acknowledgement awaited, a broken
stream left for the next replica after a jittered backoff, the unacknowledged beat sent
again there. A beat that repeats the last acknowledged one goes quiet (no acknowledgement
awaited), at most QUIET_RUN in a row; the next acknowledgement confirms it, since the
inventory reads a stream's beats in order. What each node had acknowledged, and when, is
recorded, so a test can check that the inventory kept every acknowledged beat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from nodeagent.agent.enrol import StreamSession
from nodeagent.api import channels, heartbeat
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc

ACK_SECONDS = 5.0
QUIET_RUN = StreamSession.QUIET_RUN
# the inventory hash the simulated nodes report: the one the inventory holds for them
# (Register stores none), so they are converged nodes, answered with no action. A hash
# it does not hold ("h" before issue 20's last figures) asked every beat for the
# inventory, which these nodes never send: an answer in full, every beat, no real fleet's
HASH = ""


@dataclass(frozen=True)
class SimNode:
    node_id: str
    cert: bytes
    key: bytes


@dataclass
class StreamStats:
    latencies: list[float] = field(default_factory=list)  # ms, acknowledged beats
    missed: int = 0  # beats whose acknowledgement never came (sent again after a reconnect)
    reconnects: int = 0
    pushes: int = 0
    acked_at: dict[str, float] = field(default_factory=dict)  # node -> wall time of its last ack
    replica: dict[str, int] = field(default_factory=dict)  # node -> index of its replica now
    moved_at: dict[str, float] = field(default_factory=dict)  # node -> when it last moved
    phase: str = "DISCOVERED"  # what every node reports from its next beat on (tests set it)
    acked_phase: dict[str, str] = field(default_factory=dict)  # node -> phase acknowledged
    acked_times: list[float] = field(default_factory=list)  # wall time of every beat
    # confirmed (acknowledged, or quiet and followed by an acknowledgement): when sent
    steady_from: float = 0.0  # wall time every node had its stream open (connect_first)
    replica_before: dict[str, int] = field(default_factory=dict)  # node -> replica at READY

    def per_replica(self) -> Counter[int]:
        return Counter(self.replica.values())


async def stream_node(
    node: SimNode,
    targets: list[str],
    ca: bytes,
    interval: float,
    end: float,
    stats: StreamStats,
    first_beat: float | None = None,
    opened: tuple[int, Any, Any, int, ipb.HeartbeatRequest] | None = None,
) -> None:
    """Heartbeat `node` every `interval` (+-20 %) until `end` (monotonic) on a stream;
    `opened`: (replica index, channel, call, last sequence, last beat) of a stream opened
    already, its last beat acknowledged. A node on such a stream goes on as the agent
    would after that beat, quiet while it repeats it, from a random point of its run of
    quiet beats: a benchmark's window then holds what a fleet long on its streams sends,
    a third of its beats answered, at every size. (From the top of the run a node that
    beats once in the window, as at 50,000 nodes, sent only answered beats.)"""
    index = random.randrange(len(targets)) if opened is None else opened[0]
    failures = 0
    seq = 0 if opened is None else opened[3]
    beat_at = time.monotonic() + (random.uniform(0, interval) if first_beat is None else first_beat)
    req = ipb.HeartbeatRequest(node_id=node.node_id, inventory_hash=HASH)
    while time.monotonic() < end:
        # a new stream: its first beat answered
        acked: ipb.HeartbeatRequest | None = None
        quiet_run, unconfirmed = 0, []
        if opened is not None:
            channel, call = opened[1], opened[2]
            acked, quiet_run = opened[4], random.randrange(QUIET_RUN + 1)
            stats.replica.setdefault(node.node_id, index)  # its opening beat's replica
            opened = None
        else:
            channel = channels.secure_aio_channel(targets[index], ca, node.cert, node.key)
            call = inventory_pb2_grpc.InventoryServiceStub(channel).Session()
        try:
            # the TLS handshake is the connection's cost, not a heartbeat's latency
            await asyncio.wait_for(channel.channel_ready(), ACK_SECONDS)
            while time.monotonic() < end:
                await asyncio.sleep(max(0.0, beat_at - time.monotonic()))
                seq += 1
                req.phase = stats.phase
                quiet = acked is not None and req == acked and quiet_run < QUIET_RUN
                started = time.perf_counter()
                await asyncio.wait_for(
                    call.write(ipb.SessionRequest(sequence=seq, heartbeat=req, quiet=quiet)),
                    ACK_SECONDS,
                )
                if quiet:
                    quiet_run += 1
                    unconfirmed.append(time.time())
                    beat_at += interval * random.uniform(0.8, 1.2)
                    continue
                await acknowledged(call, seq, stats)
                stats.latencies.append((time.perf_counter() - started) * 1000)
                stats.acked_at[node.node_id] = now = time.time()
                stats.acked_times.extend(unconfirmed)
                stats.acked_times.append(now)
                acked, quiet_run, unconfirmed = ipb.HeartbeatRequest(), 0, []
                acked.CopyFrom(req)  # req is this node's, changed in place for the next beat
                acked = heartbeat.repeatable(acked)
                stats.acked_phase[node.node_id] = req.phase
                if stats.replica.get(node.node_id, index) != index:
                    stats.moved_at[node.node_id] = time.time()
                stats.replica[node.node_id] = index
                failures = 0
                beat_at += interval * random.uniform(0.8, 1.2)
            if unconfirmed:  # the run ends: one answered beat confirms the quiet ones, at
                # the node's next beat time (all at once, they were a burst that other
                # processes' last beats queued behind: the 50,000-node p99 of 4.7 s)
                await asyncio.sleep(max(0.0, beat_at - time.monotonic()))
                seq += 1
                await asyncio.wait_for(
                    call.write(ipb.SessionRequest(sequence=seq, heartbeat=req)), ACK_SECONDS
                )
                await acknowledged(call, seq, stats)
                stats.acked_times.extend(unconfirmed)
                unconfirmed = []
        except (grpc.aio.AioRpcError, OSError, TimeoutError, asyncio.InvalidStateError):
            stats.missed += 1 + len(unconfirmed)  # quiet beats not known to have arrived
            stats.reconnects += 1
            failures += 1
            index = (index + 1) % len(targets)
            # full jitter, as the agent: a dead replica's nodes do not all arrive at once
            await asyncio.sleep(random.uniform(0, min(30.0, 2.0 ** min(failures, 5))))
            beat_at = time.monotonic()  # the beat that failed goes again, now
        finally:
            call.cancel()
            await channel.close()


async def acknowledged(call: Any, seq: int, stats: StreamStats) -> None:
    """Read the stream up to beat `seq`'s acknowledgement (pushes, and answers to quiet
    beats that changed, come before it)."""
    while True:
        msg = await asyncio.wait_for(call.read(), ACK_SECONDS)
        if msg is grpc.aio.EOF:
            raise ConnectionError("stream closed")
        if msg.acknowledged == seq:
            return
        if not msg.acknowledged:
            stats.pushes += 1


async def open_stream(
    node: SimNode, targets: list[str], ca: bytes, gate: asyncio.Semaphore
) -> tuple[int, Any, Any, int, ipb.HeartbeatRequest]:
    """Connect `node` and open its stream with a first beat (fleet start-up: at most
    `gate` handshakes at a time, as agents starting together would be spread)."""
    index = random.randrange(len(targets))
    async with gate:
        channel = channels.secure_aio_channel(targets[index], ca, node.cert, node.key)
        await asyncio.wait_for(channel.channel_ready(), 900)
        call: Any = inventory_pb2_grpc.InventoryServiceStub(channel).Session()
        req = ipb.HeartbeatRequest(node_id=node.node_id, inventory_hash=HASH, phase="DISCOVERED")
        await call.write(ipb.SessionRequest(sequence=1, heartbeat=req))
        while (await call.read()).acknowledged != 1:
            pass
    return index, channel, call, 1, req


async def stream_fleet(
    nodes: list[SimNode],
    targets: list[str],
    ca: bytes,
    interval: float,
    seconds: float,
    stats: StreamStats,
    connect_first: bool = False,
) -> None:
    """Every node on its stream for `seconds`; with `connect_first`, every stream is open
    (and `stats.steady_from` set) before the first timed beat, so a benchmark's window
    holds beats alone, not the fleet's handshakes."""
    if not connect_first:
        end = time.monotonic() + seconds
        await asyncio.gather(*(stream_node(n, targets, ca, interval, end, stats) for n in nodes))
        return
    gate = asyncio.Semaphore(64)  # per process: a benchmark runs four
    opened = await asyncio.gather(*(open_stream(n, targets, ca, gate) for n in nodes))
    stats.steady_from = time.time()
    end = time.monotonic() + seconds
    await asyncio.gather(
        *(
            stream_node(n, targets, ca, interval, end, stats, opened=o)
            for n, o in zip(nodes, opened, strict=True)
        )
    )


async def enrol_nodes(
    bootstrap: str, ca: bytes, token: str, inventory: Any, count: int, first: int = 0
) -> list[SimNode]:
    """`count` nodes enrolled with one token (16 at a time), inventories varied by number."""
    from nodeagent import tlsutil
    from testbed.variants import variant

    out: list[SimNode] = []
    numbers = list(range(first, first + count))

    async def worker() -> None:
        async with channels.secure_aio_channel(bootstrap, ca) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            while numbers:
                n = numbers.pop()
                key = tlsutil.new_key()
                resp = await stub.Register(
                    ipb.RegisterRequest(
                        token=token,
                        csr_pem=tlsutil.make_csr(key, "n").decode(),
                        inventory=variant(inventory, n),
                    ),
                    timeout=60,
                )
                out.append(
                    SimNode(resp.node_id, resp.certificate_pem.encode(), tlsutil.key_pem(key))
                )

    await asyncio.gather(*(worker() for _ in range(16)))
    return out


def _fleet_process(
    nodes: list[SimNode],
    targets: list[str],
    ca: bytes,
    interval: float,
    seconds: float,
    opened: Any,
    ready: Any,
    results: Any,
) -> None:
    """One process's share of a StreamProcesses fleet."""
    stats = StreamStats()

    async def run() -> None:
        async def watch() -> None:
            while stats.steady_from == 0.0:
                await asyncio.sleep(0.1)
            opened.set()
            while not ready.is_set():
                await asyncio.sleep(0.1)
            stats.replica_before = dict(stats.replica)
            stats.phase = "READY"

        watcher = asyncio.get_running_loop().create_task(watch())
        await stream_fleet(nodes, targets, ca, interval, seconds, stats, connect_first=True)
        watcher.cancel()

    asyncio.run(run())
    results.put(
        {
            "latencies": len(stats.latencies),
            "missed": stats.missed,
            "reconnects": stats.reconnects,
            "acked_at": stats.acked_at,
            "replica": stats.replica,
            "moved_at": stats.moved_at,
            "acked_phase": stats.acked_phase,
            "replica_before": stats.replica_before,
        }
    )


class StreamProcesses:
    """A fleet too large for one event loop (10,000 streams with their handshakes): the
    nodes split over `procs` processes, started fresh (spawn: the test process holds gRPC
    threads a fork would copy mid-flight). `wait_open()` returns once every stream is
    open; `set_ready()` makes every node report READY from its next beat; `join()`
    gathers the StreamStats of the whole fleet."""

    def __init__(
        self,
        nodes: list[SimNode],
        targets: list[str],
        ca: bytes,
        interval: float,
        seconds: float,
        procs: int = 2,
    ) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.results = ctx.Queue()
        self.opened = [ctx.Event() for _ in range(procs)]
        self.procs = [
            ctx.Process(
                target=_fleet_process,
                args=(
                    nodes[p::procs],
                    targets,
                    ca,
                    interval,
                    seconds,
                    self.opened[p],
                    self.ready,
                    self.results,
                ),
                daemon=True,
            )
            for p in range(procs)
        ]
        for proc in self.procs:
            proc.start()

    def wait_open(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for event in self.opened:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"the fleet's streams were not all open in {timeout:.0f} s")

    def set_ready(self) -> None:
        self.ready.set()

    def join(self, timeout: float) -> StreamStats:
        stats = StreamStats(phase="READY")
        for _ in self.procs:
            part = self.results.get(timeout=timeout)
            stats.missed += part["missed"]
            stats.reconnects += part["reconnects"]
            for name in ("acked_at", "replica", "moved_at", "acked_phase", "replica_before"):
                getattr(stats, name).update(part[name])
        for proc in self.procs:
            proc.join(10)
        return stats

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
