"""Simulated agents heartbeating on `Session` streams, for the fault tests and bench/fleet.py.

Each node has its own mTLS connection and certificate and behaves as the agent's
StreamSession does: one stream, a beat written and its acknowledgement awaited, a broken
stream left for the next replica after a jittered backoff, the unacknowledged beat sent
again there. What each node had acknowledged, and when, is recorded, so a test can check
that the inventory kept every acknowledged beat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from nodeagent.api import channels
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc

ACK_SECONDS = 5.0


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
) -> None:
    """Heartbeat `node` every `interval` (+-20 %) until `end` (monotonic) on a stream."""
    index = random.randrange(len(targets))
    failures = 0
    seq = 0
    beat_at = time.monotonic() + (random.uniform(0, interval) if first_beat is None else first_beat)
    req = ipb.HeartbeatRequest(node_id=node.node_id, inventory_hash="h")
    while time.monotonic() < end:
        channel = channels.secure_aio_channel(targets[index], ca, node.cert, node.key)
        call: Any = inventory_pb2_grpc.InventoryServiceStub(channel).Session()
        try:
            # the TLS handshake is the connection's cost, not a heartbeat's latency
            await asyncio.wait_for(channel.channel_ready(), ACK_SECONDS)
            while time.monotonic() < end:
                await asyncio.sleep(max(0.0, beat_at - time.monotonic()))
                seq += 1
                req.phase = stats.phase
                started = time.perf_counter()
                await asyncio.wait_for(
                    call.write(ipb.SessionRequest(sequence=seq, heartbeat=req)), ACK_SECONDS
                )
                while True:
                    msg = await asyncio.wait_for(call.read(), ACK_SECONDS)
                    if msg is grpc.aio.EOF:
                        raise ConnectionError("stream closed")
                    if msg.acknowledged == seq:
                        break
                    if not msg.acknowledged:
                        stats.pushes += 1
                stats.latencies.append((time.perf_counter() - started) * 1000)
                stats.acked_at[node.node_id] = time.time()
                stats.acked_phase[node.node_id] = req.phase
                if stats.replica.get(node.node_id, index) != index:
                    stats.moved_at[node.node_id] = time.time()
                stats.replica[node.node_id] = index
                failures = 0
                beat_at += interval * random.uniform(0.8, 1.2)
        except (grpc.aio.AioRpcError, OSError, TimeoutError, asyncio.InvalidStateError):
            stats.missed += 1
            stats.reconnects += 1
            failures += 1
            index = (index + 1) % len(targets)
            # full jitter, as the agent: a dead replica's nodes do not all arrive at once
            await asyncio.sleep(random.uniform(0, min(30.0, 2.0 ** min(failures, 5))))
            beat_at = time.monotonic()  # the beat that failed goes again, now
        finally:
            call.cancel()
            await channel.close()


async def stream_fleet(
    nodes: list[SimNode],
    targets: list[str],
    ca: bytes,
    interval: float,
    seconds: float,
    stats: StreamStats,
) -> None:
    end = time.monotonic() + seconds
    await asyncio.gather(*(stream_node(n, targets, ca, interval, end, stats) for n in nodes))


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
