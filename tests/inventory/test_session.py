"""Heartbeats on a `Session` stream: acknowledged in order, handled as unary heartbeats are,
pushes when an admin changes the node on any replica, the agent's own client (stream,
replica list, fallback to unary), and what a stream may not do."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from nodeagent import tlsutil
from nodeagent.agent.config import InventoryClientConfig
from nodeagent.agent.enrol import InventoryClient, Snapshot, replica_targets
from nodeagent.api import channels
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc
from nodeagent.inventory import config as inventory_config
from testbed.agent_process import free_port
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory.conftest import EnrolledNode, ServiceThread, enrol
from tests.inventory.test_health_policy import RAILS, events, node_state, ready_node

S = ipb.NodeState

Factory = Callable[..., ServiceThread]


class Stream:
    """A node's Session stream driven from a test: send a beat, read what comes."""

    def __init__(self, address: str, ca: bytes, node: EnrolledNode) -> None:
        self.channel = channels.secure_channel(address, ca, node.cert, node.key)
        self.requests: queue.Queue[ipb.SessionRequest | None] = queue.Queue()
        self.responses = inventory_pb2_grpc.InventoryServiceStub(self.channel).Session(
            iter(self.requests.get, None)
        )

    def send(self, seq: int, req: ipb.HeartbeatRequest, quiet: bool = False) -> None:
        self.requests.put(ipb.SessionRequest(sequence=seq, heartbeat=req, quiet=quiet))

    def read(self) -> ipb.SessionResponse:
        return next(self.responses)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


@pytest.fixture
def streams() -> Iterator[Callable[[str, bytes, EnrolledNode], Stream]]:
    opened: list[Stream] = []

    def open_stream(address: str, ca: bytes, node: EnrolledNode) -> Stream:
        opened.append(Stream(address, ca, node))
        return opened[-1]

    yield open_stream
    for s in opened:
        s.close()


def test_beats_are_acknowledged_in_order_and_answered_as_unary_ones(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 's.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    stream = streams(svc.address, svc.ca_pem, node)
    beats = [
        ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED", inventory_hash="x"),
        ipb.HeartbeatRequest(node_id=node.id, phase="READY", drift_count=2),
        ipb.HeartbeatRequest(node_id=node.id, phase="READY", blocking=["a: b"], blocking_set=True),
    ]
    for seq, beat in enumerate(beats, start=1):
        stream.send(seq, beat)
    answers = [stream.read() for _ in beats]
    assert [a.acknowledged for a in answers] == [1, 2, 3]
    # the first beat's hash differs from the stored one: the same action as unary
    assert list(answers[0].heartbeat.actions) == ["send-inventory"]
    assert answers[1].heartbeat.state == ipb.READY
    # the third answer is what the second told the node: a bare acknowledgement
    assert not answers[2].HasField("heartbeat")
    unary = node.client.Heartbeat(beats[2])
    assert answers[1].heartbeat == unary
    # an answer with an action is never bare, though the rest is unchanged
    stream.send(4, ipb.HeartbeatRequest(node_id=node.id, phase="READY", inventory_hash="y"))
    fourth = stream.read()
    assert (fourth.acknowledged, list(fourth.heartbeat.actions)) == (4, ["send-inventory"])
    assert fourth.heartbeat.state == ipb.READY
    svc._do(svc.svc.flush())  # liveness (the reported phase) is written in batches
    stored = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert (stored.state, list(stored.blocking), stored.reported_phase) == (
        ipb.READY,
        ["a: b"],
        "READY",
    )
    assert svc.svc.sessions.by_node.keys() == {node.id}


class Told:
    """What the node was last told on a stream: a bare acknowledgement repeats it."""

    def __init__(self, stream: Stream) -> None:
        self.stream, self.seq, self.last = stream, 0, ipb.HeartbeatResponse()

    def beat(self, req: ipb.HeartbeatRequest) -> ipb.HeartbeatResponse:
        self.seq += 1
        self.stream.send(self.seq, req)
        answer = self.stream.read()
        assert answer.acknowledged == self.seq
        if answer.HasField("heartbeat"):
            self.last = answer.heartbeat
        return self.last


def test_repeated_beats_take_the_repeat_path_and_keep_the_health_policy(
    database: str,
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
) -> None:
    """A beat that repeats the last is liveness and a step of the health streak: the
    policy quarantines and releases on the same beats as unary ones would
    (test_health_policy.py), and anything new in a beat takes the full path."""
    svc = service_factory(database, health_release_after=4, health_auto_release=["rails"])
    admin = svc.admin()
    node = ready_node(svc, admin, variant(dgx_inventory, 11))
    told = Told(streams(svc.address, svc.ca_pem, node))

    def beat(**kw: Any) -> int:
        return int(told.beat(ipb.HeartbeatRequest(node_id=node.id, phase="READY", **kw)).state)

    assert [beat(rails_down=1) for _ in range(3)] == [S.READY, S.READY, S.QUARANTINED]
    session = svc.svc.sessions.by_node[node.id]
    assert session.repeats == 1  # the second; the third's verdict moved the node
    assert node_state(admin, node.id) == (S.QUARANTINED, RAILS)
    # the first clear beat is new, the next are repeats: released on the fourth
    assert [beat() for _ in range(4)] == [S.QUARANTINED] * 3 + [S.DISCOVERED]
    assert session.repeats == 1 + 2  # the second and third; the fourth's verdict moved it
    assert node_state(admin, node.id) == (S.DISCOVERED, f"clear for 4 heartbeats: {RAILS}")
    assert beat() == S.READY  # the agent's phase, applied again after the move
    before = session.repeats
    assert [beat() for _ in range(3)] == [S.READY] * 3
    assert session.repeats == before + 3
    # a new drift count is not a repeat: stored, with its event
    beat(drift_count=2)
    assert session.repeats == before + 3
    assert events(admin, node.id)[-1].reason == (
        "tuning drift: 2 setting(s) differ from the profile"
    )
    # liveness moves on with repeats
    beat(drift_count=2)
    svc._do(svc.svc.flush())
    seen = admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).last_seen.ToNanoseconds()
    time.sleep(0.05)
    beat(drift_count=2)
    assert session.repeats == before + 5
    svc._do(svc.svc.flush())
    assert admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).last_seen.ToNanoseconds() > seen
    # news (XIDs) is never a repeat, though the beat before carried the same
    for _ in range(2):
        beat(drift_count=2, xids=[ipb.XidCount(gpu="0", code=13, count=1)])
    assert session.repeats == before + 5


