"""Event bus: hardware and health events, coalesced, fanned out to watchers and the log.

A flapping port or a storm of identical XIDs becomes one event with a count per
coalescing window. Each subscriber has a bounded queue: a watcher that stops
reading is dropped rather than growing the agent's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.api.v1 import agent_pb2

log = logging.getLogger("nodeagent.events")
QUEUE_SIZE = 1000


class EventBus:
    def __init__(self, coalesce_seconds: float = 1.0) -> None:
        self.coalesce_seconds = coalesce_seconds
        self._subscribers: set[asyncio.Queue[agent_pb2.AgentEvent | None]] = set()
        self._pending: dict[tuple[str, str, str], agent_pb2.AgentEvent] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self.emitted = 0
        self.by_kind: dict[str, int] = {}

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, device: str, message: str, **attributes: str) -> None:
        """Queue an event; identical ones within the window are merged (count)."""
        key = (kind, device, message)
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            return
        stamp = Timestamp()
        stamp.FromNanoseconds(time.time_ns())
        event = agent_pb2.AgentEvent(
            time=stamp, kind=kind, device=device, message=message, attributes=attributes, count=1
        )
        self._pending[key] = event
        if self.coalesce_seconds <= 0:
            self._flush()
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.coalesce_seconds)
        self._flush()

    def _flush(self) -> None:
        pending, self._pending = list(self._pending.values()), {}
        for event in pending:
            self.emitted += 1
            self.by_kind[event.kind] = self.by_kind.get(event.kind, 0) + 1
            log.info(
                "event kind=%s device=%s count=%d %s",
                event.kind,
                event.device,
                event.count,
                event.message,
            )
            for queue in list(self._subscribers):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:  # a watcher that stopped reading: end its stream
                    self._subscribers.discard(queue)
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def subscribe(self, kinds: set[str]) -> AsyncIterator[agent_pb2.AgentEvent]:
        queue: asyncio.Queue[agent_pb2.AgentEvent | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                if not kinds or event.kind in kinds:
                    yield event
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (shutdown drains the streams)."""
        self._flush()
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                queue.get_nowait()
                queue.put_nowait(None)
        self._subscribers.clear()
