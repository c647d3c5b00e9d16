"""Every certificate the inventory issues, and the revocation list every mTLS call checks.

A certificate is recorded when it is issued (serial, subject, role, node, the SHA-256
of its public key, expiry) in the same transaction as the registration or renewal it
serves. Revocation is a deny-list: revoking a serial never recorded (an admin
certificate issued before records were kept) still works. Each replica keeps the
revoked serials in memory and re-reads them every few seconds, so a revocation made
on one replica holds on all of them within `refresh_seconds`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cryptography import x509

from nodeagent.api import auth
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import pki
from nodeagent.inventory.store import NotFound, Store, message_from_row
from nodeagent.tlsutil import spki_hash

log = logging.getLogger("nodeagent.inventory")
COLUMNS = "serial, subject, role, node_id, issued_at, not_after, revoked_at, revoked_by, reason"


def record(store: Store, cur: Any, cert: x509.Certificate, role: str, node_id: str = "") -> None:
    cur.execute(
        store.q(
            "INSERT INTO certificates (serial, subject, role, node_id, spki_sha256, issued_at, "
            "not_after) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ),
        (
            pki.serial_hex(cert),
            auth.principal_of(cert).name,
            role,
            node_id,
            spki_hash(cert),
            cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(),
        ),
    )


def valid_keys(store: Store, cur: Any, node_id: str) -> set[str] | None:
    """The public keys of the node's unexpired, unrevoked certificates.

    None when the node holds a valid certificate whose key was never recorded (enrolled
    before records were kept): it is valid, but no new key can prove to be it.
    """
    now = time.time()
    cur.execute(
        store.q(
            "SELECT spki_sha256 FROM certificates WHERE node_id = ? AND revoked_at = 0 "
            "AND not_after > ?"
        ),
        (node_id, now),
    )
    keys = {row[0] for row in cur.fetchall()}
    if keys:
        return keys
    cur.execute(store.q("SELECT COUNT(*) FROM certificates WHERE node_id = ?"), (node_id,))
    recorded = cur.fetchone()[0]
    cur.execute(store.q("SELECT cert_not_after FROM nodes WHERE id = ?"), (node_id,))
    row = cur.fetchone()
    if not recorded and row is not None and row[0] > now:
        return None
    return set()


def revoke_node(store: Store, cur: Any, node_id: str, actor: str, reason: str) -> int:
    """Revoke every certificate of a node (retire, delete); returns how many."""
    cur.execute(
        store.q(
            "UPDATE certificates SET revoked_at = ?, revoked_by = ?, reason = ? "
            "WHERE node_id = ? AND revoked_at = 0"
        ),
        (time.time(), actor, reason[:200], node_id),
    )
    return int(cur.rowcount or 0)


def revoke(store: Store, serial: str, actor: str, reason: str) -> ipb.Certificate:
    serial = serial.lower().removeprefix("0x")
    if not serial or len(serial) > 40 or any(c not in "0123456789abcdef" for c in serial):
        raise ValueError("serial: a certificate serial number in hex (admin certs list)")
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q(
                "UPDATE certificates SET revoked_at = ?, revoked_by = ?, reason = ? "
                "WHERE serial = ? AND revoked_at = 0"
            ),
            (now, actor, reason[:200], serial),
        )
        cur.execute(store.q("SELECT 1 FROM certificates WHERE serial = ?"), (serial,))
        if cur.fetchone() is None:
            cur.execute(
                store.q(
                    "INSERT INTO certificates (serial, subject, role, issued_at, not_after, "
                    "revoked_at, revoked_by, reason) VALUES (?, '', '', 0, 0, ?, ?, ?)"
                ),
                (serial, now, actor, reason[:200]),
            )
        return _load(store, cur, serial)


def _load(store: Store, cur: Any, serial: str) -> ipb.Certificate:
    cur.execute(store.q(f"SELECT {COLUMNS} FROM certificates WHERE serial = ?"), (serial,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no certificate {serial}")
    return _message(row)


# the columns of COLUMNS, as fields of ipb.Certificate ("revoked" is derived from revoked_at)
FIELDS = (
    "serial",
    "subject",
    "role",
    "node_id",
    "issued_at",
    "not_after",
    "revoked_at",
    "revoked_by",
    "revocation_reason",
)


def _message(row: Any) -> ipb.Certificate:
    cert = message_from_row(ipb.Certificate, FIELDS, row)
    cert.revoked = cert.HasField("revoked_at")
    return cert


def list_certificates(store: Store, req: ipb.ListCertificatesRequest) -> list[ipb.Certificate]:
    where: list[str] = ["1 = 1"]
    args: list[str | float] = []
    for column, value in (("node_id", req.node_id), ("role", req.role)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if not req.include_expired:
        where.append("(not_after > ? OR revoked_at > 0)")
        args.append(time.time())
    with store.tx() as cur:
        cur.execute(
            store.q(
                f"SELECT {COLUMNS} FROM certificates WHERE {' AND '.join(where)} "
                "ORDER BY issued_at, serial"
            ),
            args,
        )
        return [_message(r) for r in cur.fetchall()]


def revoked_serials(store: Store) -> frozenset[str]:
    with store.tx() as cur:
        cur.execute("SELECT serial FROM certificates WHERE revoked_at > 0")
        return frozenset(row[0] for row in cur.fetchall())


class RevocationList:
    """The revoked serials, as the Authorizer asks for them on every call (no I/O there)."""

    def __init__(self, refresh_seconds: float = 2.0) -> None:
        self.refresh_seconds = refresh_seconds
        self.serials: frozenset[str] = frozenset()

    def is_revoked(self, serial: int) -> bool:
        return format(serial, "x") in self.serials

    def add(self, serial: str) -> None:
        """This replica's own revocation holds at once, before the next refresh."""
        self.serials = self.serials | {serial}

    async def refresh(self, store: Store) -> None:
        self.serials = await store.run(revoked_serials, store)
