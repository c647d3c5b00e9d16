"""`nodeagent inventory serve`: the central inventory service (grpc.aio).

TLS always, with a serving certificate from the service's own CA, on two ports:
`listen` requires a client certificate (mTLS) and serves everything; the
enrolment port (`bootstrap_listen`, by default the next port) asks for none and
serves only `Register`, which authenticates with a bootstrap token and returns
a certificate. Every other call is authorised from the client certificate:
a node may heartbeat, renew and read only its own record; admins act by role.

Heartbeats are answered from memory plus one small transaction only when
something beyond liveness changed (phase, inventory); last_seen values are
flushed in batches. Reachability is computed from last_seen against a deadline,
one sweep per interval for the whole fleet, not a timer per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nodeagent import __version__
from nodeagent import label_syntax as syntax
from nodeagent.api import auth, heartbeat
from nodeagent.api.handlers import StreamReader, service_handler
from nodeagent.api.v1 import fleet_pb2, inventory_pb2_grpc
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.inventory import (
    acceptance,
    certificates,
    kube_state,
    kubespray,
    lifecycle,
    nodes,
    pki,
    reports,
    sessions,
    tokens,
)
from nodeagent.inventory.ansible_env import Envs
from nodeagent.inventory.auth import ENROLMENT, PERMISSIONS
from nodeagent.inventory.catalogue import ProfileCatalogue
from nodeagent.inventory.cluster_rpcs import ClusterRpcs
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.fleet import FleetServicer
from nodeagent.inventory.health_watch import HealthWatch
from nodeagent.inventory.join_runner import JoinScheduler
from nodeagent.inventory.metrics import FleetGauges, InventoryCollector, MetricsServer
from nodeagent.inventory.reconciler import Reconciler
from nodeagent.inventory.stats import ServiceStats
from nodeagent.inventory.store import Conflict, NotFound, Store, StoreError
from nodeagent.tlsutil import spki_hash

log = logging.getLogger("nodeagent.inventory")
MAX_BLOCKING = 50  # failing preflight checks a heartbeat may carry
PUSH_SECONDS = 5.0  # a push not written by then is given up (the next beat answers it)
MAX_PENDING_CALLS = 100_000  # calls core queues for the event loop before refusing more
KEEPALIVE_OFF = 2**31 - 1  # gRPC reads INT_MAX ms as "never"
ERRORS = [
    (tokens.TokenError, grpc.StatusCode.UNAUTHENTICATED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (lifecycle.TransitionError, grpc.StatusCode.FAILED_PRECONDITION),
    (nodes.AlreadyEnrolled, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (pki.PkiError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
]


LOGGED_NODES = 20  # a sweep that flips more logs counts and a few ids, not a line each


def log_reachability(changed: list[tuple[str, bool]]) -> None:
    """A line per node that crossed the deadline, or, when a whole fleet crosses (an
    outage ending, a network coming back), one line each way: 10,000 lines on the event
    loop would hold up the very heartbeats that came back."""
    for up, what in ((False, "unreachable"), (True, "reachable again")):
        ids = [node_id for node_id, flipped in changed if flipped == up]
        if len(ids) > LOGGED_NODES:
            log.info("%d nodes %s, among them %s", len(ids), what, ", ".join(ids[:5]))
        else:
            for node_id in ids:
                log.info("node %s %s", node_id, what)


class InventoryServicer(ClusterRpcs, inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, service: InventoryService) -> None:
        self.service = service
        self.store = service.store

    def ansible_envs(self) -> Envs:
        return self.service.envs

    # --- node RPCs ---
    async def Register(
        self, request: ipb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> ipb.RegisterResponse:
        """Counted for the metrics whatever refuses it: token, proof, CSR or database."""
        try:
            response = await self._register(request)
        except Exception:
            self.service.stats.enrolment(False)
            raise
        self.service.stats.enrolment(True)
        return response

    async def _register(self, request: ipb.RegisterRequest) -> ipb.RegisterResponse:
        s = self.service
        if not request.token:
            raise tokens.TokenError("a bootstrap token is required")
        csr = request.csr_pem.encode()
        csr_key = spki_hash(pki.load_csr(csr))
        try:
            node, cert_pem, warnings = await s.store.run(
                nodes.register,
                s.store,
                request.token,
                request.inventory,
                csr_key,
                s.issuer(csr),
                s.profiles.fit,
            )
        except tokens.TokenError as exc:
            log.warning("registration refused (token %s): %s", tokens.redact(request.token), exc)
            raise
        except nodes.AlreadyEnrolled as exc:
            why = f"refused a registration as this node (token {tokens.redact(request.token)})"
            await s.store.run(nodes.record_refused, s.store, exc.node_id, why)
            log.warning("registration refused (token %s): %s", tokens.redact(request.token), exc)
            raise
        log.info(
            "registered node %s (%s) with token %s",
            node.id,
            node.hostname,
            tokens.redact(request.token),
        )
        for warning in warnings:
            log.warning("node %s: %s", node.id, warning)
        s.seen(node.id, "DISCOVERED")
        s.nodes[node.id] = (node, "DISCOVERED", time.monotonic())
        return ipb.RegisterResponse(
            node_id=node.id,
            certificate_pem=cert_pem.decode(),
            ca_bundle_pem=s.ca.pem.decode(),
            heartbeat_interval_seconds=s.config.heartbeat_interval_seconds,
            desired=node.assignment,
            state=node.state,
        )

    async def Heartbeat(
        self, request: ipb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> ipb.HeartbeatResponse:
        return await self._beat(request, context)

    async def Session(  # type: ignore[override]  # grpc.aio's read/write API, not a generator
        self, requests: StreamReader, context: grpc.aio.ServicerContext
    ) -> None:
        """Heartbeats on one stream, each answered as the unary Heartbeat answers it (the
        same code), plus pushes when the node's desired state changes (sessions.py).

        This task reads and answers beats in order; a push is written from the poll's
        task, and the session's lock keeps the two writes apart. An answer that is exactly
        what the node was last told goes as a bare acknowledgement. The certificate is
        checked against the revocation list on every beat, as a new call would be.

        A beat that repeats the stream's last one (state alone, heartbeat.py), for a node
        whose record has not changed since, takes the repeat path: liveness and the health
        streak, not the checks and reports of a beat that says something. A quiet beat
        (the agent waits for no answer) is answered only when the answer changed. A repeat
        whose answer would be the record the node was last told, and nothing besides, is
        not even built: a bare acknowledgement, or nothing for a quiet beat (_bare)."""
        s, me = self.service, auth.caller()
        session = sessions.Session(me.name, context)
        serial = format(me.serial, "x")  # as the revocation list holds it, once per stream
        s.sessions.attach(session)
        try:
            while (req := await requests.read()) is not None:
                session.heard = time.monotonic()
                if serial in s.revocations.serials:
                    raise tokens.TokenError(
                        f"certificate {me.serial:x} of {me.actor} has been revoked"
                    )
                beat = req.heartbeat
                node = None
                if session.beat is not None and beat == session.beat:
                    node = self._repeat(beat, session)
                    if node is not None and node is session.told and self._bare(node, beat):
                        # its answer is what the node was last told: not built, and only
                        # acknowledged (a quiet beat: not even that)
                        if not req.quiet:
                            await session.acknowledge(req.sequence)
                        continue
                if node is None:
                    node = await self._apply(beat, context)
                    session.beat = heartbeat.repeatable(beat)
                    session.entry = s.nodes.get(me.name)
                resp = self._respond(node, beat)
                await session.answer(req.sequence, resp, beat.fleet_tiers_hash, req.quiet, node)
        except asyncio.CancelledError:
            if session.ended is None:  # the server stopping
                raise
            # ended here (sessions.py): a status goes down, so the call ends in core and
            # the connection's next write finds out whether anyone is still there
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(session.ended)
        finally:
            s.sessions.detach(session)

    def _repeat(self, request: ipb.HeartbeatRequest, session: sessions.Session) -> ipb.Node | None:
        """The node, when this beat repeats the session's last (checked and stored then)
        and neither the node's record nor its health verdict moved since: then the beat is
        liveness and a step of the health streak. None: the full path."""
        s = self.service
        entry = s.cached(session.node_id)
        if entry is None or entry is not session.entry or entry[1] != request.phase:
            return None  # changed since (poll, move, expiry), or the phase to apply again
        if not s.health.repeat(entry[0], request):
            return None
        s.stats.heartbeat()
        s.seen(session.node_id, request.phase)
        session.repeats += 1
        return entry[0]

    async def _beat(
        self, request: ipb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> ipb.HeartbeatResponse:
        """One unary heartbeat: every field is handled in _apply, once, as on a stream."""
        return self._respond(await self._apply(request, context), request)

    async def _apply(
        self, request: ipb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Node:
        """What a heartbeat says, checked and stored; the node's record after it."""
        s, me = self.service, auth.caller()
        s.stats.heartbeat()
        if request.node_id and request.node_id != me.name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate is for node {me.name}, not {request.node_id}",
            )
        auth.validate_text(request.phase, "phase", 32)
        blocking = list(request.blocking) if request.blocking_set else None
        if blocking is not None:
            if len(blocking) > MAX_BLOCKING:
                raise ValueError(f"blocking: at most {MAX_BLOCKING} checks")
            for entry in blocking:
                auth.validate_text(entry, "blocking", 1000)
        await self._store_reports(request, me.name)
        cached = s.cached(me.name)
        inv = request.inventory if request.HasField("inventory") else None
        if cached is None or inv is not None or cached[1] != request.phase or blocking is not None:
            node, _ = await s.store.run(
                nodes.heartbeat_update,
                s.store,
                me.name,
                request.phase,
                inv,
                request.inventory_hash,
                blocking,
            )
            s.nodes[me.name] = (node, request.phase, time.monotonic())
        else:
            node = cached[0]  # nothing but liveness changed: no transaction
        node = await self._store_acceptance(request, node)
        moved = await s.health.on_heartbeat(node, request, inv)  # the health policy
        if moved is not None:
            node = moved
            # no phase cached: the next heartbeat applies the agent's phase again (a node
            # released to DISCOVERED goes on to the READY its agent reports)
            s.nodes[me.name] = (node, "", time.monotonic())
        s.seen(me.name, request.phase)
        return node

    def _actions(self, node: ipb.Node, request: ipb.HeartbeatRequest) -> list[str]:
        wants = bool(request.inventory_hash) and request.inventory_hash != node.inventory_hash
        actions = ["send-inventory"] if wants else []
        if node.certificate_expires.seconds and node.certificate_expires.seconds - time.time() < (
            self.service.config.node_cert_days * 86400 / 3
        ):
            actions.append("renew-certificate")
        return actions

    def _bare(self, node: ipb.Node, request: ipb.HeartbeatRequest) -> bool:
        """Whether the answer to `request` would be `node`'s record alone: no actions, tiers,
        hooks or validations. A repeat whose node was last told that record then needs no
        answer built to find out that it changes nothing (most beats of a quiet fleet:
        issue 20)."""
        s = self.service
        return (
            not self._actions(node, request)
            and not s.reports.adds(node.id, request.fleet_tiers_hash)
            and not s.validations.get(node.id)
        )

    def _respond(self, node: ipb.Node, request: ipb.HeartbeatRequest) -> ipb.HeartbeatResponse:
        """The answer to a heartbeat from `node` (its record after the beat)."""
        s = self.service
        resp = ipb.HeartbeatResponse(
            desired=node.assignment,
            state=node.state,
            actions=self._actions(node, request),
            next_interval_seconds=s.config.heartbeat_interval_seconds,
        )
        s.reports.fill(resp, node.id, request.fleet_tiers_hash)
        resp.validations.extend(s.validations.get(node.id, []))
        return resp

    async def _store_acceptance(self, request: ipb.HeartbeatRequest, node: ipb.Node) -> ipb.Node:
        """The acceptance report a heartbeat carries (only when it changed): checked,
        stored, and the node moved when a finished run failed its required level."""
        if not request.HasField("acceptance"):
            return node
        s, asked = self.service, request.acceptance_request_id
        acceptance.check_report(request.acceptance, asked)
        if asked:  # answered: stop asking before the next poll
            s.validations = acceptance.answered(s.validations, node.id, asked)
        if not await s.store.run(
            acceptance.store_report, s.store, node.id, request.acceptance, asked
        ):
            return node
        moved: ipb.Node = await s.store.run(nodes.get_node, s.store, node.id, 0, s.deadline())
        moved.ClearField("inventory")
        moved.ClearField("events")
        # no phase cached: the next heartbeat applies the agent's phase to the new state
        s.nodes[node.id] = (moved, "", time.monotonic())
        return moved

    async def StartValidation(
        self, request: ipb.StartValidationRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ValidationAsk:
        s = self.service
        auth.validate_text(request.node_id, "node_id", 64)
        ask: ipb.ValidationAsk = await s.store.run(
            acceptance.ask, s.store, request.node_id, request.level, auth.caller().name
        )
        s.validations.setdefault(ask.node_id, []).append(ask)  # this replica asks at once
        return ask

    async def _store_reports(self, request: ipb.HeartbeatRequest, node_id: str) -> None:
        """The label map, addresses and hook results a heartbeat carries (each only sent
        when it changed), checked before anything is stored."""
        labels = request.labels if request.HasField("labels") else None
        network = request.network if request.HasField("network") else None
        if labels is not None:
            reports.check_labels(labels)
        if network is not None:
            reports.check_network(network)
        reports.check_hook_results(request.hook_results)
        phases = list(request.hook_phases) if request.hook_phases_set else None
        if phases is not None:
            reports.check_hook_phases(phases)
        if labels is not None or network is not None or request.hook_results or phases is not None:
            s = self.service
            await s.store.run(
                reports.store_reports,
                s.store,
                node_id,
                labels,
                network,
                request.hook_results,
                phases,
            )
            for r in request.hook_results:  # answered: stop asking before the next poll
                asked = s.reports.hooks.get(node_id, [])
                s.reports.hooks[node_id] = [
                    h for h in asked if (h.phase, h.request_id) != (r.phase, r.request_id)
                ]

    async def RenewCertificate(
        self,
        request: ipb.RenewCertificateRequest,
        context: grpc.aio.ServicerContext,
    ) -> ipb.RenewCertificateResponse:
        s, me = self.service, auth.caller()
        csr = request.csr_pem.encode()
        cert_pem = await s.store.run(nodes.renew, s.store, me.name, s.issuer(csr))
        s.nodes.pop(me.name, None)
        return ipb.RenewCertificateResponse(
            certificate_pem=cert_pem.decode(), ca_bundle_pem=s.ca.pem.decode()
        )

    # --- admin RPCs ---
    async def ListNodes(
        self, request: ipb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListNodesResponse:
        for value, what in (
            (request.pool, "pool"),
            (request.gpu_model, "gpu_model"),
            (request.cluster, "cluster"),
            (request.page_token, "page_token"),
        ):
            auth.validate_text(value, what)
        return await self.service.store.run(
            nodes.list_nodes, self.service.store, request, self.service.deadline()
        )

    async def GetNode(
        self, request: ipb.GetNodeRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Node:
        me = auth.caller()
        if me.kind == pki.NODE and request.node_id != me.name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "a node may read only its own record"
            )
        node: ipb.Node = await self.service.store.run(
            nodes.get_node,
            self.service.store,
            request.node_id,
            min(request.events or 50, 1000),
            self.service.deadline(),
        )
        status = await self.service.store.run(self.service.kube_status, node.id)
        if status is not None:  # the node in its cluster, as the reconciler left it
            node.kube.CopyFrom(status)
        report, ask = await self.service.store.run(self.service.acceptance, node.id)
        if report is not None:  # the latest acceptance report, and the latest remote run
            node.acceptance.CopyFrom(report)
        if ask is not None:
            node.validation.CopyFrom(ask)
        return node

    async def _check_assignment(self, a: ipb.Assignment, fields: list[str], what: str) -> None:
        """Text fit to store, and a profile this inventory knows (a name no node can find
        would only fail on the node, after its reinstall)."""
        for value, name in (
            (a.pool, "pool"),
            (a.role, "role"),
            (a.cluster, "cluster"),
            (a.profile, "profile"),
        ):
            auth.validate_text(value, f"{what}{name}", 63)
        for key, value in a.labels.items():
            auth.validate_text(key, f"{what}label key")
            auth.validate_text(value, f"{what}label value", 63)
        for taint in a.taints:
            auth.validate_text(taint, f"{what}taint")
        # refused here, naming the rule: the node would write it where NFD drops the file
        bad = syntax.problems_with_rules(dict(a.labels)) + kubespray.labels_problems({}, a.taints)
        if bad:
            raise ValueError(f"{what}{bad[0]}")
        if a.profile and "profile" in fields:  # a re-read of the files is not the loop's work
            await asyncio.to_thread(self.service.profiles.get, a.profile)

    async def UpdateAssignment(
        self, request: ipb.UpdateAssignmentRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Node:
        a = request.assignment
        await self._check_assignment(a, nodes.chosen_fields(list(request.fields)), "")
        node, warnings = await self.service.store.run(
            nodes.update_assignment,
            self.service.store,
            request.node_id,
            a,
            list(request.fields),
            auth.caller().actor,
            self.service.profiles.fit,
        )
        for warning in warnings:
            log.warning("node %s: %s", request.node_id, warning)
        self.service.nodes.pop(request.node_id, None)
        return node

    async def _action(self, fn: Any, request: ipb.NodeActionRequest) -> ipb.Node:
        auth.validate_text(request.reason, "reason", 1000)
        node: ipb.Node = await self.service.store.run(
            fn, self.service.store, request.node_id, auth.caller().actor, request.reason
        )
        self.service.nodes.pop(request.node_id, None)
        return node

    async def QuarantineNode(self, request: ipb.NodeActionRequest, context: Any) -> ipb.Node:
        if not request.reason.strip():
            raise ValueError("a quarantine needs a reason (--reason TEXT)")
        request.reason = f"manual: {request.reason}"
        return await self._action(nodes.quarantine, request)

    async def SetKubeconfig(
        self, request: ipb.SetKubeconfigRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Cluster:
        auth.validate_text(request.cluster, "cluster", 63)
        if len(request.kubeconfig) > 256 * 1024:
            raise ValueError("kubeconfig: at most 256 KiB")
        actor = auth.caller().actor
        cluster = await self.service.store.run(
            kube_state.set_kubeconfig,
            self.service.store,
            request.cluster,
            request.kubeconfig,
            f"set by {actor}",
        )
        log.info("cluster %s: kubeconfig set by %s", request.cluster, actor)
        return cluster

    async def HoldNode(self, request: ipb.NodeActionRequest, context: Any) -> ipb.Node:
        return await self._action(nodes.hold, request)

    async def ReleaseNode(self, request: ipb.NodeActionRequest, context: Any) -> ipb.Node:
        return await self._action(nodes.release, request)

    async def RetireNode(
        self, request: ipb.NodeActionRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Node:
        node = await self._action(nodes.retire, request)
        await self.service.revocations.refresh(self.service.store)
        return node

    async def DeleteNode(
        self, request: ipb.NodeActionRequest, context: grpc.aio.ServicerContext
    ) -> ipb.DeleteNodeResponse:
        await self.service.store.run(
            nodes.delete, self.service.store, request.node_id, auth.caller().actor
        )
        self.service.nodes.pop(request.node_id, None)
        await self.service.revocations.refresh(self.service.store)
        return ipb.DeleteNodeResponse()

    async def ListCertificates(
        self, request: ipb.ListCertificatesRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListCertificatesResponse:
        auth.validate_text(request.node_id, "node_id", 64)
        auth.validate_text(request.role, "role", 16)
        certs = await self.service.store.run(
            certificates.list_certificates, self.service.store, request
        )
        return ipb.ListCertificatesResponse(certificates=certs)

    async def RevokeCertificate(
        self, request: ipb.RevokeCertificateRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Certificate:
        auth.validate_text(request.reason, "reason", 200)
        actor = auth.caller().actor
        cert = await self.service.store.run(
            certificates.revoke, self.service.store, request.serial, actor, request.reason
        )
        self.service.revocations.add(cert.serial)
        log.info("certificate %s revoked by %s", cert.serial, actor)
        return cert

    async def CreateToken(
        self,
        request: ipb.CreateTokenRequest,
        context: grpc.aio.ServicerContext,
    ) -> ipb.CreateTokenResponse:
        auth.validate_text(request.description, "description", 200)
        await self._check_assignment(request.preset, list(nodes.ASSIGNMENT_FIELDS), "preset ")
        token, secret = await self.service.store.run(
            nodes.create_token, self.service.store, request, auth.caller().actor
        )
        log.info(
            "token %s created by %s (max uses %d%s)",
            token.id,
            auth.caller().actor,
            token.max_uses,
            f", re-enrols node {token.reenrol_node}" if token.reenrol_node else "",
        )
        return ipb.CreateTokenResponse(token=token, secret=secret)

    async def ListTokens(
        self, request: ipb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListTokensResponse:
        return ipb.ListTokensResponse(
            tokens=await self.service.store.run(nodes.list_tokens, self.service.store)
        )

    async def RevokeToken(
        self, request: ipb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Token:
        auth.validate_text(request.id, "id", 16)
        return await self.service.store.run(nodes.revoke_token, self.service.store, request.id)

    async def WatchNodes(
        self, request: ipb.WatchNodesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        # Polls the event table: works the same across replicas sharing one database.
        seq = request.after_sequence
        while True:
            rows = await self.service.store.run(self.service.store.events_after, seq)
            for row in rows:
                seq = row[0]
                yield nodes.event_from_row(row)
            if not rows:
                await asyncio.sleep(0.25)


def _refuse_busy(address: str, key: str) -> None:
    """Stop when another process listens on `address` (host:port), with one line.

    gRPC sets SO_REUSEPORT unless told not to, and then a second inventory on the same port
    shares its connections with the first: two CAs and two databases answering at random.
    The servers are built without it (their bind fails), and this probe says so first, in
    words and before the data directory, CA or database are touched; grpc's own bind error
    is a log line of the C core.
    """
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return  # an unresolvable name: gRPC's bind says what is wrong
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(
                        f"cannot listen on {address} ('{key}'): the address is in use (another "
                        f"inventory service?); stop it or choose another port",
                    ) from None


class InventoryService:
    def __init__(self, config: InventoryConfig) -> None:
        self.config = config
        _refuse_busy(config.listen, "listen")
        _refuse_busy(config.bootstrap_address, "bootstrap_listen")
        _refuse_busy(config.metrics_listen, "metrics_listen")
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        if data.stat().st_uid == os.getuid():  # the CA key and join job files live here
            data.chmod(0o700)
        self.profiles = ProfileCatalogue(config.profiles_dir)
        cert_path, key_path = config.ca_paths
        self.ca = pki.CertificateAuthority.load_or_create(
            cert_path, key_path, create=not (config.ca_cert and config.ca_key)
        )
        self.store = Store.open(config.database_url)
        self.stats = ServiceStats()  # what metrics.py exports; the reconciler counts here too
        self.store.on_tx = self.stats.transaction
        self.fleet = FleetGauges(self.store, self.deadline, config.metrics_refresh_seconds)
        self.metrics: MetricsServer | None = None
        self.envs = Envs(config)  # each cluster's Ansible (ansible_env.py)
        self.reports = reports.ReportCache()  # hooks asked and tiers changed, polled
        self.validations: dict[str, list[ipb.ValidationAsk]] = {}  # acceptance runs asked
        # id -> (node, last reported phase, when loaded): heartbeats that change nothing but
        # liveness are answered from here without a transaction
        self.nodes: dict[str, tuple[ipb.Node, str, float]] = {}
        # Other replicas and the join jobs change nodes too: the poll of changed nodes
        # (poll_changes) brings their writes in, so an entry is re-read only after this long,
        # a safety net. (It was 60 s without the poll: a sixth of all heartbeats were a
        # transaction through the pool, the bulk of PostgreSQL's wait; issue 20.)
        self.cache_seconds = 3600.0
        self.sessions = sessions.Sessions()  # heartbeat streams held here (sessions.py)
        self.changes_since = 0.0  # the mark of the last poll of changed nodes
        self._liveness: dict[str, tuple[float, str]] = {}
        self._stop = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.enrol_server: grpc.aio.Server | None = None
        self.revocations = certificates.RevocationList(config.revocation_refresh_seconds)
        self._tasks: list[asyncio.Task[None]] = []
        self.joins: JoinScheduler | None = None
        self.health = HealthWatch(self.store, config, self.profiles)
        self.reconciler: Reconciler | None = None
        self.port = 0
        self.bootstrap_port = 0

    def kube_status(self, node_id: str) -> ipb.KubeStatus | None:
        with self.store.tx() as cur:
            return kube_state.status(self.store, cur, node_id)

    def acceptance(
        self, node_id: str
    ) -> tuple[vpb.ValidationReport | None, ipb.ValidationAsk | None]:
        with self.store.tx() as cur:
            return acceptance.latest(self.store, cur, node_id)

    async def _poll_validations(self) -> None:
        """Remote acceptance runs asked on any replica, handed down in heartbeat replies."""
        while True:
            with contextlib.suppress(StoreError):
                self.validations = await self.store.run(acceptance.poll, self.store)
            await asyncio.sleep(self.config.report_poll_seconds)

    def cached(self, node_id: str) -> tuple[ipb.Node, str, float] | None:
        entry = self.nodes.get(node_id)
        if entry is not None and time.monotonic() - entry[2] > self.cache_seconds:
            return None
        return entry

    async def warm_cache(self) -> None:
        """Load every node once at start: a fleet reconnecting after a restart then costs
        no transaction per node."""
        now = time.monotonic()
        rows = await self.store.run(nodes.with_phase, self.store)
        self.nodes = {node.id: (node, phase, now) for node, phase in rows}

    async def _poll_reports(self) -> None:
        """Hooks a join job (on any replica) asks of its nodes, tiers an admin regrouped."""
        while True:
            with contextlib.suppress(StoreError):
                hooks, rows, mark = await self.store.run(
                    reports.poll, self.store, self.reports.tiers_since
                )
                reports.apply_poll(self.reports, hooks, rows)
                self.reports.tiers_since = mark
            await asyncio.sleep(self.config.report_poll_seconds)

    async def _poll_changes(self) -> None:
        """Nodes changed on any replica since the last look: into the heartbeat cache, and
        down the streams held here (with the hooks and acceptance runs asked meanwhile)."""
        while True:
            await asyncio.sleep(self.config.report_poll_seconds)
            with contextlib.suppress(StoreError):
                await self.poll_changes()

    async def poll_changes(self) -> None:
        changed, self.changes_since = await self.store.run(
            sessions.changed_since, self.store, self.changes_since or time.time()
        )
        now = time.monotonic()
        for node, phase in changed:
            cached = self.nodes.get(node.id)
            self.nodes[node.id] = (node, cached[1] if cached else phase, now)
        wanted = {n.id for n, _ in changed} | set(self.reports.hooks) | set(self.validations)
        writes = []
        for session in self.sessions.held(wanted):
            entry = self.nodes.get(session.node_id)
            if entry is not None:
                push = session.push(self.pushed(entry[0], session))
                writes.append(asyncio.wait_for(push, PUSH_SECONDS))
        # each on its own: a stream that ended meanwhile, or one whose node stopped
        # reading, delays no other push and holds the next poll back at most PUSH_SECONDS
        for failed in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(failed, Exception):
                log.debug("push not delivered: %s", failed)

    def pushed(self, node: ipb.Node, session: sessions.Session) -> ipb.HeartbeatResponse:
        """What a heartbeat would answer now, less the actions that answer a beat."""
        resp = ipb.HeartbeatResponse(
            desired=node.assignment,
            state=node.state,
            next_interval_seconds=self.config.heartbeat_interval_seconds,
        )
        self.reports.fill(resp, node.id, session.tiers_hash)
        resp.validations.extend(self.validations.get(node.id, []))
        return resp

    def seen(self, node_id: str, phase: str) -> None:
        self._liveness[node_id] = (time.time(), phase)

    def deadline(self) -> float:
        c = self.config
        return time.time() - c.heartbeat_interval_seconds * c.unreachable_after_missed

    async def _flush_liveness(self) -> None:
        while True:
            await asyncio.sleep(self.config.liveness_flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        if not self._liveness:
            return
        batch, self._liveness = self._liveness, {}
        rows = [(node_id, when, phase) for node_id, (when, phase) in batch.items()]
        try:
            await self.store.run(self.store.write_liveness, rows)
        except StoreError as exc:  # keep them for the next try; newer values win
            log.warning("liveness flush failed (%d nodes, will retry): %s", len(rows), exc)
            for node_id, value in batch.items():
                self._liveness.setdefault(node_id, value)

    async def _sweep(self) -> None:
        c = self.config
        while True:
            await asyncio.sleep(c.heartbeat_interval_seconds)
            # a node that beats no more on an open stream (a host that lost power leaves
            # its connection open here; the inventory sends no keepalive pings of its own)
            # has its stream ended one interval after it could be marked unreachable
            silent = c.heartbeat_interval_seconds * (c.unreachable_after_missed + 1)
            ended = self.sessions.end_silent(time.monotonic() - silent)
            if ended:
                log.info("ended %d streams silent for %d s", ended, silent)
            with contextlib.suppress(StoreError):
                changed = await self.store.run(self.store.sweep_reachability, self.deadline())
                log_reachability(changed)

    def _credentials(self, require_client_auth: bool) -> grpc.ServerCredentials:
        cert_pem, key_pem = self.ca.issue_server(self.config.server_names)
        # the CA goes in the chain so agents can check it against their pin before trusting it
        return grpc.ssl_server_credentials(
            [(key_pem, cert_pem + self.ca.pem)],
            root_certificates=self.ca.pem,
            require_client_auth=require_client_auth,
        )

    def issuer(self, csr: bytes) -> Callable[[str], x509.Certificate]:
        """Signs `csr` as a node certificate for the node id the registration settles on."""

        def issue(node_id: str) -> x509.Certificate:
            return self.ca.sign_csr(csr, node_id, pki.NODE, self.config.node_cert_days)

        return issue

    def _server(self) -> grpc.aio.Server:
        c = self.config
        return grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.max_send_message_length", c.max_message_bytes),
                ("grpc.keepalive_permit_without_calls", 1),
                # none of the inventory's own unless asked (config.py: a timer per
                # connection that core walks again and again; gRPC's default is 2 h)
                ("grpc.keepalive_time_ms", c.keepalive_seconds * 1000 or KEEPALIVE_OFF),
                ("grpc.keepalive_timeout_ms", 20000),
                # no bandwidth-delay probing: a ping after each heartbeat's few hundred
                # bytes would cost the server as much again as the beat (bench/fleet.py)
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.min_ping_interval_without_data_ms", 20000),
                # a second service on a taken port must fail, not share its connections
                ("grpc.so_reuseport", 0),
                # a replica's agents reconnecting at once open thousands of streams faster
                # than the event loop accepts them: queue them (core's defaults, 1,000 and
                # 3,000, refuse the rest) rather than turn a failover into a retry storm
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
            ]
        )

    async def _refresh_revocations(self) -> None:
        while True:
            await asyncio.sleep(self.revocations.refresh_seconds)
            try:
                await self.revocations.refresh(self.store)
            except StoreError as exc:  # keep the last list; the next round tries again
                log.warning("revocation list refresh failed: %s", exc)

    async def start(self) -> int:
        """Serve the API (mTLS) and, on its own port and server, enrolment (TLS, no client
        certificate): that port offers Register and health only, nothing to reflect on."""
        c = self.config
        service = ipb.DESCRIPTOR.services_by_name["InventoryService"]
        fleet = fleet_pb2.DESCRIPTOR.services_by_name["FleetService"]
        for served in (service, fleet):
            auth.check_covers(served, PERMISSIONS)
        await self.revocations.refresh(self.store)
        authorize = auth.Authorizer(PERMISSIONS, self.revocations.is_revoked)
        servicer = InventoryServicer(self)
        server = self._server()
        server.add_generic_rpc_handlers(
            (
                service_handler(service, servicer, authorize=authorize, errors=ERRORS),
                service_handler(
                    fleet,
                    FleetServicer(self.store, auth.caller),
                    authorize=authorize,
                    errors=ERRORS,
                ),
            )
        )
        enrol_server = self._server()
        enrol_server.add_generic_rpc_handlers(
            (
                service_handler(
                    service, servicer, authorize=authorize, errors=ERRORS, only=ENROLMENT
                ),
            )
        )
        health_servicer = health.aio.HealthServicer()
        for s in (server, enrol_server):
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, s)
        reflection.enable_server_reflection(
            (service.full_name, fleet.full_name, reflection.SERVICE_NAME, "grpc.health.v1.Health"),
            server,
        )
        self.port = _bind(server, c.listen, "listen", self._credentials(True))
        self.bootstrap_port = _bind(
            enrol_server, c.bootstrap_address, "bootstrap_listen", self._credentials(False)
        )
        await server.start()
        await enrol_server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(service.full_name, health_pb2.HealthCheckResponse.SERVING)
        self.server, self.enrol_server = server, enrol_server
        self.changes_since = time.time() - sessions.OVERLAP_SECONDS  # the cache is as new
        await self.warm_cache()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flush_liveness()),
            loop.create_task(self._sweep()),
            loop.create_task(self._refresh_revocations()),
        ]
        self.joins = JoinScheduler(
            self.store,
            c.data_dir,
            poll_seconds=c.join_poll_seconds,
            lease_seconds=c.join_lease_seconds,
            playbook_timeout=c.join_playbook_timeout_seconds,
            retention_seconds=c.join_job_retention_days * 86400,
            envs=self.envs,
            hook_timeout=c.join_hook_timeout_seconds,
        )
        self.joins.on_finished = self.stats.join_finished
        self._tasks.append(loop.create_task(self.joins.run()))
        self.reconciler = Reconciler(self.store, c, self.joins.owner, self.stats)
        self._tasks.append(loop.create_task(self.reconciler.run()))
        self._tasks.append(loop.create_task(self._poll_reports()))
        self._tasks.append(loop.create_task(self._poll_validations()))
        self._tasks.append(loop.create_task(self._poll_changes()))
        if c.metrics_listen:
            await self._start_metrics()
        log.info(
            "inventory serving on %s (CA %s, database %s)",
            c.listen,
            self.ca.pin,
            c.database_url.split("@")[-1],
        )
        return self.port

    async def _start_metrics(self) -> None:
        """The fleet gauges are read once before the first scrape can come, then by a task."""
        await self.fleet.refresh()
        collector = InventoryCollector(
            __version__,
            self.stats,
            self.fleet,
            self.ca.cert.not_valid_after_utc.timestamp(),
            self.config.node_cert_days * 86400 / 3,  # as Heartbeat asks for a renewal
        )
        self.metrics = MetricsServer(self.config.metrics_listen, collector)
        self._tasks.append(asyncio.get_running_loop().create_task(self.fleet.run()))

    async def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        for task in self._tasks:
            task.cancel()
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.joins is not None:
            await self.joins.stop()
        for server in (self.enrol_server, self.server):
            if server is not None:
                await server.stop(grace=3)
        with contextlib.suppress(StoreError):
            await self.flush()
        self.store.close()


def _bind(server: grpc.aio.Server, address: str, key: str, creds: grpc.ServerCredentials) -> int:
    """The port bound, or OSError naming the address and its configuration key."""
    try:
        port = int(server.add_secure_port(address, creds))
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if not port:
        raise OSError(
            f"cannot listen on {address} ('{key}'): in use or not an address of this host"
        )
    return port
