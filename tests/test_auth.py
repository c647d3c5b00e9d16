"""The one authoriser: table coverage, role parsing, refusals, and the shared text rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes

from nodeagent import tlsutil
from nodeagent.agent.permissions import PERMISSIONS as AGENT_PERMISSIONS
from nodeagent.api import auth
from nodeagent.api.v1 import agent_pb2, fleet_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import pki
from nodeagent.inventory.auth import PERMISSIONS


def test_every_inventory_method_has_a_permission_entry() -> None:
    for service in (
        ipb.DESCRIPTOR.services_by_name["InventoryService"],
        fleet_pb2.DESCRIPTOR.services_by_name["FleetService"],
    ):
        auth.check_covers(service, PERMISSIONS)
        assert {m.name for m in service.methods} <= set(PERMISSIONS)


def test_every_agent_method_has_a_permission_entry_and_nodes_get_none() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"]
    auth.check_covers(service, AGENT_PERMISSIONS)
    assert {m.name for m in service.methods} == set(AGENT_PERMISSIONS)
    assert all(allowed and "node" not in allowed for allowed in AGENT_PERMISSIONS.values())


def test_a_method_missing_from_the_table_stops_the_start() -> None:
    service = ipb.DESCRIPTOR.services_by_name["InventoryService"]
    partial = {k: v for k, v in PERMISSIONS.items() if k != "RetireNode"}
    with pytest.raises(RuntimeError) as err:
        auth.check_covers(service, partial)
    assert str(err.value) == "nodeagent.v1.InventoryService: no permission entry for RetireNode"


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class _Context:
    """Only what Authorizer reads of a grpc.aio.ServicerContext: the peer and its certificate."""

    def __init__(self, pem: bytes | None, peer: str = "ipv4:127.0.0.1:40000") -> None:
        self.pem, self._peer = pem, peer

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]} if self.pem else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


def _ca(tmp_path: Path) -> pki.CertificateAuthority:
    return pki.CertificateAuthority.load_or_create(tmp_path / "ca.pem", tmp_path / "ca.key")


def _pem(tmp_path: Path, name: str, role: str) -> bytes:
    cert, _key = _ca(tmp_path).issue_client(name, role)
    return cert


def _call(
    table: auth.Permissions,
    method: str,
    pem: bytes | None,
    *,
    peer: str = "ipv4:127.0.0.1:40000",
    trust_local: bool = False,
) -> auth.Principal | None:
    async def go() -> auth.Principal | None:
        authorize = auth.Authorizer(table, trust_local=trust_local)
        await authorize(method, _Context(pem, peer))  # type: ignore[arg-type]
        return auth.principal_var.get()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("role", "method", "allowed"),
    [
        ("viewer", "ListNodes", True),
        ("viewer", "HoldNode", False),
        ("operator", "HoldNode", True),
        ("operator", "RetireNode", False),
        ("admin", "RetireNode", True),
        ("admin", "Heartbeat", False),
    ],
)
def test_roles_are_checked_against_the_table(
    tmp_path: Path, role: str, method: str, allowed: bool
) -> None:
    pem = _pem(tmp_path, "alice", role)
    if allowed:
        got = _call(PERMISSIONS, method, pem)
        assert got == auth.Principal(role, "alice", got.serial if got else 0)
        assert got is not None and got.actor == "admin:alice"
        return
    with pytest.raises(_Aborted) as err:
        _call(PERMISSIONS, method, pem)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details == f"{role} 'alice' may not call {method}"


def test_no_certificate_is_unauthenticated_except_where_none_is_needed(tmp_path: Path) -> None:
    with pytest.raises(_Aborted) as err:
        _call(PERMISSIONS, "ListNodes", None)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert _call(PERMISSIONS, "Register", None) is None


def test_a_certificate_without_a_role_is_refused(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    cert = ca.sign_csr(tlsutil.make_csr(tlsutil.new_key(), "ignored"), "n1", "node", 1)
    assert auth.principal_of(cert) == auth.Principal("node", "n1", cert.serial_number)
    assert auth.principal_of(cert).actor == "node:n1"
    with pytest.raises(auth.RoleError, match="no nodeagent role"):
        auth.principal_of(ca.cert)  # the CA's own certificate carries no OU


@pytest.mark.parametrize(
    "value", ["a\nb", "tab\there", "bell\x07", "del\x7f", "line\u2028sep", "x" * 254]
)
def test_validate_text_refuses_control_characters_and_long_values(value: str) -> None:
    with pytest.raises(ValueError, match="hostname: at most 253 printable characters"):
        auth.validate_text(value, "hostname")


def test_validate_text_returns_what_it_accepts() -> None:
    assert auth.validate_text("gpu-0001.example", "hostname") == "gpu-0001.example"
    assert auth.validate_text("", "reason", 10) == ""
    assert auth.validate_text("x" * 10, "reason", 10) == "x" * 10


def test_the_exact_refusals(tmp_path: Path) -> None:
    with pytest.raises(_Aborted) as err:
        _call(PERMISSIONS, "ListNodes", None)
    assert err.value.details == "ListNodes needs a client certificate issued by this inventory"
    # a certificate of our CA that carries no role: refused with why, whatever the method
    ca_pem = _ca(tmp_path).pem
    for method in ("Register", "ListNodes"):
        with pytest.raises(_Aborted) as err:
            _call(PERMISSIONS, method, ca_pem)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details == "certificate has no nodeagent role (OU='')"


def test_the_unix_socket_is_root_only_where_trusted(tmp_path: Path) -> None:
    assert _call(AGENT_PERMISSIONS, "ApplyTuning", None, peer="unix:", trust_local=True) == (
        auth.LOCAL_ROOT
    )
    assert auth.Principal("admin", "root@local") == auth.LOCAL_ROOT
    with pytest.raises(_Aborted) as err:  # not trusted: a unix peer is just anonymous
        _call(AGENT_PERMISSIONS, "ApplyTuning", None, peer="unix:")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(_Aborted):  # trusted, but TCP: the certificate decides
        _call(AGENT_PERMISSIONS, "ApplyTuning", None, trust_local=True)


def test_caller_outside_an_authorised_call_and_a_certificate_without_cn(tmp_path: Path) -> None:
    async def no_caller() -> None:
        auth.principal_var.set(None)
        auth.caller()

    with pytest.raises(AssertionError, match="caller\\(\\) in a method that needs no certificate"):
        asyncio.run(no_caller())
    from cryptography import x509 as x509_mod
    from cryptography.x509.oid import NameOID

    ca = _ca(tmp_path)
    key = tlsutil.new_key()
    subject = x509_mod.Name([x509_mod.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "viewer")])
    cert = (
        x509_mod.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .sign(ca.key, hashes.SHA256())
    )
    assert auth.principal_of(cert) == auth.Principal("viewer", "", 7)
