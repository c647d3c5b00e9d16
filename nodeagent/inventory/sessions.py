"""Heartbeat streams (`Session`): one long-lived stream per node, pushes when things change.

A unary heartbeat learns of a new assignment only at the node's next interval, and costs a
call (HTTP/2 stream, headers, authorisation) per beat. On a stream the authorisation is
paid once, each beat is one small message each way, and the inventory writes down to the
node as soon as its desired state changes: an admin's change on any replica reaches the
node's stream within one `report_poll_seconds`, because every replica polls the nodes
changed since its last look (`changed_since`) into its heartbeat cache and pushes to the
streams it holds. The poll replaces the per-node re-read of the cache as well: with it the
cache stays fresh across replicas, and a heartbeat that changes nothing never waits on
the database.

Most beats of a quiet fleet repeat the one before (state alone: nodeagent/api/heartbeat.py).
Such a beat takes the repeat path (liveness and a step of the health streak, service.py),
and when the agent sent it quiet it is answered only if the answer changed: a message up
and none down. The agent asks for an answer at least every third beat.

A closed stream means nothing by itself: reachability stays a matter of `last_seen`
against the deadline (the sweep), so an agent that reconnects to another replica after a
replica died is never marked unreachable in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import nodes
from nodeagent.inventory.store import Store

# how far back a poll looks beyond its last mark: replicas' clocks (updated_at is the
# writer's time.time()) and transactions committing after the mark was read
OVERLAP_SECONDS = 2.0


class Session:
    """One node's stream on this replica. Answers and pushes are written from different
    tasks (the stream's, the poll's); grpc allows one write at a time, hence the lock."""

    __slots__ = (
        "beat",
        "context",
        "ended",
        "entry",
        "heard",
        "last",
        "lock",
        "node_id",
        "pushes",
        "repeats",
        "task",
        "tiers_hash",
        "told",
    )

    def __init__(self, node_id: str, context: Any) -> None:
        self.node_id = node_id
        self.context = context
        self.task = asyncio.current_task()  # cancelled by end()
        self.heard = time.monotonic()  # when the node last sent a beat on it
        self.ended: str | None = None  # why this replica ends the stream (end())
        self.lock = asyncio.Lock()
        self.tiers_hash = ""  # of the fleet tiers the node last said it holds
        self.last = b""  # the last desired state the node was told (answer or push)
        # the node record whose bare answer (no actions, tiers, hooks, validations) `last`
        # holds; None: something else, or not known
        self.told: Any = None
        self.pushes = 0
        # the last beat that took the full path (None: none yet, or it carried news) and
        # the node's cache entry after it: a beat equal to it, while the entry is still
        # the same object, takes the repeat path (service.py)
        self.beat: ipb.HeartbeatRequest | None = None
        self.entry: Any = None
        self.repeats = 0  # beats that took the repeat path

    def end(self, why: str) -> None:
        """End the stream from this replica: its task stops where it waits and sends
        UNAVAILABLE with `why` (service.py), which the agent answers by reconnecting."""
        self.ended = why
        if self.task is not None:
            self.task.cancel()

    async def answer(
        self,
        sequence: int,
        resp: ipb.HeartbeatResponse,
        tiers_hash: str,
        quiet: bool = False,
        record: Any = None,
    ) -> None:
        """Acknowledge beat `sequence`: with the answer, or bare when the answer is
        exactly what the node was last told and carries no actions (the node keeps what it
        has; most beats on a quiet fleet are these, a few bytes each). A quiet beat (the
        agent waits for nothing) gets no bare acknowledgement: nothing at all. `record`:
        the node record `resp` was built from."""
        self.tiers_hash = tiers_hash
        seen = fingerprint(resp)
        bare = not (resp.actions or resp.hooks or resp.validations or resp.HasField("fleet_tiers"))
        if seen == self.last and not resp.actions:
            self.told = record if bare else None
            if quiet:
                return
            out = ipb.SessionResponse(acknowledged=sequence)
        else:
            self.last, self.told = seen, record if bare else None
            out = ipb.SessionResponse(acknowledged=sequence, heartbeat=resp)
        await self._write(out)

    async def acknowledge(self, sequence: int) -> None:
        """A bare acknowledgement, for a beat whose answer is what `last` holds."""
        await self._write(ipb.SessionResponse(acknowledged=sequence))

    async def push(self, resp: ipb.HeartbeatResponse) -> bool:
        """Write `resp` down the stream unless the node was already told exactly this."""
        seen = fingerprint(resp)
        if seen == self.last:
            return False
        self.last, self.told = seen, None
        self.pushes += 1
        await self._write(ipb.SessionResponse(acknowledged=0, heartbeat=resp))
        return True

    async def _write(self, out: ipb.SessionResponse) -> None:
        """One message down the stream, in the order `last` was set (the lock is FIFO)."""
        try:
            async with self.lock:
                await self.context.write(out)
        except BaseException:  # given up or failed: not known to be told, so the next
            self.last, self.told = b"", None  # answer goes in full, not as a bare one
            raise


def fingerprint(resp: ipb.HeartbeatResponse) -> bytes:
    """What a push would tell the node: actions answer one heartbeat and are left out."""
    if not resp.actions:
        return resp.SerializeToString(deterministic=True)
    told = ipb.HeartbeatResponse()
    told.CopyFrom(resp)
    told.ClearField("actions")
    return told.SerializeToString(deterministic=True)


class Sessions:
    """The streams this replica holds, by node; a node reconnecting replaces its old one."""

    def __init__(self) -> None:
        self.by_node: dict[str, Session] = {}
        self.opened = 0

    def attach(self, session: Session) -> None:
        old = self.by_node.get(session.node_id)
        self.by_node[session.node_id] = session
        self.opened += 1
        if old is not None:
            old.end(f"node {old.node_id} opened another stream")

    def detach(self, session: Session) -> None:
        if self.by_node.get(session.node_id) is session:
            del self.by_node[session.node_id]

    def end_silent(self, before: float) -> int:
        """End the streams whose node sent nothing since `before` (monotonic): a node gone
        without closing its connection (power lost, cable pulled) would otherwise hold
        its stream here for good. The agent, if it lives, opens another. How many ended."""
        silent = [s for s in self.by_node.values() if s.heard < before and s.ended is None]
        for session in silent:
            session.end(f"no heartbeat for {time.monotonic() - session.heard:.0f} s")
        return len(silent)

    def held(self, node_ids: Iterable[str]) -> list[Session]:
        return [s for n in node_ids if (s := self.by_node.get(n)) is not None]

    def __len__(self) -> int:
        return len(self.by_node)


def changed_since(store: Store, since: float) -> tuple[list[tuple[ipb.Node, str]], float]:
    """Nodes whose record changed after `since` (any replica's write), each with the phase
    its agent last reported, and the next mark.

    The phase is what a replica that never heard from the node compares its first beat
    with: without it that beat ran a transaction for every node (after a failover, or
    nodes enrolled on another replica: 5,000 at once in the 2-replica bench, issue 20).

    The mark is this read's start less OVERLAP_SECONDS, so a change committed while the
    query ran, or stamped by a replica whose clock is a little behind, is read again next
    time rather than missed; a push is sent only when the node was not told it already.
    """
    started = time.time()
    changed = nodes.with_phase(store, "WHERE n.updated_at > ?", (since,))
    return changed, started - OVERLAP_SECONDS