def test_quiet_beats_are_answered_only_when_the_answer_changed(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 's.db'}", report_poll_seconds=3600.0)
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 12))
    stream = streams(svc.address, svc.ca_pem, node)
    req = ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED")
    stream.send(1, req)
    assert stream.read().acknowledged == 1
    stream.send(2, req, quiet=True)
    stream.send(3, req, quiet=True)
    stream.send(4, req)
    assert stream.read() == ipb.SessionResponse(acknowledged=4)  # nothing for 2 and 3
    session = svc.svc.sessions.by_node[node.id]
    assert session.repeats == 3
    svc._do(svc.svc.flush())
    assert admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).reported_phase == "DISCOVERED"
    # an admin's change, not pushed yet (no poll): the next quiet beat gets it, in full
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(pool="train"), fields=["pool"]
        )
    )
    stream.send(5, req, quiet=True)
    answer = stream.read()
    assert (answer.acknowledged, answer.heartbeat.desired.pool) == (5, "train")
    stream.send(6, req, quiet=True)
    stream.send(7, req)
    assert stream.read() == ipb.SessionResponse(acknowledged=7)
    # an answer with an action goes to a quiet beat too (the stored hash differs)
    stream.send(8, ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED", inventory_hash="x"))
    assert list(stream.read().heartbeat.actions) == ["send-inventory"]
    stream.send(
        9, ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED", inventory_hash="x"), True
    )
    answer = stream.read()
    assert (answer.acknowledged, list(answer.heartbeat.actions)) == (9, ["send-inventory"])

    # a quiet repeat goes unanswered, unbuilt, only while its answer would be the node's
    # record alone: each thing an answer carries besides the record gets one. The
    # replica's caches stand in for its poll (off here), and a config with longer-lived
    # certificates for the weeks that bring a renewal due
    inner, numbers = svc.svc, iter(range(10, 100))

    def told_the_record() -> None:
        stream.send(n := next(numbers), req)
        assert stream.read().acknowledged == n  # in full when what it was told changed
        stream.send(next(numbers), req, quiet=True)
        stream.send(n := next(numbers), req)
        assert stream.read() == ipb.SessionResponse(acknowledged=n)  # none for the quiet one

    def quiet_answer() -> ipb.HeartbeatResponse:
        stream.send(n := next(numbers), req, quiet=True)
        answer = stream.read()
        assert answer.acknowledged == n
        return answer.heartbeat

    told_the_record()
    ask = admin.StartValidation(ipb.StartValidationRequest(node_id=node.id, level="quick"))
    assert [v.request_id for v in quiet_answer().validations] == [ask.request_id]
    inner.validations = {}
    told_the_record()
    inner.reports.hooks = {node.id: [ipb.HookRequest(phase="pre-join", request_id="h1")]}
    assert [h.request_id for h in quiet_answer().hooks] == ["h1"]
    inner.reports.hooks = {}
    told_the_record()
    inner.reports.tiers = {node.id: ("t1", fpb.FabricTiers(fabric="f1", tier_0="leaf-a"))}
    assert quiet_answer().fleet_tiers.tier_0 == "leaf-a"
    inner.reports.tiers = {}
    told_the_record()
    config = inner.config
    inner.config = dataclasses.replace(config, node_cert_days=3000.0)
    assert list(quiet_answer().actions) == ["renew-certificate"]
    inner.config = config
    told_the_record()


def test_a_stream_may_speak_only_for_its_own_node_and_only_while_not_revoked(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 's.db'}")
    admin = svc.admin()
    a = enrol(svc, admin, variant(dgx_inventory, 2))
    b = enrol(svc, admin, variant(dgx_inventory, 3))
    stream = streams(svc.address, svc.ca_pem, a)
    stream.send(1, ipb.HeartbeatRequest(node_id=b.id, phase="READY"))
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == f"certificate is for node {a.id}, not {b.id}"
    # an admin certificate has no stream
    cert, key = svc.svc.ca.issue_client("alice", "admin")
    as_admin = EnrolledNode(svc, "alice", key, cert)
    stream = streams(svc.address, svc.ca_pem, as_admin)
    stream.send(1, ipb.HeartbeatRequest(phase="READY"))
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "admin 'alice' may not call Session"
    # revoked while its stream is open: the next beat ends the stream
    stream = streams(svc.address, svc.ca_pem, b)
    stream.send(1, ipb.HeartbeatRequest(node_id=b.id, phase="DISCOVERED"))
    assert stream.read().acknowledged == 1
    admin.RetireNode(ipb.NodeActionRequest(node_id=b.id))
    svc._do(svc.svc.revocations.refresh(svc.svc.store))
    stream.send(2, ipb.HeartbeatRequest(node_id=b.id, phase="DISCOVERED"))
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "has been revoked" in (err.value.details() or "")


def test_a_closed_stream_leaves_reachability_to_time(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    svc = service_factory(
        f"sqlite:///{scratch / 's.db'}",
        heartbeat_interval_seconds=1,
        unreachable_after_missed=2,
        liveness_flush_seconds=0.1,
    )
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 4))
    stream = streams(svc.address, svc.ca_pem, node)
    stream.send(1, ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"))
    assert stream.read().acknowledged == 1
    closed = time.monotonic()
    stream.close()
    wait_for(lambda: not svc.svc.sessions.by_node, 5, "the stream to end")
    assert admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).reachable
    wait_for(
        lambda: not admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).reachable,
        10,
        "the node to become unreachable",
    )
    assert time.monotonic() - closed >= 1.5  # two intervals of 1 s, less the beat's age


