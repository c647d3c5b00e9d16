"""What the inventory does to its records: each function is one transaction.

They run in the store's worker thread (`await store.run(fn, store, ...)`), take
plain values and protobuf messages, and raise NotFound / Conflict / TokenError /
TransitionError for refusals (the transaction is rolled back: nothing written).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from nodeagent.api import auth, jsonpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import certificates, identity, kubespray, lifecycle, pki, reports, tokens
from nodeagent.inventory.store import Conflict, NotFound, Store, dumps, message_from_row

S = ipb.NodeState
NODE_COLUMNS = (
    "id, hostname, state, held_from, state_reason, pool, role, cluster, profile, "
    "labels, taints, gpu_model, gpu_count, inventory_hash, cert_not_after, created_at, blocking"
)
N_COLUMNS = ", ".join(f"n.{c.strip()}" for c in NODE_COLUMNS.split(","))  # of `nodes n`
ASSIGNMENT_FIELDS = ("pool", "role", "cluster", "profile", "labels", "taints")
# What a profile check says about a node's hardware: one warning per line, none if it fits.
# The service's ProfileCatalogue.fit; a warning is recorded, never a refusal (an admin may
# know better, e.g. a GPU on order).
Fit = Callable[[str, pb.HardwareInventory], list[str]]
PROFILE_CHECK = "system:profile-check"


def _assignment(
    pool: str, role: str, cluster: str, profile: str, labels: str, taints: str
) -> ipb.Assignment:
    return ipb.Assignment(
        pool=pool,
        role=role,
        cluster=cluster,
        profile=profile,
        labels=json.loads(labels),
        taints=json.loads(taints),
    )


def assignment_columns(a: ipb.Assignment) -> dict[str, str]:
    """The nodes table's columns for an assignment (labels and taints as JSON)."""
    return {
        "pool": a.pool,
        "role": a.role,
        "cluster": a.cluster,
        "profile": a.profile,
        "labels": dumps(dict(a.labels)),
        "taints": dumps(list(a.taints)),
    }


def node_from_row(row: Any, live: Any = None, now: float = 0.0, deadline: float = 0.0) -> ipb.Node:
    (
        node_id,
        hostname,
        state,
        _held,
        reason,
        pool,
        role,
        cluster,
        profile,
        labels,
        taints,
        gpu_model,
        gpu_count,
        inv_hash,
        cert_after,
        created,
        blocking,
    ) = row
    node = ipb.Node(
        id=node_id,
        hostname=hostname,
        state=state,
        state_reason=reason,
        assignment=_assignment(pool, role, cluster, profile, labels, taints),
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        inventory_hash=inv_hash,
        blocking=json.loads(blocking),
    )
    node.created_at.FromNanoseconds(int(created * 1e9))
    if cert_after:
        node.certificate_expires.FromNanoseconds(int(cert_after * 1e9))
    if live is not None:
        last_seen, phase = live
        node.last_seen.FromNanoseconds(int(last_seen * 1e9))
        node.reported_phase = phase
        node.reachable = last_seen >= deadline
    return node


def _gpu_summary(inv: pb.HardwareInventory) -> tuple[str, int]:
    models = sorted({g.model for g in inv.gpus})
    return (models[0] if len(models) == 1 else ",".join(models)), len(inv.gpus)


def check_token(store: Store, cur: Any, token: str) -> tuple[str, ipb.Assignment, str]:
    """Validate a bootstrap token (no lock taken); returns its id, preset and bound node."""
    token_id, secret = tokens.split(token)
    cur.execute(
        store.q(
            "SELECT secret_hash, expires_at, max_uses, uses, revoked, preset, reenrol_node "
            "FROM tokens WHERE id = ?"
        ),
        (token_id,),
    )
    row = cur.fetchone()
    if row is None or not tokens.matches(secret, row[0]):
        raise tokens.TokenError("unknown bootstrap token")
    _, expires_at, max_uses, uses, revoked, preset, reenrol_node = row
    if revoked:
        raise tokens.TokenError("bootstrap token has been revoked")
    if expires_at < time.time():
        raise tokens.TokenError("bootstrap token has expired")
    if uses >= max_uses:
        raise tokens.TokenError("bootstrap token has already been used")
    return token_id, json_format.Parse(preset, ipb.Assignment()), reenrol_node


