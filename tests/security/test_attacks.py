"""Attacks on live processes: identity takeover at enrolment, the agent's TCP API,
revocation of node and admin certificates, and what the enrolment port offers.

The inventory runs as `nodeagent inventory serve` and the agent as `nodeagent serve`,
both started from the CLI; the attacker holds what the threat model gives it (a
bootstrap token, a certificate of some role, what is visible on the network) and
each test checks that the attack fails and that the victim's record did not change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    inventory_pb2_grpc,
)
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.inventory import pki
from testbed.agent_process import AgentProcess, free_port
from testbed.cli import nodeagent as _cli
from testbed.inventory_process import InventoryProcess
from testbed.variants import variant

S = ipb.NodeState


@pytest.fixture
def inventory(scratch: Path) -> Iterator[InventoryProcess]:
    inv = InventoryProcess(
        scratch / "inv", f"sqlite:///{scratch / 'inv.db'}", "revocation_refresh_seconds = 0.5\n"
    ).start()
    yield inv
    inv.kill()


class Node:
    """An enrolled machine: its key, its certificate and a client speaking as it."""

    def __init__(self, inv: InventoryProcess, resp: ipb.RegisterResponse, key: bytes) -> None:
        self.id, self.key, self.cert = resp.node_id, key, resp.certificate_pem.encode()
        self.channel = channels.secure_channel(inv.address, inv.ca().pem, self.cert, key)
        self.stub = inventory_pb2_grpc.InventoryServiceStub(self.channel)
        self.fleet = fleet_pb2_grpc.FleetServiceStub(self.channel)

    def heartbeat(self, phase: str = "READY") -> ipb.HeartbeatResponse:
        resp: ipb.HeartbeatResponse = self.stub.Heartbeat(
            ipb.HeartbeatRequest(node_id=self.id, phase=phase), timeout=10
        )
        return resp


def _register(
    inv: InventoryProcess, token: str, hw: pb.HardwareInventory, key: bytes | None = None
) -> tuple[ipb.RegisterResponse, bytes]:
    private = tlsutil.new_key() if key is None else _load_key(key)
    with channels.secure_channel(inv.bootstrap, inv.ca().pem) as ch:
        resp = inventory_pb2_grpc.InventoryServiceStub(ch).Register(
            ipb.RegisterRequest(
                token=token, inventory=hw, csr_pem=tlsutil.make_csr(private, "x").decode()
            ),
            timeout=10,
        )
    return resp, tlsutil.key_pem(private)


def _load_key(pem: bytes) -> tlsutil.ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, tlsutil.ec.EllipticCurvePrivateKey)
    return key


def _token(admin: inventory_pb2_grpc.InventoryServiceStub, **kw: object) -> str:
    secret: str = admin.CreateToken(ipb.CreateTokenRequest(**kw), timeout=10).secret
    return secret


def _refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    return err.value


def _record(admin: inventory_pb2_grpc.InventoryServiceStub, node_id: str) -> tuple[object, ...]:
    n = admin.GetNode(ipb.GetNodeRequest(node_id=node_id, events=100), timeout=10)
    return (n.hostname, n.state, n.assignment.SerializeToString(), n.inventory_hash)


def test_a_token_and_a_victims_identifiers_do_not_take_over_its_node(
    inventory: InventoryProcess, dgx_inventory: pb.HardwareInventory
) -> None:
    admin = inventory.admin()
    victim_hw = variant(dgx_inventory, 1)
    resp, key = _register(inventory, _token(admin, preset=ipb.Assignment(pool="prod")), victim_hw)
    victim = Node(inventory, resp, key)
    victim.heartbeat("READY")
    before = _record(admin, victim.id)

    # 1. the victim's DMI UUID and serial with no NICs or GPUs: nothing to match on
    bare = pb.HardwareInventory()
    bare.system.CopyFrom(victim_hw.system)
    bare.system.hostname = "attacker"
    err = _refused(lambda: _register(inventory, _token(admin), bare))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    # 2. every identifier of the victim (MACs are visible in ARP), a fresh key
    clone = variant(dgx_inventory, 1)
    clone.system.hostname = "attacker"
    err = _refused(lambda: _register(inventory, _token(admin), clone))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == (
        f"node {victim.id} already enrolled; use a re-enrol token "
        f"(nodeagent admin tokens create --reenrol {victim.id})"
    )
    # 3. a re-enrol token for another node does not open this one
    other, _ = _register(inventory, _token(admin), variant(dgx_inventory, 2))
    err = _refused(lambda: _register(inventory, _token(admin, reenrol_node=other.node_id), clone))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"re-enrol token is for node {other.node_id}" in err.details()

    assert _record(admin, victim.id) == before, "the victim's record is untouched"
    assert victim.heartbeat("READY").state == S.READY, "the victim's certificate still works"
    events = admin.GetNode(ipb.GetNodeRequest(node_id=victim.id, events=100), timeout=10).events
    assert any(e.reason.startswith("refused a registration as this node") for e in events)


def test_placeholder_dmi_victims_macs_are_not_enough(
    inventory: InventoryProcess, dgx_inventory: pb.HardwareInventory
) -> None:
    admin = inventory.admin()
    placeholder = "03000200-0400-0500-0006-000700080009"
    victim_hw = variant(dgx_inventory, 5, uuid=placeholder)
    resp, _ = _register(inventory, _token(admin), victim_hw)
    before = _record(admin, resp.node_id)
    err = _refused(
        lambda: _register(inventory, _token(admin), variant(dgx_inventory, 5, uuid=placeholder))
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _record(admin, resp.node_id) == before


def test_the_same_key_or_a_reenrol_token_gets_the_node_back(
    inventory: InventoryProcess, dgx_inventory: pb.HardwareInventory
) -> None:
    admin = inventory.admin()
    hw = variant(dgx_inventory, 7)
    first, key = _register(inventory, _token(admin), hw)
    # an agent killed after the inventory issued its certificate, before it saved it,
    # enrols again with the key it wrote first: the CSR proves it is the same node
    again, _ = _register(inventory, _token(admin), hw, key=key)
    assert again.node_id == first.node_id
    # a reinstalled machine (new key) with the re-enrol token an admin bound to it
    old = Node(inventory, again, key)
    token = admin.CreateToken(ipb.CreateTokenRequest(reenrol_node=first.node_id), timeout=10)
    assert token.token.reenrol_node == first.node_id and token.token.max_uses == 1
    reinstalled, new_key = _register(inventory, token.secret, hw)
    assert reinstalled.node_id == first.node_id
    # the keys of the old install are revoked: only the new one speaks for the node
    time.sleep(1)
    err = _refused(lambda: old.heartbeat())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.details()
    assert Node(inventory, reinstalled, new_key).heartbeat().state in (S.DISCOVERED, S.READY)
    # a re-enrol token is single-use and carries no preset
    err = _refused(
        lambda: admin.CreateToken(
            ipb.CreateTokenRequest(reenrol_node=first.node_id, max_uses=5), timeout=10
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = _refused(
        lambda: admin.CreateToken(ipb.CreateTokenRequest(reenrol_node="no-such-node"), timeout=10)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_a_retired_node_is_revoked_everywhere(
    inventory: InventoryProcess, dgx_inventory: pb.HardwareInventory
) -> None:
    admin = inventory.admin()
    hw = variant(dgx_inventory, 9)
    resp, key = _register(inventory, _token(admin), hw)
    node = Node(inventory, resp, key)
    node.heartbeat("READY")
    serials = {
        c.serial
        for c in admin.ListCertificates(ipb.ListCertificatesRequest(node_id=node.id)).certificates
    }
    cert = x509.load_pem_x509_certificate(node.cert)
    assert serials == {format(cert.serial_number, "x")}
    admin.RetireNode(ipb.NodeActionRequest(node_id=node.id, reason="decommissioned"), timeout=10)
    for call in (
        lambda: node.heartbeat(),
        lambda: node.fleet.ReportFabric(fleet_pb2.ReportFabricRequest(), timeout=10),
        lambda: node.stub.RenewCertificate(
            ipb.RenewCertificateRequest(
                csr_pem=tlsutil.make_csr(_load_key(node.key), "x").decode()
            ),
            timeout=10,
        ),
        lambda: node.stub.CheckHostname(ipb.CheckHostnameRequest(hostname="x"), timeout=10),
    ):
        err = _refused(call)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.details()
    listed = admin.ListCertificates(ipb.ListCertificatesRequest(node_id=node.id)).certificates
    assert [(c.revoked, c.revocation_reason) for c in listed] == [(True, "node retired")]
    # and the retired machine cannot come back under its id, with its key or without
    for key_used in (key, None):
        err = _refused(lambda k=key_used: _register(inventory, _token(admin), hw, key=k))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "is retired" in err.details()
    assert admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).state == S.RETIRED


def test_an_admin_certificate_is_revoked_by_serial(inventory: InventoryProcess) -> None:
    admin = inventory.admin()
    cert_pem, key_pem = inventory.ca().issue_client("mallory", "operator")
    serial = format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
    with channels.secure_channel(inventory.address, inventory.ca().pem, cert_pem, key_pem) as ch:
        stolen = inventory_pb2_grpc.InventoryServiceStub(ch)
        assert stolen.ListNodes(ipb.ListNodesRequest(), timeout=10).total == 0
        revoked = admin.RevokeCertificate(
            ipb.RevokeCertificateRequest(serial=serial, reason="laptop stolen"), timeout=10
        )
        assert revoked.revoked and revoked.revoked_by == "admin:alice"
        err = _refused(lambda: stolen.ListNodes(ipb.ListNodesRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details() == f"certificate {serial} of admin:mallory has been revoked"
    viewer_cert, viewer_key = inventory.ca().issue_client("vic", "viewer")
    with channels.secure_channel(
        inventory.address, inventory.ca().pem, viewer_cert, viewer_key
    ) as ch:
        err = _refused(
            lambda: inventory_pb2_grpc.InventoryServiceStub(ch).RevokeCertificate(
                ipb.RevokeCertificateRequest(serial="abc"), timeout=10
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_enrolment_port_offers_register_and_health_only(inventory: InventoryProcess) -> None:
    with channels.secure_channel(inventory.bootstrap, inventory.ca().pem) as ch:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        for call in (
            lambda: stub.ListNodes(ipb.ListNodesRequest(), timeout=5),
            lambda: stub.CreateToken(ipb.CreateTokenRequest(), timeout=5),
            lambda: fleet_pb2_grpc.FleetServiceStub(ch).ExportTopology(
                fleet_pb2.ExportTopologyRequest(), timeout=5
            ),
        ):
            assert _refused(call).code() == grpc.StatusCode.UNIMPLEMENTED
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        err = _refused(
            lambda: list(
                reflect.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
            )
        )
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        err = _refused(lambda: stub.Register(ipb.RegisterRequest(token="abcdef.x"), timeout=5))
        assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.fixture
def agent_with_tcp(
    scratch: Path, machine_root: object, inventory: InventoryProcess
) -> Iterator[tuple[AgentProcess, str]]:
    ca = inventory.ca()
    cert, key = ca.issue_server(["127.0.0.1"])
    tls = scratch / "agent-tls"
    tls.mkdir()
    for name, data in (("agent.crt", cert), ("agent.key", key), ("ca.crt", ca.pem)):
        tlsutil.write_private(tls / name, data)
    port = free_port()
    agent = AgentProcess(
        scratch / "agent",
        machine_root("cpu-node"),  # type: ignore[operator]
        api=(
            f'tcp_listen = "127.0.0.1:{port}"\ntls_cert = "{tls / "agent.crt"}"\n'
            f'tls_key = "{tls / "agent.key"}"\ntls_ca = "{tls / "ca.crt"}"\n'
        ),
    ).start()
    yield agent, f"127.0.0.1:{port}"
    agent.stop()


def _agent_as(
    inventory: InventoryProcess, address: str, role: str, name: str = "bob"
) -> tuple[grpc.Channel, agent_pb2_grpc.NodeAgentStub]:
    ca = inventory.ca()
    if role == "node":
        key = tlsutil.new_key()
        cert = pki.cert_pem(ca.sign_csr(tlsutil.make_csr(key, "n"), "other-node", "node", 1))
        key_pem = tlsutil.key_pem(key)
    else:
        cert, key_pem = ca.issue_client(name, role)
    ch = channels.secure_channel(address, ca.pem, cert, key_pem)
    return ch, agent_pb2_grpc.NodeAgentStub(ch)


def test_the_agents_tcp_api_authorises_by_role(
    inventory: InventoryProcess, agent_with_tcp: tuple[AgentProcess, str]
) -> None:
    agent, address = agent_with_tcp
    apply = tpb.ApplyTuningRequest(
        profile="cpu-node", check=True, reboot_policy="auto", allow_joined=True
    )
    for role in ("node", "viewer"):
        ch, stub = _agent_as(inventory, address, role)
        with ch:
            if role == "viewer":
                assert stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=10).phase
            else:
                err = _refused(lambda s=stub: s.GetStatus(agent_pb2.GetStatusRequest(), timeout=10))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                assert err.details() == "node 'other-node' may not call GetStatus"
            for call in (
                lambda s=stub: list(s.ApplyTuning(apply, timeout=30)),
                lambda s=stub: s.VerifyTuning(tpb.VerifyTuningRequest(), timeout=30),
            ):
                err = _refused(call)
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    ch, operator = _agent_as(inventory, address, "operator")
    with ch:
        report = operator.VerifyTuning(tpb.VerifyTuningRequest(profile="cpu-node"), timeout=60)
        assert report.profile == "cpu-node"
        for path in ("/etc/passwd", "../../tmp/evil", "evil.yaml", "./cpu-node"):
            err = _refused(
                lambda p=path: operator.VerifyTuning(tpb.VerifyTuningRequest(profile=p), timeout=30)
            )
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.details() == (
                f"profile {path!r}: give the name of an installed profile, not a path"
            )
    # the root-only unix socket is root on this node
    with agent.channel() as local:
        assert agent.stub(local).GetStatus(agent_pb2.GetStatusRequest(), timeout=10).phase
    assert "Traceback" not in agent.log()


def test_admin_certificates_are_recorded_listed_and_revoked_from_the_cli(
    inventory: InventoryProcess, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    creds = {}
    for name, role in (("root", "admin"), ("eve", "operator")):
        out = scratch / name
        flags = ["--role", role, "--name", name, "--dir", str(out)]
        made = _cli("inventory", "issue-admin-cert", "--config", str(inventory.config), *flags)
        assert made.returncode == 0, made.stderr
        creds[name] = {
            "NODEAGENT_INVENTORY": inventory.address,
            "NODEAGENT_ADMIN_CERT": str(out / "admin.crt"),
            "NODEAGENT_ADMIN_KEY": str(out / "admin.key"),
            "NODEAGENT_ADMIN_CA": str(out / "ca.crt"),
        }
    root, eve = creds["root"], creds["eve"]
    listed = json.loads(
        _cli("admin", "-o", "json", "certs", "list", "--role", "operator", env=root).stdout
    )
    (entry,) = listed["certificates"]
    assert (entry["subject"], entry["role"], entry["revoked"]) == ("eve", "operator", False)
    assert _cli("admin", "nodes", "list", env=eve).returncode == 0
    revoked = _cli("admin", "certs", "revoke", entry["serial"], "--reason", "left", env=root)
    assert revoked.returncode == 0 and "by admin:root" in revoked.stdout, revoked.stderr
    refused = _cli("admin", "nodes", "list", env=eve)
    assert refused.returncode == 1
    assert f"certificate {entry['serial']} of admin:eve has been revoked" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    # a re-enrol token from the CLI: single use, bound to the node, no preset
    node, _ = _register(inventory, _token(inventory.admin()), variant(dgx_inventory, 31))
    made = _cli("admin", "-o", "json", "tokens", "create", "--reenrol", node.node_id, env=root)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["token"]["reenrol_node"] == node.node_id and token["token"]["max_uses"] == 1
    again, _ = _register(inventory, token["secret"], variant(dgx_inventory, 31))
    assert again.node_id == node.node_id


def test_a_node_cannot_place_another_or_inject_into_topology_conf(
    inventory: InventoryProcess, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    from tests.inventory.test_fleet import INJECTED, SLURM_LINE, _observation

    admin = inventory.admin()
    a, b = (
        Node(inventory, *_register(inventory, _token(admin), variant(dgx_inventory, n)))
        for n in (940, 941)
    )
    b.fleet.ReportFabric(
        fleet_pb2.ReportFabricRequest(observation=_observation("x", ["b1"], "s1")), timeout=10
    )
    # A claims B's name, then a name with a line of topology.conf in it
    for name in ("gpu-00941", "gpu-00940" + INJECTED):
        a.fleet.ReportFabric(
            fleet_pb2.ReportFabricRequest(observation=_observation(name, ["a1"], "s1")), timeout=10
        )
    out = scratch / "admin"
    flags = ["--role", "viewer", "--name", "vic", "--dir", str(out)]
    _cli("inventory", "issue-admin-cert", "--config", str(inventory.config), *flags)
    env = {
        "NODEAGENT_INVENTORY": inventory.address,
        "NODEAGENT_ADMIN_CERT": str(out / "admin.crt"),
        "NODEAGENT_ADMIN_KEY": str(out / "admin.key"),
        "NODEAGENT_ADMIN_CA": str(out / "ca.crt"),
    }
    slurm = _cli("admin", "export", "slurm-topology", env=env)
    assert slurm.returncode == 0, slurm.stderr
    lines = [line for line in slurm.stdout.splitlines() if line and not line.startswith("#")]
    assert all(SLURM_LINE.fullmatch(line) for line in lines), lines
    assert "evil" not in slurm.stdout
    b_line = next(line for line in lines if "Nodes=gpu-00941" in line)
    a_line = next(line for line in lines if "Nodes=gpu-00940" in line)
    assert b_line != a_line, "A's reports landed on A, B keeps its own placement"