def test_a_stream_whose_node_falls_silent_is_ended_and_a_beating_one_kept(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    """The inventory pings no connection of its own (keepalive_seconds = 0): a node that
    stops beating on an open stream, as a host that lost power does, has its stream ended
    one interval after the unreachable window (here 1 s x (1 + 1))."""
    svc = service_factory(
        f"sqlite:///{scratch / 's.db'}", heartbeat_interval_seconds=1, unreachable_after_missed=1
    )
    admin = svc.admin()
    silent_node = enrol(svc, admin, variant(dgx_inventory, 5))
    beating_node = enrol(svc, admin, variant(dgx_inventory, 6))
    silent = streams(svc.address, svc.ca_pem, silent_node)
    beating = streams(svc.address, svc.ca_pem, beating_node)
    sent = time.monotonic()  # the inventory hears the silent node's last beat after this
    for stream, node in ((silent, silent_node), (beating, beating_node)):
        stream.send(1, ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"))
        assert stream.read().acknowledged == 1
    last = time.monotonic()
    ended: list[grpc.RpcError] = []
    ended_at = 0.0

    def read_silent() -> None:
        nonlocal ended_at
        try:
            silent.read()
        except grpc.RpcError as exc:
            ended_at = time.monotonic()
            ended.append(exc)

    seq = 1

    def beat_again() -> None:
        nonlocal seq
        time.sleep(0.3)
        seq += 1
        beating.send(seq, ipb.HeartbeatRequest(node_id=beating_node.id, phase="DISCOVERED"))
        assert beating.read().acknowledged == seq

    reader = threading.Thread(target=read_silent, daemon=True)
    reader.start()
    while not ended and time.monotonic() - last < 8:
        beat_again()
    reader.join(1)
    assert ended and ended[0].code() == grpc.StatusCode.UNAVAILABLE
    assert "no heartbeat for" in (ended[0].details() or "")
    assert ended_at - sent >= 2  # not before two intervals of silence
    assert set(svc.svc.sessions.by_node) == {beating_node.id}
    for _ in range(8):  # the beating node's stream lives on past the silent one's end
        beat_again()


def test_a_node_that_opens_another_stream_ends_its_old_one(
    service_factory: Factory,
    dgx_inventory: pb.HardwareInventory,
    streams: Callable[[str, bytes, EnrolledNode], Stream],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 's.db'}")
    node = enrol(svc, svc.admin(), variant(dgx_inventory, 7))
    beat = ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED")
    old = streams(svc.address, svc.ca_pem, node)
    old.send(1, beat)
    assert old.read().acknowledged == 1
    new = streams(svc.address, svc.ca_pem, node)  # its call opens now: it comes second
    new.send(1, beat)
    assert new.read().acknowledged == 1
    with pytest.raises(grpc.RpcError) as ended:
        old.read()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == f"node {node.id} opened another stream"
    assert list(svc.svc.sessions.by_node) == [node.id]
    new.send(2, beat)
    assert new.read().acknowledged == 2


@pytest.mark.parametrize("keepalive", [0, 1])
def test_the_inventory_pings_connections_only_when_keepalive_is_set(
    service_factory: Factory, scratch: Path, keepalive: int
) -> None:
    """An HTTP/2 connection held open with no call: the inventory sends a keepalive PING
    within 3 s with keepalive_seconds = 1, and none in 3 s with the default 0."""
    import socket
    import ssl
    import struct

    svc = service_factory(f"sqlite:///{scratch / 's.db'}", keepalive_seconds=keepalive)
    ctx = ssl.create_default_context(cadata=svc.ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    host, port = svc.bootstrap.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + b"\0\0\0\0" + payload

    def read_exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = tls.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    PING, SETTINGS, ACK = 6, 4, 1
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0))
    pings = 0
    end = time.monotonic() + 3
    try:
        while time.monotonic() < end:
            tls.settimeout(max(0.05, end - time.monotonic()))
            head = read_exact(9)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            payload = read_exact(length)
            if kind == SETTINGS and not flags & ACK:
                tls.sendall(frame(SETTINGS, ACK))
            elif kind == PING and not flags & ACK:
                pings += 1
                tls.sendall(frame(PING, ACK, payload))
    except TimeoutError:
        pass
    finally:
        tls.close()
    assert (pings > 0) == bool(keepalive), f"{pings} pings with keepalive_seconds={keepalive}"


def test_keepalive_setting_read_and_checked(scratch: Path) -> None:
    path = scratch / "inventory.toml"
    path.write_text("keepalive_seconds = 7200\n")
    assert inventory_config.load(str(path)).keepalive_seconds == 7200
    assert inventory_config.load(None).keepalive_seconds == 0
    path.write_text("keepalive_seconds = -1\n")
    with pytest.raises(inventory_config.ConfigError, match="'keepalive_seconds' must not be"):
        inventory_config.load(str(path))


def snapshot(phase: str, drift_count: int = 0) -> Snapshot:
    """What a bare agent reports: no inventory hash, no health."""
    return Snapshot(
        phase=phase,
        inventory=pb.HardwareInventory(),
        inventory_hash="",
        drift_count=drift_count,
        health=[],
    )


class AgentClient:
    """The agent's own InventoryClient on its event loop in a thread, with a fixed snapshot."""

    def __init__(self, state: Path, cfg: InventoryClientConfig, node: EnrolledNode, ca: bytes):
        ident = state / "identity"
        ident.mkdir(parents=True)
        for name, data in (
            ("node.key", node.key),
            ("node.crt", node.cert),
            ("ca.crt", ca),
            ("node_id", node.id.encode()),
        ):
            tlsutil.write_private(ident / name, data)
        self.desired: list[ipb.Assignment] = []
        self.snapshot = snapshot("DISCOVERED")
        self.client = InventoryClient(
            cfg, str(state), lambda: self.snapshot, on_desired=self.desired.append
        )
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._run(),), daemon=True
        )
        self.thread.start()

    async def _run(self) -> None:
        self.stop = asyncio.Event()
        await self.client.run(self.stop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)