def spend_token(store: Store, cur: Any, token_id: str) -> None:
    """Count one use, atomically, as the last write of the registration's transaction.

    Last, because it locks the token's row until commit: with PostgreSQL a
    registration wave on one token would otherwise queue behind that lock for
    the whole transaction. The condition re-checks what check_token saw, so a
    concurrent revocation or the last use taken by another replica still wins.
    """
    cur.execute(
        store.q(
            "UPDATE tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses "
            "AND revoked = 0 AND expires_at >= ?"
        ),
        (token_id, time.time()),
    )
    if cur.rowcount != 1:
        raise tokens.TokenError("bootstrap token has already been used")


class AlreadyEnrolled(Conflict):
    """Another machine claims an enrolled node's identity without proof of its key."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


def _existing_node(
    store: Store, cur: Any, inv: pb.HardwareInventory
) -> tuple[str | None, list[Any]]:
    """The node this hardware was enrolled as, and the nodes sharing its DMI id.

    Only identifiers the machine actually reports count: a registration without NICs
    or GPUs matches nothing by hardware, so it cannot borrow an enrolled node's DMI id.
    """
    dmi = identity.dmi_key(inv)
    hw_ids = set(identity.hardware_ids(inv))
    dmi_rows: list[Any] = []
    if dmi:
        cur.execute(store.q("SELECT id, hw_ids FROM nodes WHERE dmi_key = ?"), (dmi,))
        dmi_rows = list(cur.fetchall())
        for node_id, ids in dmi_rows:
            # a DMI id shared by machines with disjoint hardware is a duplicate, not a match
            if hw_ids & set(json.loads(ids)):
                return node_id, dmi_rows
    fallback = identity.fallback_key(inv)
    if fallback:
        cur.execute(store.q("SELECT id FROM nodes WHERE identity_key = ?"), (fallback,))
        row = cur.fetchone()
        if row:
            return str(row[0]), dmi_rows
    return None, dmi_rows


def _may_take_over(store: Store, cur: Any, node_id: str, csr_key: str, reenrol_node: str) -> None:
    """Refuse a registration as an enrolled node unless it proves to be that node.

    Proof is the node's current key (the CSR is signed by a key whose certificate is
    still valid: an agent that lost its certificate mid-enrolment) or a re-enrol token
    an admin bound to this node id (a reinstalled machine). A node whose certificates
    have all expired or been revoked may enrol again with any token, except a retired one.
    """
    cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
    if cur.fetchone()[0] == S.RETIRED:
        raise AlreadyEnrolled(node_id, f"node {node_id} is retired; delete it to enrol again")
    if reenrol_node == node_id:
        return
    keys = certificates.valid_keys(store, cur, node_id)
    if keys is not None and (not keys or csr_key in keys):
        return
    raise AlreadyEnrolled(
        node_id,
        f"node {node_id} already enrolled; use a re-enrol token "
        f"(nodeagent admin tokens create --reenrol {node_id})",
    )


def _apply_preset(store: Store, cur: Any, node_id: str, preset: ipb.Assignment) -> str:
    """Set the fields a token's preset gives (the others stay); '' when it gives none,
    else what was set, for the event."""
    values = assignment_columns(preset)
    chosen = [f for f in ASSIGNMENT_FIELDS if getattr(preset, f)]
    if not chosen:
        return ""
    sets = ", ".join(f"{f} = ?" for f in chosen)
    cur.execute(
        store.q(f"UPDATE nodes SET {sets}, updated_at = ? WHERE id = ?"),
        [*(values[f] for f in chosen), time.time(), node_id],
    )
    return ", ".join(
        f"{f}={values[f] if f in ('labels', 'taints') else getattr(preset, f)}" for f in chosen
    )


def _record_fit(
    store: Store,
    cur: Any,
    node_id: str,
    state: int,
    profile: str,
    inv: pb.HardwareInventory,
    fit: Fit | None,
) -> list[str]:
    """Check the assigned profile against the node's hardware; each misfit is an event."""
    if fit is None or not profile:
        return []
    warnings = fit(profile, inv)
    for warning in warnings:
        store.add_event(cur, node_id, PROFILE_CHECK, state, state, warning)
    return warnings


