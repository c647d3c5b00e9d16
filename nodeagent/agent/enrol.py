"""The agent's side of the inventory: enrol once, then heartbeat for ever.

Enrolment: check the inventory's CA against the pinned hash, make a key on the
node (it never leaves), send a CSR with the bootstrap token and the inventory,
store the returned certificate. Idempotent: an agent with an identity does not
enrol again, and re-enrolling the same hardware gets the same node id anyway.

Heartbeats: every interval the service asks for, with jitter (+-20 %); the full
inventory only when its hash changed or the service asks. When the service is
away: exponential backoff with full jitter (1 s doubling to 120 s), the local API
keeps serving, and heartbeats resume by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nodeagent import tlsutil
from nodeagent.agent.config import InventoryClientConfig
from nodeagent.api import channels, heartbeat
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import fleet_pb2, fleet_pb2_grpc, inventory_pb2_grpc
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import validate_pb2 as vpb

log = logging.getLogger("nodeagent.enrol")
BACKOFF_BASE, BACKOFF_CAP = 1.0, 120.0
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


@dataclass
class Snapshot:
    """What a heartbeat reports, taken from the agent at send time."""

    phase: str
    inventory: pb.HardwareInventory
    inventory_hash: str
    drift_count: int
    health: list[str]
    fabric: fpb.FabricObservation | None = None
    # failing preflight checks, "name: message (fix: remedy)"; None: preflight has not run
    blocking: list[str] | None = None
    # for the inventory's health policy: XID counts since the agent started, by (gpu, code);
    # a GPU whose row remapping failed; compute rails down and degraded; whether the node's
    # own checks find its devices usable (None: not known)
    xids: dict[tuple[str, int], int] = field(default_factory=dict)
    row_remap_failure: bool = False
    rails_down: int = 0
    rails_degraded: int = 0
    devices_ok: bool | None = None
    labels: ipb.ReportedLabels | None = None  # None: not computed yet
    network: ipb.NodeNetwork | None = None  # None: not read (or not reported)
    fleet_tiers_hash: str = ""  # of the fleet tiers the node holds
    hook_results: list[ipb.HookResult] | None = None  # finished, not yet reported
    hook_phases: list[str] | None = None  # join phases with hooks installed
    # the latest acceptance report and the remote run it answers ("" the agent's own)
    acceptance: tuple[vpb.ValidationReport | None, str] = (None, "")


class EnrolmentError(RuntimeError):
    """Enrolment failed. The message is one line: what happened, the address, what fixes
    it. `retry` is whether the same enrolment can work later (an inventory that is down)
    or never will as it is (a used-up token, a wrong pin): the caller says how to retry,
    and only when it can help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


NEW_TOKEN = "create a new token with `nodeagent admin tokens create` and enrol with it"