def test_an_admin_change_on_one_replica_reaches_the_stream_on_another_at_once(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory, scratch: Path
) -> None:
    """Heartbeats every 60 s: what arrives within seconds was pushed, not answered."""
    a = service_factory(database, report_poll_seconds=0.2, heartbeat_interval_seconds=60)
    b = service_factory(database, report_poll_seconds=0.2, heartbeat_interval_seconds=60)
    admin = a.admin()
    node = enrol(a, admin, variant(dgx_inventory, 7))
    agent = AgentClient(
        scratch / "agent", InventoryClientConfig(addresses=[b.address]), node, b.ca_pem
    )
    try:
        wait_for(lambda: agent.client.state == "connected", 10, "the agent's first beat")
        assert agent.client.target == b.address
        assert b.svc.sessions.by_node.keys() == {node.id}
        assert agent.client.interval == 60.0
        admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=node.id,
                assignment=ipb.Assignment(pool="train", labels={"team": "x"}),
                fields=["pool", "labels"],
            )
        )
        changed = time.monotonic()
        wait_for(lambda: agent.client.desired.pool == "train", 5, "the push")
        assert time.monotonic() - changed < 2.0
        assert dict(agent.client.desired.labels) == {"team": "x"}
        assert agent.client._session.pushes == 1
        assert agent.desired[-1].pool == "train"
        # held on replica a: the state comes down too
        admin.HoldNode(ipb.NodeActionRequest(node_id=node.id))
        wait_for(lambda: agent.client.node_state == ipb.MAINTENANCE, 5, "the second push")
        assert agent.client._session.pushes == 2
        # a beat now is answered bare (nothing changed since the push): the agent keeps
        # what it was told, rather than reading an empty answer as "no assignment"
        before = len(agent.desired)
        asyncio.run_coroutine_threadsafe(agent.client.heartbeat(), agent.loop).result(10)
        assert len(agent.desired) == before and agent.client.desired.pool == "train"
        assert agent.client.node_state == ipb.MAINTENANCE
        assert b.svc.sessions.by_node[node.id].pushes == 2
    finally:
        agent.close()