def register(
    store: Store,
    token: str,
    inv: pb.HardwareInventory,
    csr_key: str,
    issue: Any,
    fit: Fit | None = None,
) -> tuple[ipb.Node, bytes, list[str]]:
    """Enrol a machine: a new node, or the same node id for hardware seen before.

    `csr_key` is the SPKI hash of the CSR's key. `issue(node_id)` signs the node's CSR
    and returns the certificate; it runs inside the transaction, and the certificate is
    recorded there, so one is only ever handed out for a committed registration. The
    transaction is kept short (the inventory is serialised before it starts): with
    SQLite it holds the one write lock, with PostgreSQL a pooled connection.

    Hardware seen before (proof of its key, or a re-enrol token) keeps its node id. A plain
    token's preset is applied to it, field by field, and the event says so: the admin who
    made the token chose it for whatever that token enrols. A re-enrol token carries no
    preset, so a reinstall keeps the assignment. `fit` checks the resulting profile against
    the hardware; its warnings are events and are returned for the log.
    """
    now = time.time()
    dmi = identity.dmi_key(inv)
    hw_ids = identity.hardware_ids(inv)
    inv_json = jsonpb.to_json(inv)
    model, count = _gpu_summary(inv)
    with store.tx() as cur:
        token_id, preset, reenrol_node = check_token(store, cur, token)
        existing, dmi_rows = _existing_node(store, cur, inv)
        if reenrol_node and existing != reenrol_node:
            raise tokens.TokenError(
                f"this re-enrol token is for node {reenrol_node}, and this machine is not it"
            )
        if existing is not None:
            _may_take_over(store, cur, existing, csr_key, reenrol_node)
        fallback = identity.fallback_key(inv)
        if existing is not None:
            node_id = existing
            _store_inventory(store, cur, node_id, inv, "", inv_json)
            cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
            state = cur.fetchone()[0]
            how = "same hardware, same node id"
            if reenrol_node:
                # the old key is gone with the old install: nothing may use it any more
                certificates.revoke_node(store, cur, node_id, f"node:{node_id}", "re-enrolled")
                how = f"re-enrol token {token_id}, earlier certificates revoked"
            applied = _apply_preset(store, cur, node_id, preset)
            what = (
                f"token {token_id}'s preset applied: {applied}"
                if applied
                else f"assignment kept (token {token_id} carries no preset)"
            )
            store.add_event(
                cur, node_id, f"node:{node_id}", state, state, f"re-registered ({how}); {what}"
            )
            cert_pem, not_after = _issue(store, cur, issue, node_id)
            cur.execute(
                store.q("UPDATE nodes SET cert_not_after = ? WHERE id = ?"), (not_after, node_id)
            )
        else:
            duplicated = bool(dmi_rows)  # the DMI id is taken by different hardware
            key = fallback if (duplicated or not dmi) else dmi
            if not key:
                raise Conflict("no usable identity: placeholder DMI and no NIC MACs or GPU serials")
            node_id = str(uuid.uuid4())
            lifecycle.check(S.ENROLLED, S.DISCOVERED)
            record: dict[str, Any] = {
                "id": node_id,
                "identity_key": key,
                "dmi_key": "" if duplicated else dmi,
                "hw_ids": dumps(hw_ids),
                "hostname": inv.system.hostname[:253],
                "state": S.DISCOVERED,
                "held_from": 0,
                "state_reason": "hardware inventory received",
                **assignment_columns(preset),
                "gpu_model": model,
                "gpu_count": count,
                "inventory": inv_json,
                "inventory_hash": "",
                "cert_not_after": 0,
                "created_at": now,
                "updated_at": now,
                "blocking": "[]",
            }
            cur.execute(
                store.q(
                    f"INSERT INTO nodes ({', '.join(record)}) "
                    f"VALUES ({', '.join('?' for _ in record)})"
                ),
                list(record.values()),
            )
            cert_pem, not_after = _issue(store, cur, issue, node_id)
            cur.execute(
                store.q("UPDATE nodes SET cert_not_after = ? WHERE id = ?"), (not_after, node_id)
            )
            actor = f"node:{node_id}"
            store.add_event(
                cur,
                node_id,
                actor,
                S.NODE_STATE_UNSPECIFIED,
                S.ENROLLED,
                "registered with a bootstrap token",
            )
            store.add_event(
                cur, node_id, actor, S.ENROLLED, S.DISCOVERED, "hardware inventory received"
            )
        cur.execute(
            store.q(
                "INSERT INTO liveness (node_id, last_seen, phase, reachable) "
                "VALUES (?, ?, 'ENROLLED', 1) ON CONFLICT (node_id) DO UPDATE SET "
                "last_seen = excluded.last_seen"
            ),
            (node_id, now),
        )
        if existing is not None:
            node = _load(store, cur, node_id)
        else:
            # the new node's message from what was written, without reading it back
            record["cert_not_after"] = not_after
            node = node_from_row(tuple(record[c.strip()] for c in NODE_COLUMNS.split(",")))
        warnings = _record_fit(store, cur, node_id, node.state, node.assignment.profile, inv, fit)
        spend_token(store, cur, token_id)
    return node, cert_pem, warnings


