"""The dashboard's one view of the inventory: a cached fleet kept current by WatchNodes, the
topology and the jobs, and the state of the connection itself.

Pages are rendered from the cache so that a page of a 10,000-node fleet costs no RPC; the
node list is re-read on a timer as well, because reachability and preflight results change
without a lifecycle event. A lost inventory or an expired certificate is a status to show,
never an exception that ends the process: every RPC failure lands in `Status`, and the
watcher reconnects on a fresh channel (re-reading the certificate files, so a renewed
certificate is picked up without a restart).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from nodeagent.api import channels
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import fleet_pb2, fleet_pb2_grpc, inventory_pb2_grpc
from nodeagent.api.v1 import inventory_pb2 as ipb

# States whose reason is the admin's or the service's own word on why the node is there.
REASONED = frozenset({ipb.FAILED, ipb.QUARANTINED, ipb.MAINTENANCE})
# The watcher's stream replays the whole event log first; this long without an event means
# it has caught up (the service polls its event table every 0.25 s when idle).
CAUGHT_UP_SECONDS = 0.6
# More changed nodes than this at once: one re-list is cheaper than one GetNode each.
REFETCH_LIMIT = 64
# Reconnect quickly: the channel's own backoff grows to minutes.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class Credentials:
    """Where the inventory is and the admin's files (read again on every reconnect)."""

    address: str
    cert: Path
    key: Path
    ca: Path
    timeout: float = 30.0


@dataclass(frozen=True)
class Row:
    """One node as the fleet table needs it: plain values, so that sorting and filtering
    ten thousand of them is a list operation, not protobuf attribute access."""

    id: str
    hostname: str
    state: str
    pool: str
    cluster: str
    profile: str
    gpu_model: str
    gpu_count: int
    reachable: bool | None  # None: the reply carried no liveness
    last_seen: float  # epoch seconds, 0 when never
    reason: str
    blocking: tuple[str, ...]


def row_of(node: Any) -> Row:
    reason = ""
    if node.state in REASONED and node.state_reason:
        reason = node.state_reason
    elif node.blocking:
        reason = node.blocking[0]
    seen = node.last_seen.seconds + node.last_seen.nanos / 1e9 if node.HasField("last_seen") else 0
    return Row(
        id=node.id,
        hostname=node.hostname,
        state=ipb.NodeState.Name(node.state),
        pool=node.assignment.pool,
        cluster=node.assignment.cluster,
        profile=node.assignment.profile,
        gpu_model=node.gpu_model,
        gpu_count=node.gpu_count,
        reachable=node.reachable if node.HasField("last_seen") else None,
        last_seen=seen,
        reason=reason,
        blocking=tuple(node.blocking),
    )


@dataclass
class Status:
    """What the banner says. `inventory_ok` is None until the first answer (or failure)."""

    inventory_ok: bool | None = None
    since: float = field(default_factory=time.time)
    error: str = ""
    subject: str = ""
    cert_expires: float = 0.0
    loaded: bool = False
    nodes: int = 0

    @property
    def cert_expired(self) -> bool:
        return bool(self.cert_expires) and time.time() >= self.cert_expires

    def as_dict(self) -> dict[str, Any]:
        return {
            "inventory": {None: "connecting", True: "ok", False: "unreachable"}[self.inventory_ok],
            "since": self.since,
            "error": self.error,
            "subject": self.subject,
            "cert_expires": self.cert_expires,
            "cert_expired": self.cert_expired,
            "loaded": self.loaded,
            "nodes": self.nodes,
        }


class InventoryError(Exception):
    """An RPC the page needed failed; the message is one line for the page."""


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code()
    return f"{code.name if code else 'UNKNOWN'}: {exc.details() or ''}".strip()