def test_the_agent_beats_quiet_between_answered_beats_and_takes_a_changed_answer(
    service_factory: Factory, dgx_inventory: pb.HardwareInventory, scratch: Path
) -> None:
    """The agent's own stream: a beat that repeats the last acknowledged one goes quiet,
    at most QUIET_RUN in a row; a quiet beat's changed answer is applied as a push (no
    poll runs here to push it)."""
    svc = service_factory(
        f"sqlite:///{scratch / 's.db'}", report_poll_seconds=3600.0, heartbeat_interval_seconds=60
    )
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 13))
    agent = AgentClient(
        scratch / "agent", InventoryClientConfig(address=svc.address), node, svc.ca_pem
    )
    try:
        wait_for(lambda: agent.client.state == "connected", 10, "the agent's first beat")
        session = agent.client._session

        def beat() -> int:
            asyncio.run_coroutine_threadsafe(agent.client.heartbeat(), agent.loop).result(10)
            return session.quiet_run

        assert session.QUIET_RUN == 2
        assert [beat() for _ in range(6)] == [1, 2, 0, 1, 2, 0]
        held = svc.svc.sessions.by_node[node.id]
        assert held.repeats == 6  # the first beat took the full path
        admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=node.id, assignment=ipb.Assignment(pool="train"), fields=["pool"]
            )
        )
        assert beat() == 1  # quiet: its answer comes after it, from the reader
        wait_for(lambda: agent.client.desired.pool == "train", 5, "the changed answer")
        assert session.pushes == 1 and held.pushes == 0
        # a beat that differs (the drift count changed) is answered; the quiet run starts again
        agent.snapshot = snapshot("DISCOVERED", drift_count=1)
        assert [beat() for _ in range(3)] == [0, 1, 2]
    finally:
        agent.close()