def _store_inventory(
    store: Store,
    cur: Any,
    node_id: str,
    inv: pb.HardwareInventory,
    inv_hash: str,
    inv_json: str | None = None,
) -> None:
    model, count = _gpu_summary(inv)
    cur.execute(
        store.q(
            "UPDATE nodes SET inventory = ?, inventory_hash = ?, hostname = ?, "
            "gpu_model = ?, gpu_count = ?, hw_ids = ?, updated_at = ? WHERE id = ?"
        ),
        (
            inv_json or jsonpb.to_json(inv),
            inv_hash,
            inv.system.hostname[:253],
            model,
            count,
            dumps(identity.hardware_ids(inv)),
            time.time(),
            node_id,
        ),
    )


def _load(store: Store, cur: Any, node_id: str) -> ipb.Node:
    cur.execute(store.q(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?"), (node_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(node_id)
    return node_from_row(row)


def _check_names(blocking: list[str]) -> list[str]:
    """The check names of blocking entries ("name: message (fix: remedy)")."""
    return [b.split(":", 1)[0] for b in blocking]


def _store_blocking(
    store: Store, cur: Any, node_id: str, state: int, stored: str, blocking: list[str]
) -> None:
    """Keep what the agent says blocks it; an event when the set of failing checks changes
    (not when only a message does: free disk space is a new number at every discovery)."""
    before = json.loads(stored)
    if before == blocking:
        return
    cur.execute(store.q("UPDATE nodes SET blocking = ? WHERE id = ?"), (dumps(blocking), node_id))
    names = _check_names(blocking)
    if names != _check_names(before):
        reason = (
            f"blocked by preflight: {', '.join(names)}"
            if names
            else "preflight passes: nothing blocks the node"
        )
        store.add_event(cur, node_id, f"node:{node_id}", state, state, reason)


def heartbeat_update(
    store: Store,
    node_id: str,
    phase: str,
    inv: pb.HardwareInventory | None,
    inv_hash: str,
    blocking: list[str] | None = None,
) -> tuple[ipb.Node, bool]:
    """Apply what a heartbeat changes beyond liveness; returns (node, wants inventory).

    `blocking` (None: not sent) replaces the failing preflight checks the node reported."""
    with store.tx() as cur:
        cur.execute(store.q(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?"), (node_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(node_id)
        current, stored_hash = row[2], row[13]
        if blocking is not None:
            _store_blocking(store, cur, node_id, current, row[-1], blocking)
        if inv is not None:
            _store_inventory(store, cur, node_id, inv, inv_hash)
            if stored_hash and stored_hash != inv_hash:
                store.add_event(
                    cur, node_id, f"node:{node_id}", current, current, "hardware inventory changed"
                )
            stored_hash = inv_hash
        target = lifecycle.from_agent_phase(current, phase)
        if target is not None:
            lifecycle.transition(
                store, cur, node_id, target, f"node:{node_id}", f"agent reports {phase}"
            )
        node = _load(store, cur, node_id)
    return node, bool(inv_hash) and inv_hash != stored_hash


def _issue(store: Store, cur: Any, issue: Any, node_id: str) -> tuple[bytes, float]:
    cert = issue(node_id)
    certificates.record(store, cur, cert, auth.NODE, node_id)
    return pki.cert_pem(cert), cert.not_valid_after_utc.timestamp()


def renew(store: Store, node_id: str, issue: Any) -> bytes:
    with store.tx() as cur:
        node = _load(store, cur, node_id)
        if node.state == S.RETIRED:
            raise Conflict(f"node {node_id} is retired: its certificate is not renewed")
        cert_pem, not_after = _issue(store, cur, issue, node_id)
        cur.execute(  # updated_at: other replicas' heartbeat caches re-read the node
            store.q("UPDATE nodes SET cert_not_after = ?, updated_at = ? WHERE id = ?"),
            (not_after, time.time(), node_id),
        )
        store.add_event(cur, node_id, f"node:{node_id}", 0, 0, "certificate renewed")
    return bytes(cert_pem)


def with_phase(
    store: Store, where: str = "", args: tuple[Any, ...] = ()
) -> list[tuple[ipb.Node, str]]:
    """Nodes (every one, or those `where` picks from `nodes n`), each with the phase its
    agent last reported: what the service's heartbeat cache holds."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                f"SELECT {N_COLUMNS}, l.phase FROM nodes n LEFT JOIN liveness l "
                f"ON l.node_id = n.id {where}"
            ),
            args,
        )
        return [(node_from_row(row[:-1]), row[-1] or "") for row in cur.fetchall()]


def get_node(store: Store, node_id: str, events: int, deadline: float) -> ipb.Node:
    with store.tx() as cur:
        cur.execute(
            store.q(f"SELECT {NODE_COLUMNS}, inventory FROM nodes WHERE id = ?"), (node_id,)
        )
        row = cur.fetchone()
        if row is None:
            raise NotFound(node_id)
        cur.execute(store.q("SELECT last_seen, phase FROM liveness WHERE node_id = ?"), (node_id,))
        node = node_from_row(row[:-1], cur.fetchone(), deadline=deadline)
        if row[-1]:
            json_format.Parse(row[-1], node.inventory)
        labels, network = reports.reported(store, cur, node_id)
        node.labels.CopyFrom(labels)
        node.network.CopyFrom(network)
    node.events.extend(event_from_row(r) for r in store.node_events(node_id, events))
    return node


EVENT_FIELDS = ("sequence", "node_id", "time", "actor", "from_state", "to_state", "reason")


def event_from_row(row: Any) -> ipb.NodeEvent:
    """A row of store.node_events (seq, node_id, time, actor, from, to, reason)."""
    return message_from_row(ipb.NodeEvent, EVENT_FIELDS, row)


def list_nodes(
    store: Store,
    req: ipb.ListNodesRequest,
    deadline: float,
) -> ipb.ListNodesResponse:
    where, args = [], []
    for column, value in (
        ("n.state", req.state),
        ("n.pool", req.pool),
        ("n.gpu_model", req.gpu_model),
        ("n.cluster", req.cluster),
    ):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    page = min(req.page_size or 100, 1000)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    with store.tx() as cur:
        cur.execute(store.q(f"SELECT COUNT(*) FROM nodes n {clause}"), args)
        total = cur.fetchone()[0]
        after = req.page_token
        page_clause = (" AND " if where else " WHERE ") + "n.id > ?" if after else ""
        cur.execute(
            store.q(
                f"SELECT {N_COLUMNS}, l.last_seen, l.phase FROM nodes n LEFT JOIN "
                f"liveness l ON l.node_id = n.id {clause}{page_clause} "
                "ORDER BY n.id LIMIT ?"
            ),
            [*args, *([after] if after else []), page + 1],
        )
        rows = cur.fetchall()
    resp = ipb.ListNodesResponse(total=total)
    for row in rows[:page]:
        live = (row[-2], row[-1]) if row[-2] is not None else None
        resp.nodes.append(node_from_row(row[:-2], live, deadline=deadline))
    if len(rows) > page:
        resp.next_page_token = resp.nodes[-1].id
    return resp


def chosen_fields(fields: list[str]) -> list[str]:
    """The assignment fields an UpdateAssignment sets (none named: all of them)."""
    unknown = set(fields) - set(ASSIGNMENT_FIELDS)
    if unknown:
        raise ValueError(f"unknown assignment fields {sorted(unknown)}")
    return fields or list(ASSIGNMENT_FIELDS)


def update_assignment(
    store: Store,
    node_id: str,
    assignment: ipb.Assignment,
    fields: list[str],
    actor: str,
    fit: Fit | None = None,
) -> tuple[ipb.Node, list[str]]:
    """Set the chosen fields; a profile newly set is checked against the node's hardware
    (`fit`), and what does not fit is an event and returned for the log, not a refusal."""
    chosen = chosen_fields(fields)
    values = assignment_columns(assignment)
    with store.tx() as cur:
        node = _load(store, cur, node_id)
        if "cluster" in chosen and assignment.cluster:
            # the host name is the node's own choice: it must be fit to name a Kubernetes node
            bad = kubespray.node_name_problem(node.hostname)
            if bad:
                raise ValueError(f"node {node_id} cannot be assigned to a cluster: {bad}")
        sets = ", ".join(f"{f} = ?" for f in chosen)
        cur.execute(
            store.q(f"UPDATE nodes SET {sets}, updated_at = ? WHERE id = ?"),
            [*(values[f] for f in chosen), time.time(), node_id],
        )
        store.add_event(
            cur, node_id, actor, node.state, node.state, f"assignment updated: {', '.join(chosen)}"
        )
        warnings: list[str] = []
        if "profile" in chosen and assignment.profile:
            cur.execute(store.q("SELECT inventory FROM nodes WHERE id = ?"), (node_id,))
            stored = cur.fetchone()[0]
            inv = json_format.Parse(stored, pb.HardwareInventory()) if stored else None
            if inv is not None:
                warnings = _record_fit(
                    store, cur, node_id, node.state, assignment.profile, inv, fit
                )
        return _load(store, cur, node_id), warnings


def hold(store: Store, node_id: str, actor: str, reason: str) -> ipb.Node:
    with store.tx() as cur:
        lifecycle.transition(
            store, cur, node_id, S.MAINTENANCE, actor, reason or "held for maintenance"
        )
        return _load(store, cur, node_id)


def quarantine(store: Store, node_id: str, actor: str, reason: str) -> ipb.Node:
    """Quarantine a node (health policy or by hand); one already quarantined stays as it is."""
    with store.tx() as cur:
        lifecycle.transition(store, cur, node_id, S.QUARANTINED, actor, reason, unchanged_ok=True)
        return _load(store, cur, node_id)


def release(store: Store, node_id: str, actor: str, reason: str) -> ipb.Node:
    with store.tx() as cur:
        back = lifecycle.release_target(store, cur, node_id)
        lifecycle.transition(store, cur, node_id, back, actor, reason or "released", release=True)
        return _load(store, cur, node_id)


def retire(store: Store, node_id: str, actor: str, reason: str) -> ipb.Node:
    """Retire a node and revoke its certificates: a retired machine speaks no more."""
    with store.tx() as cur:
        lifecycle.transition(store, cur, node_id, S.RETIRED, actor, reason or "retired")
        certificates.revoke_node(store, cur, node_id, actor, "node retired")
        return _load(store, cur, node_id)


def delete(store: Store, node_id: str, actor: str) -> None:
    with store.tx() as cur:
        node = _load(store, cur, node_id)
        cur.execute(store.q("DELETE FROM nodes WHERE id = ?"), (node_id,))
        cur.execute(store.q("DELETE FROM liveness WHERE node_id = ?"), (node_id,))
        certificates.revoke_node(store, cur, node_id, actor, "node deleted")
        store.add_event(cur, node_id, actor, node.state, S.NODE_STATE_UNSPECIFIED, "deleted")


def record_refused(store: Store, node_id: str, reason: str) -> None:
    """Put a refused claim on an enrolled node's identity in that node's event log."""
    with store.tx() as cur:
        cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
        row = cur.fetchone()
        if row is not None:
            store.add_event(cur, node_id, "system:enrolment", row[0], row[0], reason)


def create_token(
    store: Store,
    req: ipb.CreateTokenRequest,
    actor: str,
) -> tuple[ipb.Token, str]:
    token_id, full, secret_hash = tokens.generate()
    now = time.time()
    ttl = req.ttl_seconds or 86400
    max_uses = req.max_uses or 1
    if req.reenrol_node and (max_uses != 1 or req.HasField("preset")):
        raise ValueError("a re-enrol token is single-use and carries no preset")
    with store.tx() as cur:
        if req.reenrol_node:
            _load(store, cur, req.reenrol_node)
        cur.execute(
            store.q(
                "INSERT INTO tokens (id, secret_hash, created_at, expires_at, "
                "max_uses, preset, description, created_by, reenrol_node) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                token_id,
                secret_hash,
                now,
                now + ttl,
                max_uses,
                json_format.MessageToJson(req.preset, indent=None),
                req.description[:200],
                actor,
                req.reenrol_node,
            ),
        )
        return _token(store, cur, token_id), full


def _token(store: Store, cur: Any, token_id: str) -> ipb.Token:
    cur.execute(
        store.q(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?"),
        (token_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(token_id)
    return token_from_row(row)


TOKEN_COLUMNS = (
    "id, created_at, expires_at, max_uses, uses, revoked, preset, description, created_by, "
    "reenrol_node"
)
TOKEN_FIELDS = tuple("" if c == "preset" else c for c in TOKEN_COLUMNS.replace(" ", "").split(","))


def token_from_row(row: Any) -> ipb.Token:
    tok = message_from_row(ipb.Token, TOKEN_FIELDS, row)
    tok.preset.CopyFrom(json_format.Parse(row[TOKEN_FIELDS.index("")], ipb.Assignment()))
    return tok


def list_tokens(store: Store) -> list[ipb.Token]:
    with store.tx() as cur:
        cur.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at")
        return [token_from_row(r) for r in cur.fetchall()]


def revoke_token(store: Store, token_id: str) -> ipb.Token:
    with store.tx() as cur:
        cur.execute(store.q("UPDATE tokens SET revoked = 1 WHERE id = ?"), (token_id,))
        return _token(store, cur, token_id)