def explain(exc: BaseException, address: str) -> EnrolmentError:
    """One line for a failed enrolment at `address`, instead of a gRPC dump."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), (exc.details() or "").splitlines()[0:1]
        said = details[0] if details else code.name
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return EnrolmentError(f"{address} refused the token: {said}; {NEW_TOKEN}", False)
        if code == grpc.StatusCode.ALREADY_EXISTS:  # the inventory's message names the fix
            return EnrolmentError(f"{address} refused the enrolment: {said}", False)
        if code == grpc.StatusCode.FAILED_PRECONDITION and "identity" in said:
            return EnrolmentError(
                f"{address} refused the enrolment: {said}; set a DMI serial or UUID on the "
                "machine (BIOS/BMC) so it can be told apart",
                False,
            )
        if code in RETRYABLE:
            return EnrolmentError(
                f"the inventory at {address} is unavailable ({code.name}: {said}); start or "
                "fix the inventory service and check the address",
                True,
            )
        return EnrolmentError(f"{address} refused the enrolment: {code.name}: {said}", False)
    if isinstance(exc, tlsutil.PinError):
        return EnrolmentError(
            f"{exc}; compare --ca-hash with `nodeagent inventory ca-hash` on the inventory host",
            False,
        )
    if isinstance(exc, ConnectionRefusedError):
        why = "connection refused (nothing listens there)"
    elif isinstance(exc, TimeoutError):
        why = "no answer (a firewall, or the wrong host?)"
    elif isinstance(exc, socket.gaierror):
        why = f"the name does not resolve ({exc.strerror})"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        return EnrolmentError(f"enrolment at {address} failed: {exc}", False)
    return EnrolmentError(
        f"cannot reach the inventory's enrolment port {address}: {why}; check --inventory and "
        "--bootstrap-address and that `nodeagent inventory serve` runs there",
        True,
    )


class Identity:
    """The node's credentials on disk (0600 key), in state_dir/identity/."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key, self.cert, self.ca, self.id = (
            directory / "node.key",
            directory / "node.crt",
            directory / "ca.crt",
            directory / "node_id",
        )

    def exists(self) -> bool:
        return all(p.exists() for p in (self.key, self.cert, self.ca, self.id))

    def save(self, node_id: str, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        tlsutil.write_private(self.key, key_pem)
        tlsutil.write_private(self.cert, cert_pem)
        tlsutil.write_private(self.ca, ca_pem)
        tlsutil.write_private(self.id, node_id.encode())

    def node_id(self) -> str:
        return self.id.read_text().strip() if self.id.exists() else ""

    def enrolment_key(self) -> ec.EllipticCurvePrivateKey:
        """The key to enrol with, written before the first Register and reused after.

        If the agent dies after the inventory issued its certificate but before it was
        saved, the next attempt sends a CSR from the same key: that is the proof the
        inventory asks for before it hands an enrolled node's id out again.
        """
        if self.key.exists():
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        key = tlsutil.new_key()
        tlsutil.write_private(self.key, tlsutil.key_pem(key))
        return key


class InventoryClient:
    def __init__(
        self,
        cfg: InventoryClientConfig,
        state_dir: str,
        snapshot: Callable[[], Snapshot],
        on_desired: Callable[[ipb.Assignment], None] | None = None,
        on_tiers: Callable[[fpb.FabricTiers], None] | None = None,
        on_hooks: Callable[[list[ipb.HookRequest]], None] | None = None,
        on_reported: Callable[[list[ipb.HookResult]], None] | None = None,
        on_validations: Callable[[list[ipb.ValidationAsk]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.identity = Identity(Path(state_dir) / "identity")
        self.snapshot = snapshot
        self.state = "enrolling"
        self.desired = ipb.Assignment()
        self.node_state = ipb.NODE_STATE_UNSPECIFIED
        self.interval = cfg.heartbeat_seconds or 10.0
        self._sent_hash = ""
        self._sent_fabric = b""
        self._sent_blocking: list[str] | None = None
        self._sent_labels = b""
        self._sent_network = b""
        self._sent_hook_phases: list[str] | None = None
        self._on_tiers = on_tiers
        self._on_hooks = on_hooks
        self._on_reported = on_reported
        self._on_validations = on_validations
        self._sent_acceptance = b""
        self.tiers = fpb.FabricTiers()  # the fleet's view of where this node sits
        self._channel: Any = None
        self._on_desired = on_desired
        self._session = StreamSession(self)  # heartbeats on a stream (cfg.stream)
        self._renew_due = False  # asked in an answer to a quiet beat (pushed)
        self._target = -1  # index into targets(); chosen at random on the first connect
        self.target = ""  # the replica connected to

    def _desired(self, desired: ipb.Assignment, state: ipb.NodeState) -> None:
        changed = desired != self.desired
        self.desired, self.node_state = desired, state
        if changed and self._on_desired is not None:
            self._on_desired(desired)

    @property
    def bootstrap_address(self) -> str:
        if self.cfg.bootstrap_address:
            return self.cfg.bootstrap_address
        host, _, port = self.cfg.address.rpartition(":")
        return f"{host}:{int(port) + 1}"

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if not self.identity.exists():
                    await self.enrol()
                await self.heartbeat()
                failures = 0
                delay = self.interval * random.uniform(0.8, 1.2)
            except EnrolmentError as exc:
                failures += 1
                self.state = f"enrolment failed: {exc}"
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 10)))
                # the token file is read again each time: a new token there is picked up
                (log.warning if exc.retry else log.error)(
                    "enrolment: %s (trying again in %.0f s)", exc, delay
                )
                await self._close()
            except grpc.aio.AioRpcError as exc:
                failures += 1
                self.state = f"unreachable: {exc.code().name}: {exc.details()}"
                if exc.code() not in RETRYABLE:
                    log.error("inventory refused: %s: %s", exc.code().name, exc.details())
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 10)))
                await self._close()
            except (OSError, ValueError) as exc:  # network down, pin mismatch, bad files
                failures += 1
                self.state = f"unreachable: {exc}"
                log.warning("inventory: %s", exc)
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 10)))
                await self._close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        await self._close()

    async def _close(self) -> None:
        await self._session.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def enrol(self) -> None:
        """Register with the bootstrap token; any failure is an EnrolmentError (one line)."""
        address = self.bootstrap_address
        try:
            token = Path(self.cfg.token_file).read_text().strip()
        except OSError as exc:
            raise EnrolmentError(
                f"cannot read the bootstrap token file {self.cfg.token_file}: {exc.strerror}; "
                f"{NEW_TOKEN}",
                False,
            ) from None
        try:
            ca_pem = await asyncio.to_thread(tlsutil.fetch_pinned_ca, address, self.cfg.ca_hash)
            key = self.identity.enrolment_key()
            csr = tlsutil.make_csr(key, "node")
            snap = self.snapshot()
            async with channels.secure_aio_channel(address, ca_pem) as channel:
                stub = inventory_pb2_grpc.InventoryServiceStub(channel)
                resp = await stub.Register(
                    ipb.RegisterRequest(
                        token=token, csr_pem=csr.decode(), inventory=snap.inventory
                    ),
                    timeout=30,
                )
        except (grpc.aio.AioRpcError, OSError, ValueError) as exc:
            raise explain(exc, address) from None
        self.identity.save(
            resp.node_id,
            tlsutil.key_pem(key),
            resp.certificate_pem.encode(),
            resp.ca_bundle_pem.encode(),
        )
        self._sent_hash = snap.inventory_hash
        self._desired(resp.desired, resp.state)
        if resp.heartbeat_interval_seconds and not self.cfg.heartbeat_seconds:
            self.interval = float(resp.heartbeat_interval_seconds)
        log.info("enrolled as node %s", resp.node_id)

    def _stub(self) -> inventory_pb2_grpc.InventoryServiceStub:
        if self._channel is None:
            ident = self.identity
            targets = replica_targets(self.cfg)
            # a node's first replica at random (the fleet spreads), then round the list: a
            # replica that failed is left for the next (see run(): the node's own backoff)
            self._target = (
                random.randrange(len(targets)) if self._target < 0 else self._target + 1
            ) % len(targets)
            self.target, name = targets[self._target]
            self._channel = channels.secure_aio_channel(
                self.target,
                ident.ca.read_bytes(),
                ident.cert.read_bytes(),
                ident.key.read_bytes(),
                server_name=name,
            )
        return inventory_pb2_grpc.InventoryServiceStub(self._channel)

    async def _exchange(self, req: ipb.HeartbeatRequest) -> ipb.HeartbeatResponse:
        """One heartbeat: on the stream (cfg.stream) unless this inventory has none."""
        if self.cfg.stream and not self._session.unimplemented:
            streamed = await self._session.beat(req)
            if streamed is not None:
                return streamed
        resp: ipb.HeartbeatResponse = await self._stub().Heartbeat(req, timeout=5)
        return resp

    def _take_actions(self, resp: ipb.HeartbeatResponse) -> None:
        """What an answer asks of the node: the inventory goes with the next beat, and a
        renewal before it (heartbeat)."""
        if "send-inventory" in resp.actions:
            self._sent_hash = ""
        if "renew-certificate" in resp.actions:
            self._renew_due = True

    def pushed(self, resp: ipb.HeartbeatResponse) -> None:
        """What the inventory wrote down the stream between answers (a push, or the answer
        to a quiet beat, which carries actions too): applied at once, a renewal at the
        next beat."""
        self._take_actions(resp)
        if resp.validations and self._on_validations is not None:
            self._on_validations(list(resp.validations))
        if resp.HasField("fleet_tiers") and self._on_tiers is not None:
            self._on_tiers(resp.fleet_tiers)
        if resp.hooks and self._on_hooks is not None:
            self._on_hooks(list(resp.hooks))
        self._desired(resp.desired, resp.state)

    def _health_fields(self, req: ipb.HeartbeatRequest, snap: Snapshot) -> None:
        """What the inventory's health policy reads: XIDs since the last acknowledged beat
        (counts only grow, so a delta is exactly what is new), rails, devices."""
        sent: dict[tuple[str, int], int] = getattr(self, "_sent_xids", {})
        for (gpu, code), count in sorted(snap.xids.items()):
            new = count - sent.get((gpu, code), 0)
            if new > 0:
                req.xids.add(gpu=gpu, code=code, count=new)
        req.row_remap_failure = snap.row_remap_failure
        req.rails_down, req.rails_degraded = snap.rails_down, snap.rails_degraded
        if snap.devices_ok is not None:
            req.devices_ok, req.devices_set = snap.devices_ok, True

    async def heartbeat(self) -> None:
        snap = self.snapshot()
        req = ipb.HeartbeatRequest(
            node_id=self.identity.node_id(),
            phase=snap.phase,
            drift_count=snap.drift_count,
            health=snap.health[:50],
            inventory_hash=snap.inventory_hash,
        )
        if snap.inventory_hash != self._sent_hash:
            req.inventory.CopyFrom(snap.inventory)
        self._health_fields(req, snap)
        if snap.blocking is not None and snap.blocking != self._sent_blocking:
            req.blocking.extend(snap.blocking)  # only on change: the service stores them
            req.blocking_set = True
        labels = snap.labels.SerializeToString(deterministic=True) if snap.labels else b""
        if snap.labels is not None and labels != self._sent_labels:
            req.labels.CopyFrom(snap.labels)
        network = snap.network.SerializeToString(deterministic=True) if snap.network else b""
        if snap.network is not None and network != self._sent_network:
            req.network.CopyFrom(snap.network)
        req.fleet_tiers_hash = snap.fleet_tiers_hash
        req.hook_results.extend(snap.hook_results or [])
        if snap.hook_phases is not None and snap.hook_phases != self._sent_hook_phases:
            req.hook_phases.extend(snap.hook_phases)
            req.hook_phases_set = True
        report, request_id = snap.acceptance  # sent when it changes, progress included
        acceptance = report.SerializeToString(deterministic=True) if report else b""
        if report is not None and acceptance + request_id.encode() != self._sent_acceptance:
            req.acceptance.CopyFrom(report)
            req.acceptance_request_id = request_id
        resp = await self._exchange(req)
        if req.HasField("acceptance"):
            self._sent_acceptance = acceptance + request_id.encode()
        if resp.validations and self._on_validations is not None:
            self._on_validations(list(resp.validations))
        if req.HasField("labels"):
            self._sent_labels = labels
        if req.HasField("network"):
            self._sent_network = network
        if req.hook_phases_set:
            self._sent_hook_phases = list(req.hook_phases)
        if req.hook_results and self._on_reported is not None:
            self._on_reported(list(req.hook_results))
        if resp.HasField("fleet_tiers") and self._on_tiers is not None:
            self._on_tiers(resp.fleet_tiers)
        if resp.hooks and self._on_hooks is not None:
            self._on_hooks(list(resp.hooks))
        if req.HasField("inventory"):
            self._sent_hash = snap.inventory_hash
        if req.blocking_set:
            self._sent_blocking = list(snap.blocking or [])
        self._sent_xids = dict(snap.xids)  # acknowledged: the next beat sends only new ones
        self._take_actions(resp)
        if self._renew_due:
            self._renew_due = False
            await self.renew()
        await self._report_fabric(snap)
        if self.state != "connected":
            log.info("inventory connected (%s)", self.target)
        self.state = "connected"
        self._desired(resp.desired, resp.state)
        if resp.next_interval_seconds and not self.cfg.heartbeat_seconds:
            self.interval = float(resp.next_interval_seconds)

    async def _report_fabric(self, snap: Snapshot) -> None:
        """The fabric observation, when it changed: the service groups the whole fleet."""
        if snap.fabric is None:
            return
        blob = snap.fabric.SerializeToString(deterministic=True)
        if blob == self._sent_fabric:
            return
        self._stub()  # opens the mTLS channel if needed
        stub = fleet_pb2_grpc.FleetServiceStub(self._channel)
        resp = await stub.ReportFabric(
            fleet_pb2.ReportFabricRequest(node_id=self.identity.node_id(), observation=snap.fabric),
            timeout=10,
        )
        self._sent_fabric = blob
        self.tiers = resp.tiers

    async def renew(self) -> None:
        key = tlsutil.new_key()
        resp = await self._stub().RenewCertificate(
            ipb.RenewCertificateRequest(csr_pem=tlsutil.make_csr(key, "node").decode()), timeout=30
        )
        self.identity.save(
            self.identity.node_id(),
            tlsutil.key_pem(key),
            resp.certificate_pem.encode(),
            resp.ca_bundle_pem.encode(),
        )
        await self._close()  # reconnect with the new certificate
        log.info("node certificate renewed")