def test_actions_in_a_quiet_beats_answer_are_taken_at_the_next_beat(scratch: Path) -> None:
    """A quiet beat's answer reaches the agent through its reader, as a push does; the
    actions in it are for the next beat (it carries the inventory; it renews first)."""
    client = InventoryClient(
        InventoryClientConfig(address="127.0.0.1:1"),
        str(scratch / "agent"),
        lambda: snapshot("READY"),
    )
    client._sent_hash = "abc"
    client.pushed(ipb.HeartbeatResponse(actions=["send-inventory"], state=ipb.READY))
    assert (client._sent_hash, client._renew_due, client.node_state) == ("", False, ipb.READY)
    client.pushed(ipb.HeartbeatResponse(actions=["renew-certificate"]))
    assert client._renew_due


def test_a_replica_that_learns_of_a_node_from_the_poll_knows_its_phase(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    """A node enrolled on one replica, or moved to another by a failover, beats on a replica
    whose cache holds it only from the changed-nodes poll: that beat needs no transaction
    when its phase is the one its agent last reported (the 2-replica bench ran 5,000 at
    once, and every beat behind them waited)."""
    a = service_factory(database)
    b = service_factory(database, report_poll_seconds=3600.0)  # polled by hand below
    node = enrol(a, a.admin(), variant(dgx_inventory, 9))
    a._do(a.svc.flush())  # the liveness batch a writes every liveness_flush_seconds
    b._do(b.svc.poll_changes())
    assert b.svc.nodes[node.id][1] == "DISCOVERED"
    store = b.svc.store
    ran: list[str] = []
    real = store.run

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        ran.append(getattr(fn, "__name__", ""))
        return await real(fn, *args)

    store.run = counted  # type: ignore[method-assign]
    try:
        on_b = EnrolledNode(b, node.id, node.key, node.cert)
        on_b.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"))
        assert "heartbeat_update" not in ran, ran
        on_b.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
        assert "heartbeat_update" in ran, "a new phase is applied"
    finally:
        store.run = real  # type: ignore[method-assign]
    assert b.svc.nodes[node.id][1] == "READY"


def test_the_agent_falls_back_to_unary_where_the_server_has_no_stream(
    dgx_inventory: pb.HardwareInventory, scratch: Path, service_factory: Factory
) -> None:
    """An older inventory: Heartbeat only; the agent's stream gets UNIMPLEMENTED."""
    svc = service_factory(f"sqlite:///{scratch / 's.db'}")
    node = enrol(svc, svc.admin(), variant(dgx_inventory, 8))
    ca = svc.svc.ca
    beats: list[ipb.HeartbeatRequest] = []
    port = free_port()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def heartbeat(req: ipb.HeartbeatRequest, _: Any) -> ipb.HeartbeatResponse:
        beats.append(req)
        return ipb.HeartbeatResponse(next_interval_seconds=1, desired=ipb.Assignment(pool="old"))

    async def serve() -> grpc.aio.Server:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "nodeagent.v1.InventoryService",
                    {
                        "Heartbeat": grpc.unary_unary_rpc_method_handler(
                            heartbeat,
                            request_deserializer=ipb.HeartbeatRequest.FromString,
                            response_serializer=ipb.HeartbeatResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        cert, key = ca.issue_server(["127.0.0.1"])
        server.add_secure_port(
            f"127.0.0.1:{port}",
            grpc.ssl_server_credentials([(key, cert)], ca.pem, require_client_auth=True),
        )
        await server.start()
        return server

    old = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    agent = AgentClient(
        scratch / "agent",
        InventoryClientConfig(address=f"127.0.0.1:{port}", stream=True),
        node,
        ca.pem,
    )
    try:
        wait_for(lambda: len(beats) >= 2, 10, "two unary heartbeats")
        assert agent.client._session.unimplemented
        assert agent.client.state == "connected"
        assert agent.client.desired.pool == "old"
        assert {b.node_id for b in beats} == {node.id}
    finally:
        agent.close()
        asyncio.run_coroutine_threadsafe(old.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_replica_targets_come_from_the_list_or_from_every_address_of_the_name() -> None:
    listed = InventoryClientConfig(addresses=["a:7444", "b:7444"])
    assert replica_targets(listed) == [("a:7444", ""), ("b:7444", "")]
    assert replica_targets(InventoryClientConfig(address="127.0.0.1:7444")) == [
        ("127.0.0.1:7444", "")
    ]
    # localhost resolves to one IPv4 and (where configured) one IPv6 address: each is a
    # replica, checked against the name
    found = replica_targets(InventoryClientConfig(address="localhost:7444"))
    assert found == [("localhost:7444", "")] or {name for _, name in found} == {"localhost"}
