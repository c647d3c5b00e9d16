"""Enrolment, heartbeat, admin RPCs, RBAC, tokens, CA pinning and renewal, against a real
service on loopback, on SQLite and on PostgreSQL (`database` is parametrized)."""

from __future__ import annotations

import os
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import pki
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory.conftest import Client, EnrolledNode, ServiceThread, enrol, register

S = ipb.NodeState
Factory = Callable[..., ServiceThread]


def _code(fn: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code(), err.value.details() or ""


def test_enrolment_heartbeat_and_admin_rpcs(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    token = admin.CreateToken(
        ipb.CreateTokenRequest(
            max_uses=1, preset=ipb.Assignment(pool="training", profile="hgx-h100")
        )
    ).secret
    resp, key = register(svc, token, variant(dgx_inventory, 1))
    assert resp.state == S.DISCOVERED and resp.heartbeat_interval_seconds == 10
    assert resp.desired.pool == "training" and resp.ca_bundle_pem.startswith("-----BEGIN")
    node = EnrolledNode(svc, resp.node_id, key, resp.certificate_pem.encode())

    hb = node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, phase="READY", inventory_hash="h1")
    )
    assert hb.state == S.READY and hb.desired.profile == "hgx-h100"
    assert "send-inventory" in hb.actions  # a hash it has not seen: send the inventory
    hb = node.client.Heartbeat(
        ipb.HeartbeatRequest(
            node_id=node.id, phase="READY", inventory_hash="h1", inventory=variant(dgx_inventory, 1)
        )
    )
    assert "send-inventory" not in hb.actions

    # the same machine enrolling again (reinstall: a new key) keeps its node id, with a
    # re-enrol token an admin bound to it; a plain token cannot claim an enrolled node
    with pytest.raises(grpc.RpcError) as refused:
        register(svc, admin.CreateToken(ipb.CreateTokenRequest()).secret, variant(dgx_inventory, 1))
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reenrol = admin.CreateToken(ipb.CreateTokenRequest(reenrol_node=node.id))
    assert reenrol.token.reenrol_node == node.id
    again, _ = register(svc, reenrol.secret, variant(dgx_inventory, 1))
    assert again.node_id == node.id
    other = enrol(svc, admin, variant(dgx_inventory, 2))
    assert other.id != node.id

    listed = admin.ListNodes(ipb.ListNodesRequest())
    assert listed.total == 2 and {n.id for n in listed.nodes} == {node.id, other.id}
    assert admin.ListNodes(ipb.ListNodesRequest(state=S.READY)).total == 1
    assert admin.ListNodes(ipb.ListNodesRequest(pool="training")).total == 1
    assert admin.ListNodes(ipb.ListNodesRequest(gpu_model="NVIDIA H100 80GB HBM3")).total == 2
    page = admin.ListNodes(ipb.ListNodesRequest(page_size=1))
    assert len(page.nodes) == 1 and page.next_page_token
    rest = admin.ListNodes(ipb.ListNodesRequest(page_size=1, page_token=page.next_page_token))
    assert rest.nodes[0].id != page.nodes[0].id and not rest.next_page_token

    shown = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert len(shown.inventory.gpus) == 8 and shown.reachable
    reasons = [e.reason for e in shown.events]
    assert reasons[:2] == ["registered with a bootstrap token", "hardware inventory received"]
    assert "agent reports READY" in reasons and any("re-registered" in r for r in reasons)
    assert all(e.actor and e.time.seconds for e in shown.events)

    updated = admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id,
            assignment=ipb.Assignment(cluster="prod-a", labels={"rack": "r12"}),
            fields=["cluster", "labels"],
        )
    )
    assert updated.assignment.cluster == "prod-a" and updated.assignment.pool == "training"
    hb = node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, phase="READY", inventory_hash="h1")
    )
    assert hb.desired.cluster == "prod-a" and hb.desired.labels["rack"] == "r12"

    held = admin.HoldNode(ipb.NodeActionRequest(node_id=node.id, reason="swap a PSU"))
    assert held.state == S.MAINTENANCE
    hb = node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, phase="JOINED", inventory_hash="h1")
    )
    assert hb.state == S.MAINTENANCE, "a held node does not move on its own"
    assert admin.ReleaseNode(ipb.NodeActionRequest(node_id=node.id)).state == S.READY
    code, msg = _code(lambda: admin.ReleaseNode(ipb.NodeActionRequest(node_id=node.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not held" in msg
    assert admin.RetireNode(ipb.NodeActionRequest(node_id=node.id)).state == S.RETIRED
    admin.DeleteNode(ipb.NodeActionRequest(node_id=node.id))
    code, _ = _code(lambda: admin.GetNode(ipb.GetNodeRequest(node_id=node.id)))
    assert code == grpc.StatusCode.NOT_FOUND
    # deleting revoked its certificate: it speaks no more
    code, msg = _code(lambda: node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "has been revoked" in msg


def test_token_rules(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    inv = variant(dgx_inventory, 7)

    def refused(token: str, needle: str) -> None:
        code, msg = _code(lambda: register(svc, token, inv))
        assert code == grpc.StatusCode.UNAUTHENTICATED and needle in msg, msg

    refused("", "required")
    refused("not-a-token", "malformed")
    refused("abcdef.0123456789abcdef0123456789abcdef", "unknown")
    short = admin.CreateToken(ipb.CreateTokenRequest(ttl_seconds=1)).secret
    time.sleep(1.2)
    refused(short, "expired")
    revoked = admin.CreateToken(ipb.CreateTokenRequest())
    admin.RevokeToken(ipb.RevokeTokenRequest(id=revoked.token.id))
    refused(revoked.secret, "revoked")
    token_id, _ = revoked.secret.split(".")
    refused(f"{token_id}.{'x' * 32}", "unknown")  # right id, wrong secret
    once = admin.CreateToken(ipb.CreateTokenRequest()).secret
    register(svc, once, inv)
    refused(once, "already been used")
    # refusals wrote nothing: one node, and the failed tokens were not counted
    assert admin.ListNodes(ipb.ListNodesRequest()).total == 1
    uses = {t.id: t.uses for t in admin.ListTokens(ipb.ListTokensRequest()).tokens}
    assert uses[revoked.token.id] == 0 and sorted(uses.values()) == [0, 0, 1]
    multi = admin.CreateToken(ipb.CreateTokenRequest(max_uses=2)).secret
    register(svc, multi, variant(dgx_inventory, 8))
    register(svc, multi, variant(dgx_inventory, 9))
    refused(multi, "already been used")


def test_rbac_and_node_identity(
    service_factory: Factory, database: str, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    a = enrol(svc, admin, variant(dgx_inventory, 1))
    b = enrol(svc, admin, variant(dgx_inventory, 2))
    viewer, operator = svc.admin("viewer", "vic"), svc.admin("operator", "olga")
    assert viewer.ListNodes(ipb.ListNodesRequest()).total == 2
    for call in (
        lambda: viewer.UpdateAssignment(ipb.UpdateAssignmentRequest(node_id=a.id)),
        lambda: viewer.HoldNode(ipb.NodeActionRequest(node_id=a.id)),
        lambda: viewer.CreateToken(ipb.CreateTokenRequest()),
        lambda: operator.DeleteNode(ipb.NodeActionRequest(node_id=a.id)),
        lambda: operator.CreateToken(ipb.CreateTokenRequest()),
        lambda: a.client.ListNodes(ipb.ListNodesRequest()),
        lambda: a.client.GetNode(ipb.GetNodeRequest(node_id=b.id)),
        lambda: a.client.Heartbeat(ipb.HeartbeatRequest(node_id=b.id)),
    ):
        code, msg = _code(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED, msg
    assert operator.HoldNode(ipb.NodeActionRequest(node_id=a.id)).state == S.MAINTENANCE
    assert a.client.GetNode(ipb.GetNodeRequest(node_id=a.id)).id == a.id
    # without a certificate: the enrolment port serves Register only
    boot = svc.bootstrap_client()
    code, msg = _code(lambda: boot.ListNodes(ipb.ListNodesRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED, msg
    boot.close()
    # and the mTLS port will not even talk to a client without one
    anon = Client(channels.secure_channel(svc.address, svc.ca_pem))
    code, _ = _code(lambda: anon.ListNodes(ipb.ListNodesRequest(), timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    anon.close()
    # a certificate from another CA is refused at the handshake
    stranger_ca = pki.CertificateAuthority.load_or_create(scratch / "x.crt", scratch / "x.key")
    cert, key = stranger_ca.issue_client("mallory", "admin")
    mallory = Client(channels.secure_channel(svc.address, svc.ca_pem, cert, key))
    code, _ = _code(lambda: mallory.ListNodes(ipb.ListNodesRequest(), timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    mallory.close()


def test_ca_pinning_and_key_modes(service_factory: Factory, scratch: Path) -> None:
    svc = service_factory(f"sqlite:///{scratch}/pin.db")
    pem = tlsutil.fetch_pinned_ca(svc.bootstrap, svc.svc.ca.pin)
    assert pem == svc.ca_pem
    with pytest.raises(tlsutil.PinError, match="no CA certificate matching"):
        tlsutil.fetch_pinned_ca(svc.bootstrap, "sha256:" + "0" * 64)
    with pytest.raises(tlsutil.PinError, match="must be sha256"):
        tlsutil.fetch_pinned_ca(svc.bootstrap, "md5:abc")
    _, key_path = svc.config.ca_paths
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    # TLS 1.2 or newer only
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # deprecated on purpose: the server must refuse it
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    host, port = svc.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw)


def test_certificate_renewal(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database, node_cert_days=0.5)
    node = enrol(svc, svc.admin(), variant(dgx_inventory, 3))
    svc.svc.config = type(svc.config)(**{**svc.config.__dict__, "node_cert_days": 30.0})
    hb = node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"))
    assert "renew-certificate" in hb.actions  # half a day left of a 30-day lifetime
    key = tlsutil.new_key()
    renewed = node.client.RenewCertificate(
        ipb.RenewCertificateRequest(csr_pem=tlsutil.make_csr(key, "n").decode())
    )
    fresh = Client(
        channels.secure_channel(
            svc.address, svc.ca_pem, renewed.certificate_pem.encode(), tlsutil.key_pem(key)
        )
    )
    hb = fresh.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"))
    assert "renew-certificate" not in hb.actions
    fresh.close()


def test_identity_with_placeholder_and_duplicated_dmi(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    placeholder = "03000200-0400-0500-0006-000700080009"
    a = enrol(svc, admin, variant(dgx_inventory, 11, uuid=placeholder))
    b = enrol(svc, admin, variant(dgx_inventory, 12, uuid=placeholder))
    assert a.id != b.id, "placeholder UUIDs must not merge two machines"
    again, _ = register(
        svc,
        admin.CreateToken(ipb.CreateTokenRequest(reenrol_node=a.id)).secret,
        variant(dgx_inventory, 11, uuid=placeholder),
    )
    assert again.node_id == a.id
    dup = "4c4c4544-0042-4d10-8050-b4c04f4e3332"
    c = enrol(svc, admin, variant(dgx_inventory, 13, uuid=dup))
    d = enrol(svc, admin, variant(dgx_inventory, 14, uuid=dup))
    assert c.id != d.id, "a DMI UUID shared by different hardware is a duplicate"
    d_again, _ = register(
        svc,
        admin.CreateToken(ipb.CreateTokenRequest(reenrol_node=d.id)).secret,
        variant(dgx_inventory, 14, uuid=dup),
    )
    assert d_again.node_id == d.id
    tbf = variant(dgx_inventory, 15)
    tbf.system.uuid, tbf.system.serial = "", "To Be Filled By O.E.M."
    e = enrol(svc, admin, tbf)
    assert e.id not in (a.id, b.id, c.id, d.id)


def test_hostile_input(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database, max_message_bytes=2 * 1024 * 1024)
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 21))
    evil = "'; DROP TABLE nodes; -- $(rm -rf /) `reboot`"
    assert admin.ListNodes(ipb.ListNodesRequest(pool=evil)).total == 0
    updated = admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(pool=evil[:63]), fields=["pool"]
        )
    )
    assert updated.assignment.pool == evil[:63], "stored verbatim"
    # a label override is written on the node where NFD reads it: refused, naming the rule
    code, details = _code(
        lambda: admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=node.id,
                assignment=ipb.Assignment(labels={"note": evil[:63]}),
                fields=["labels"],
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        f"invalid value {evil[:63]!r} for note: a value is empty or <= 63 of A-Z a-z 0-9 - _ . "
        "beginning and ending alphanumeric"
    )
    assert admin.ListNodes(ipb.ListNodesRequest(pool=evil[:63])).total == 1
    assert admin.ListNodes(ipb.ListNodesRequest()).total == 1, "the table is still there"
    code, _ = _code(lambda: admin.ListNodes(ipb.ListNodesRequest(pool="x\x00y")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _code(
        lambda: admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(node_id=node.id, assignment=ipb.Assignment(pool="p" * 500))
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    huge = variant(dgx_inventory, 22)
    huge.system.product = "x" * (3 * 1024 * 1024)
    code, _ = _code(
        lambda: node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, inventory=huge))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    raw = node.client.channel.unary_unary(
        "/nodeagent.v1.InventoryService/Heartbeat",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\x12\x03\xff\xfe\xfd", timeout=5)  # field 2 (phase) with invalid UTF-8
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED")).state


def test_unreachable_after_missed_heartbeats(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(
        database,
        heartbeat_interval_seconds=1,
        unreachable_after_missed=2,
        liveness_flush_seconds=0.1,
    )
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 31))
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))

    def reachable() -> bool:
        return bool(admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).reachable)

    wait_for(lambda: not reachable(), 10, "the node to become unreachable")
    shown = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert shown.state == S.READY, "unreachable is not a lifecycle state: it keeps its state"
    wait_for(
        lambda: any(
            "unreachable" in e.reason
            for e in admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).events
        ),
        10,
        "the unreachable event",
    )
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    wait_for(reachable, 5, "the node to be reachable again")
    wait_for(
        lambda: any(
            "reachable again" in e.reason
            for e in admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).events
        ),
        10,
        "the reachable event",
    )


def test_watch_nodes_streams_transitions(
    service_factory: Factory, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    stream = admin.stub.WatchNodes(ipb.WatchNodesRequest(), timeout=20)
    node = enrol(svc, admin, variant(dgx_inventory, 41))
    admin.HoldNode(ipb.NodeActionRequest(node_id=node.id, reason="firmware"))
    seen = []
    for event in stream:
        seen.append((event.to_state, event.reason))
        if event.to_state == S.MAINTENANCE:
            break
    stream.cancel()
    assert (S.ENROLLED, "registered with a bootstrap token") in seen
    assert (S.MAINTENANCE, "firmware") in seen