class Source:
    """The cached fleet and the connection; thread-safe (the HTTP server is threaded)."""

    def __init__(
        self,
        creds: Credentials,
        *,
        refresh_seconds: float = 15.0,
        topology_seconds: float = 30.0,
        jobs_seconds: float = 3.0,
    ) -> None:
        self.creds = creds
        self.refresh_seconds = refresh_seconds
        self.topology_seconds = topology_seconds
        self.jobs_seconds = jobs_seconds
        self._lock = threading.Lock()
        self._rows: dict[str, Row] = {}
        self._topology: fpb.FabricTopology | None = None
        self._jobs_digest: tuple[Any, ...] = ()
        self._status = Status()
        self._channel: Any = None
        self._stale: set[str] = set()
        self._subscribers: list[queue.Queue[tuple[str, str]]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sequence = 0
        self._read_certificate()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for target in (self._watch_loop, self._refresh_loop):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            channel, self._channel = self._channel, None
            for q in self._subscribers:
                q.put(("close", ""))
        if channel is not None:
            channel.close()

    # --- what pages read -------------------------------------------------------------------
    def rows(self) -> list[Row]:
        with self._lock:
            return list(self._rows.values())

    def row(self, node_id: str) -> Row | None:
        with self._lock:
            return self._rows.get(node_id)

    def status(self) -> Status:
        with self._lock:
            return replace(self._status, nodes=len(self._rows))

    def topology(self) -> fpb.FabricTopology | None:
        with self._lock:
            return self._topology

    def node(self, node_id: str, events: int = 200) -> Any:
        return self._call("GetNode", ipb.GetNodeRequest(node_id=node_id, events=events))

    def labels(self, node_id: str) -> dict[str, str]:
        resp = self._call(
            "GetNodeLabels", fleet_pb2.GetNodeLabelsRequest(node_id=node_id), fleet=True
        )
        return dict(sorted(resp.labels.items()))

    def jobs(self) -> list[Any]:
        return list(self._call("ListJobs", ipb.ListJobsRequest()).jobs)

    def job(self, job_id: str) -> tuple[Any, list[Any]]:
        """The job and its event log: a finished job's stream ends by itself; a running one's
        is read for as long as it answers at once, the rest comes with the next refresh."""
        job = self._call("GetJob", ipb.GetJobRequest(id=job_id))
        stub = inventory_pb2_grpc.InventoryServiceStub(self._ensure_channel())
        events: list[Any] = []
        try:
            for event in stub.WatchJob(ipb.WatchJobRequest(id=job_id), timeout=0.75):
                events.append(event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise InventoryError(f"WatchJob: {_describe(exc)}") from None
        return job, events

    # --- live updates ----------------------------------------------------------------------
    def subscribe(self) -> queue.Queue[tuple[str, str]]:
        q: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=256)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[tuple[str, str]]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def _publish(self, kind: str, data: str = "") -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            # a stalled browser misses some: it reloads the whole fragment on the next one
            with contextlib.suppress(queue.Full):
                q.put_nowait((kind, data))

    # --- the connection --------------------------------------------------------------------
    def _read_certificate(self) -> None:
        try:
            cert = x509.load_pem_x509_certificate(self.creds.cert.read_bytes())
        except (OSError, ValueError):
            return
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        with self._lock:
            self._status.subject = str(names[0].value) if names else ""
            self._status.cert_expires = cert.not_valid_after_utc.timestamp()

    def _ensure_channel(self) -> Any:
        with self._lock:
            if self._channel is not None:
                return self._channel
        try:
            pem = [p.read_bytes() for p in (self.creds.ca, self.creds.cert, self.creds.key)]
        except OSError as exc:
            raise InventoryError(f"the admin certificate: {exc}") from None
        self._read_certificate()
        creds = channels.credentials(*pem)
        channel = grpc.secure_channel(self.creds.address, creds, CHANNEL_OPTIONS)
        with self._lock:
            if self._channel is None:
                self._channel = channel
                return channel
        channel.close()
        return self._channel

    def _reset_channel(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _call(self, method: str, request: Any, *, fleet: bool = False) -> Any:
        stub_type: Callable[[Any], Any] = (
            fleet_pb2_grpc.FleetServiceStub if fleet else inventory_pb2_grpc.InventoryServiceStub
        )
        try:
            stub = stub_type(self._ensure_channel())
            return getattr(stub, method)(request, timeout=self.creds.timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
                self._set_ok(False, f"{method}: {_describe(exc)}")
            raise InventoryError(f"{method}: {_describe(exc)}") from None
        except ValueError as exc:  # a channel closed under us by stop()
            raise InventoryError(f"{method}: {exc}") from None

    def _set_ok(self, ok: bool, error: str = "") -> None:
        with self._lock:
            changed = self._status.inventory_ok is not ok
            if changed:
                self._status.inventory_ok = ok
                self._status.since = time.time()
            self._status.error = error if not ok else ""
        if changed:
            self._publish("status")

    # --- the fleet cache -------------------------------------------------------------------
    def _list_all(self) -> dict[str, Row]:
        found: dict[str, Row] = {}
        token = ""
        while True:
            resp = self._call("ListNodes", ipb.ListNodesRequest(page_size=1000, page_token=token))
            for node in resp.nodes:
                found[node.id] = row_of(node)
            token = resp.next_page_token
            if not token:
                return found

    def _relist(self) -> None:
        rows = self._list_all()
        with self._lock:
            changed = rows != self._rows
            self._rows = rows
            first = not self._status.loaded
            self._status.loaded = True
        self._set_ok(True)
        if changed or first:
            self._publish("fleet")

    def _apply(self, event: Any) -> None:
        """A lifecycle event: the state shows at once, the rest of the record follows with
        the refetch the refresher makes of every node an event names."""
        with self._lock:
            row = self._rows.get(event.node_id)
            if event.to_state == ipb.NODE_STATE_UNSPECIFIED:
                self._rows.pop(event.node_id, None)
            elif row is not None:
                reason = event.reason if event.to_state in REASONED else row.reason
                self._rows[event.node_id] = replace(
                    row, state=ipb.NodeState.Name(event.to_state), reason=reason
                )
            if event.to_state != ipb.NODE_STATE_UNSPECIFIED:
                self._stale.add(event.node_id)
        self._wake.set()
        self._publish("node", event.node_id)

    def _refetch_stale(self) -> None:
        with self._lock:
            stale, self._stale = self._stale, set()
        if not stale:
            return
        if len(stale) > REFETCH_LIMIT:
            self._relist()
            return
        for node_id in stale:
            try:
                node = self.node(node_id, events=1)
            except InventoryError:
                continue  # deleted meanwhile, or the inventory went: the next re-list says
            with self._lock:
                self._rows[node_id] = row_of(node)
        self._publish("fleet")

    def _events(self) -> Iterator[Any]:
        """WatchNodes from where the last stream stopped, read on its own thread so that the
        caller can tell a quiet stream (caught up) from a busy one."""
        stub = inventory_pb2_grpc.InventoryServiceStub(self._ensure_channel())
        call = stub.WatchNodes(ipb.WatchNodesRequest(after_sequence=self._sequence))
        items: queue.Queue[Any] = queue.Queue()

        def pump() -> None:
            try:
                for event in call:
                    items.put(event)
                items.put(None)
            except grpc.RpcError as exc:
                items.put(exc)

        threading.Thread(target=pump, daemon=True, name="watch-pump").start()
        try:
            while not self._stop.is_set():
                try:
                    item = items.get(timeout=CAUGHT_UP_SECONDS)
                except queue.Empty:
                    yield None  # quiet: caught up
                    continue
                if item is None:
                    raise InventoryError("WatchNodes: the stream ended")
                if isinstance(item, grpc.RpcError):
                    raise item
                self._sequence = max(self._sequence, item.sequence)
                yield item
        finally:
            call.cancel()

    def _watch_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                live = False
                for event in self._events():
                    if event is None:
                        if not live:  # the backlog is read: now the list is current
                            self._relist()
                            live = True
                            delay = 0.5
                    elif live:
                        self._apply(event)
            except grpc.RpcError as exc:
                self._set_ok(False, f"WatchNodes: {_describe(exc)}")
            except InventoryError as exc:
                self._set_ok(False, str(exc))
            except ValueError as exc:  # the channel was closed by stop()
                self._set_ok(False, str(exc))
            if self._stop.is_set():
                return
            self._reset_channel()  # a fresh channel (and certificate) for the next try
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _refresh_loop(self) -> None:
        """Periodic work: nodes named by events, the whole list, the topology, the jobs, and
        the certificate's clock. Each step fails on its own into the status."""
        next_list = next_topology = next_jobs = 0.0
        expired = False
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            now = time.monotonic()
            status = self.status()
            if status.cert_expired != expired:
                expired = status.cert_expired
                self._publish("status")
            if not status.inventory_ok:
                continue
            try:
                self._refetch_stale()
                if now >= next_list:
                    next_list = now + self.refresh_seconds
                    if status.loaded:
                        self._relist()
                if now >= next_topology:
                    next_topology = now + self.topology_seconds
                    self._refresh_topology()
                if now >= next_jobs:
                    next_jobs = now + self.jobs_seconds
                    self._refresh_jobs()
            except InventoryError:
                continue  # in the status already when it is the connection

    def _refresh_topology(self) -> None:
        resp = self._call(
            "ExportTopology", fleet_pb2.ExportTopologyRequest(format="json"), fleet=True
        )
        with self._lock:
            changed = self._topology != resp.topology
            self._topology = resp.topology
        if changed:
            self._publish("fabric")

    def _refresh_jobs(self) -> None:
        jobs = self.jobs()
        digest = tuple((j.id, j.state, j.current_batch, j.updated_at.seconds) for j in jobs)
        with self._lock:
            changed, self._jobs_digest = digest != self._jobs_digest, digest
        if changed:
            self._publish("jobs")


def utc(epoch: float) -> str:
    """Times as the CLI prints them: UTC to the second."""
    if not epoch:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