def replica_targets(cfg: InventoryClientConfig) -> list[tuple[str, str]]:
    """(address to dial, name its certificate carries) for every replica the config names.

    `addresses` as given; else `address`, and when its name resolves to several addresses
    (one A record per replica) each of them, checked against the name. A name that does not
    resolve now stays as it is, for gRPC to resolve (and fail, and retry) itself.
    """
    if cfg.addresses:
        return [(a, "") for a in cfg.addresses]
    host, _, port = cfg.address.rpartition(":")
    name = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
        return [(cfg.address, "")]  # an address already
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return [(cfg.address, "")]
    found = sorted({str(i[4][0]) for i in infos})
    if len(found) < 2:
        return [(cfg.address, "")]
    return [(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", name) for ip in found]


class StreamSession:
    """The node's `Session` stream: a beat is written and its acknowledgement awaited; a
    reader task takes acknowledgements and pushes (desired state changed) as they come.

    A broken stream fails the beat in flight (and any after it) like a failed unary call,
    so the client's run loop backs off with jitter and the next beat opens a new stream,
    on the next replica: agents leave a dead replica at their own jittered beat times, not
    all at once. Nothing is assumed delivered without its acknowledgement.

    A beat of state alone that repeats the last acknowledged one (heartbeat.py) goes quiet:
    written, not waited for, answered by the inventory only when the answer changed. It
    needs no acknowledgement of its own: news is never in one, and the next answered beat
    confirms it (a stream is read in order). At most QUIET_RUN go in a row, so a replica
    that stopped answering is found within QUIET_RUN + 1 beats. Most beats of a quiet fleet
    are these: a message up and none down, half the server's work per beat on gRPC's part.
    """

    ACK_SECONDS = 5.0  # as the unary call's deadline
    QUIET_RUN = 2

    def __init__(self, client: InventoryClient) -> None:
        self.client = client
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.sequence = 0
        self.waiting: dict[int, asyncio.Future[ipb.HeartbeatResponse]] = {}
        self.unimplemented = False  # an inventory without Session: unary from now on
        self.pushes = 0
        # what the inventory last told this node (an answer or a push): a bare
        # acknowledgement means "unchanged", and is answered from it, less its actions
        self.told = ipb.HeartbeatResponse()
        # the last beat acknowledged on this stream, when a later one may repeat it
        self.acked: ipb.HeartbeatRequest | None = None
        self.quiet_run = 0

    async def beat(self, req: ipb.HeartbeatRequest) -> ipb.HeartbeatResponse | None:
        """The acknowledged answer (for a quiet beat, what the node was last told), or
        None when the inventory has no stream (unary then)."""
        if self.call is None or self.call.done():
            await self.close()
            self.call = self.client._stub().Session()
            self.reader = asyncio.get_running_loop().create_task(self._read(self.call))
            self.acked, self.quiet_run = None, 0  # a new stream: its first beat answered
        self.sequence += 1
        seq = self.sequence
        quiet = self.acked is not None and req == self.acked and self.quiet_run < self.QUIET_RUN
        done: asyncio.Future[ipb.HeartbeatResponse] = asyncio.get_running_loop().create_future()
        if not quiet:
            self.waiting[seq] = done
        try:
            await asyncio.wait_for(
                self.call.write(ipb.SessionRequest(sequence=seq, heartbeat=req, quiet=quiet)),
                self.ACK_SECONDS,
            )
            if quiet:
                self.quiet_run += 1
                return self.told
            resp = await asyncio.wait_for(done, self.ACK_SECONDS)
            self.acked, self.quiet_run = heartbeat.repeatable(req), 0
            return resp
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log.info("the inventory has no heartbeat stream: unary heartbeats")
            self.unimplemented = True
            await self.close()
            return None
        except (TimeoutError, asyncio.InvalidStateError) as exc:
            await self.close()  # a stream that does not answer is as good as broken
            raise ConnectionError(f"heartbeat stream: no acknowledgement ({exc!r})") from None
        finally:
            self.waiting.pop(seq, None)

    async def _read(self, call: Any) -> None:
        failure: BaseException = ConnectionError("heartbeat stream closed by the inventory")
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    break
                if msg.HasField("heartbeat"):
                    self.told = ipb.HeartbeatResponse()
                    self.told.CopyFrom(msg.heartbeat)
                    self.told.ClearField("actions")  # they answer that beat alone
                waiter = self.waiting.get(msg.acknowledged) if msg.acknowledged else None
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(msg.heartbeat if msg.HasField("heartbeat") else self.told)
                elif msg.HasField("heartbeat"):  # a push, or a quiet beat's changed answer
                    self.pushes += 1
                    self.client.pushed(msg.heartbeat)
        except grpc.aio.AioRpcError as exc:
            failure = exc
        finally:
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(failure)

    async def close(self) -> None:
        call, reader, self.call, self.reader = self.call, self.reader, None, None
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
