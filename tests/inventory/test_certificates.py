"""The certificate records and the revocation list, in process against a real store: what
revoke accepts, what a node's valid keys are (including nodes enrolled before records were
kept), listing, and the in-memory list the authoriser consults."""

from __future__ import annotations

import asyncio
import time

import pytest

from nodeagent import tlsutil
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import certificates, pki
from nodeagent.inventory.store import NotFound, Store
from tests.inventory.test_lifecycle import _node, store

__all__ = ["store"]
S = ipb.NodeState


def _issue(ca: pki.CertificateAuthority, node_id: str, days: float = 1) -> tuple[object, str]:
    key = tlsutil.new_key()
    cert = ca.sign_csr(tlsutil.make_csr(key, "n"), node_id, "node", days)
    return cert, tlsutil.spki_hash(cert)


@pytest.fixture
def ca(tmp_path: object) -> pki.CertificateAuthority:
    from pathlib import Path

    base = Path(str(tmp_path))
    return pki.CertificateAuthority.load_or_create(base / "ca.crt", base / "ca.key")


@pytest.mark.parametrize(
    ("given", "stored"),
    [("ABC123", "abc123"), ("0xabc123", "abc123"), ("0Xabc", "abc"), ("f" * 40, "f" * 40)],
)
def test_revoke_takes_a_hex_serial_in_any_case_or_prefix(
    store: Store, given: str, stored: str
) -> None:
    cert = certificates.revoke(store, given, "admin:a", "r" * 300)
    assert (cert.serial, cert.revoked, cert.revoked_by) == (stored, True, "admin:a")
    assert cert.revocation_reason == "r" * 200
    assert certificates.revoked_serials(store) == frozenset({stored})


@pytest.mark.parametrize("serial", ["", "0x", "f" * 41, "xyz", "12 34", "-1"])
def test_revoke_refuses_what_is_not_a_serial(store: Store, serial: str) -> None:
    with pytest.raises(ValueError) as err:
        certificates.revoke(store, serial, "admin:a", "")
    assert str(err.value) == "serial: a certificate serial number in hex (admin certs list)"
    assert certificates.revoked_serials(store) == frozenset()


def test_a_nodes_keys_revocation_and_listing(store: Store, ca: pki.CertificateAuthority) -> None:
    _node(store, "n1", S.READY)
    cert_a, key_a = _issue(ca, "n1")
    cert_b, key_b = _issue(ca, "n1")
    with store.tx() as cur:
        certificates.record(store, cur, cert_a, "node", "n1")  # type: ignore[arg-type]
        certificates.record(store, cur, cert_b, "node", "n1")  # type: ignore[arg-type]
        assert certificates.valid_keys(store, cur, "n1") == {key_a, key_b}
    listed = certificates.list_certificates(store, ipb.ListCertificatesRequest(node_id="n1"))
    assert {c.serial for c in listed} == {pki.serial_hex(cert_a), pki.serial_hex(cert_b)}  # type: ignore[arg-type]
    assert all(c.role == "node" and c.subject == "n1" and not c.revoked for c in listed)
    assert certificates.list_certificates(store, ipb.ListCertificatesRequest(role="admin")) == []
    with store.tx() as cur:
        assert certificates.revoke_node(store, cur, "n1", "admin:a", "retired") == 2
        assert certificates.revoke_node(store, cur, "n1", "admin:a", "again") == 0
        assert certificates.valid_keys(store, cur, "n1") == set(), "all revoked: no proof left"
    listed = certificates.list_certificates(store, ipb.ListCertificatesRequest(node_id="n1"))
    assert [(c.revoked, c.revocation_reason) for c in listed] == [(True, "retired")] * 2


def test_a_node_enrolled_before_records_holds_an_unprovable_key(store: Store) -> None:
    _node(store, "old", S.READY)
    with store.tx() as cur:
        cur.execute(
            store.q("UPDATE nodes SET cert_not_after = ? WHERE id = ?"),
            (time.time() + 86400, "old"),
        )
        assert certificates.valid_keys(store, cur, "old") is None
        cur.execute(store.q("UPDATE nodes SET cert_not_after = ? WHERE id = ?"), (1.0, "old"))
        assert certificates.valid_keys(store, cur, "old") == set(), "expired: no key to prove"


def test_expired_certificates_are_listed_only_when_asked(
    store: Store, ca: pki.CertificateAuthority
) -> None:
    _node(store, "n2", S.READY)
    cert, _ = _issue(ca, "n2", days=1)
    with store.tx() as cur:
        certificates.record(store, cur, cert, "node", "n2")  # type: ignore[arg-type]
        cur.execute(store.q("UPDATE certificates SET not_after = 1 WHERE node_id = 'n2'"))
        assert certificates.valid_keys(store, cur, "n2") == set()
    assert certificates.list_certificates(store, ipb.ListCertificatesRequest(node_id="n2")) == []
    every = ipb.ListCertificatesRequest(node_id="n2", include_expired=True)
    assert len(certificates.list_certificates(store, every)) == 1


def test_the_in_memory_list(store: Store) -> None:
    revocations = certificates.RevocationList()
    assert revocations.refresh_seconds == 2.0 and revocations.serials == frozenset()
    assert not revocations.is_revoked(0xABC)
    revocations.add("abc")
    assert revocations.is_revoked(0xABC) and not revocations.is_revoked(0xABD)
    certificates.revoke(store, "def", "admin:a", "")
    asyncio.run(revocations.refresh(store))
    assert revocations.serials == frozenset({"def"}), "the database's list replaces the local one"
    with pytest.raises(NotFound, match="no certificate 0"), store.tx() as cur:
        certificates._load(store, cur, "0")
