"""The node lifecycle: the only place transitions are decided and written.

An illegal transition is an error, never a silent overwrite. `transition` is the one
writer of a node's state: it checks, writes and records the event (time, actor, from,
to, reason) in the caller's transaction, so none of the three can happen alone.
"""

from __future__ import annotations

import time
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.store import NotFound, Store

S = ipb.NodeState
ALLOWED: dict[int, set[int]] = {
    S.ENROLLED: {S.DISCOVERED, S.FAILED, S.QUARANTINED},
    S.DISCOVERED: {S.TUNING, S.READY, S.QUARANTINED, S.FAILED, S.DISCOVERED},
    S.TUNING: {S.REBOOT_REQUIRED, S.READY, S.FAILED, S.QUARANTINED},
    S.REBOOT_REQUIRED: {S.TUNING, S.READY, S.FAILED},
    S.READY: {S.JOINING, S.TUNING, S.QUARANTINED, S.FAILED},
    S.JOINING: {S.JOINED, S.FAILED},
    S.JOINED: {S.QUARANTINED, S.FAILED},
    S.QUARANTINED: {S.DISCOVERED, S.FAILED},
    S.FAILED: {S.DISCOVERED, S.TUNING, S.READY},
    S.MAINTENANCE: set(),  # left only by release (back to where it was held from)
    S.RETIRED: set(),
}
# An admin may hold any live node and retire any node that is not already retired.
HOLDABLE = set(ALLOWED) - {S.MAINTENANCE, S.RETIRED}
# States an admin's release leaves (to release_target's state, and only there).
RELEASABLE = (S.MAINTENANCE, S.QUARANTINED)
# Phases an agent may report, and the state each one asks for.
AGENT_PHASES = {
    "DISCOVERED": S.DISCOVERED,
    "TUNING": S.TUNING,
    "REBOOT_REQUIRED": S.REBOOT_REQUIRED,
    "READY": S.READY,
    "JOINED": S.JOINED,
    "FAILED": S.FAILED,
}


class TransitionError(ValueError):
    pass


def name(state: int) -> str:
    return ipb.NodeState.Name(state)


def check(current: int, target: int, release_to: int | None = None) -> None:
    """Refuse an illegal move.

    A held node leaves MAINTENANCE only when retired or released by an admin, and a
    release (`release_to`, the state it was held from) goes back there and nowhere else.
    """
    if target == S.MAINTENANCE:
        if current not in HOLDABLE:
            raise TransitionError(f"cannot hold a node that is {name(current)}")
        return
    if target == S.RETIRED:
        if current == S.RETIRED:
            raise TransitionError("node is already RETIRED")
        return
    if current in RELEASABLE and release_to is not None:
        if target != release_to:
            raise TransitionError(
                f"a held node goes back to {name(release_to)}, not {name(target)}"
            )
        return
    if target not in ALLOWED.get(current, set()):
        raise TransitionError(f"illegal transition {name(current)} -> {name(target)}")


def from_agent_phase(current: int, phase: str) -> int | None:
    """The state an agent's reported phase leads to, or None to stay (held, retired, no-op).

    A quarantine is the cluster's verdict on the node (health policy, acceptance, an
    operator): the agent's phase cannot end it, or a node still saying DISCOVERED would
    leave it at its next heartbeat; a release does (lifecycle.release_target)."""
    target = AGENT_PHASES.get(phase)
    if target is None or target == current or current in (S.MAINTENANCE, S.RETIRED):
        return None
    if current == S.QUARANTINED and target != S.FAILED:
        return None
    return target if target in ALLOWED.get(current, set()) else None


def transition(
    store: Store,
    cur: Any,
    node_id: str,
    target: int,
    actor: str,
    reason: str,
    *,
    unchanged_ok: bool = False,
    release: bool = False,
) -> int:
    """Move a node to `target` inside the caller's transaction; returns the state it left.

    Raises NotFound or TransitionError with nothing written. With `unchanged_ok`, a
    node already in `target` is left as it is (no write, no event). Holding records
    the state to release to; every other move clears it. `release` is an admin's
    release of a held node (to the state it was held from, see release_target).
    """
    cur.execute(store.q("SELECT state, held_from FROM nodes WHERE id = ?"), (node_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(node_id)
    current, held_from = row
    if unchanged_ok and current == target:
        return int(current)
    check(current, target, _back(current, held_from) if release else None)
    cur.execute(
        store.q(
            "UPDATE nodes SET state = ?, held_from = ?, state_reason = ?, updated_at = ? "
            "WHERE id = ?"
        ),
        (target, current if target in RELEASABLE else 0, reason[:1000], time.time(), node_id),
    )
    store.add_event(cur, node_id, actor, current, target, reason)
    return int(current)


def release_target(store: Store, cur: Any, node_id: str) -> int:
    """The state a held node goes back to (the one it was held from); a quarantined node
    goes back to JOINED when it was quarantined in its cluster (it is still there, only
    cordoned), and otherwise to DISCOVERED, to be checked again by its agent."""
    cur.execute(store.q("SELECT state, held_from FROM nodes WHERE id = ?"), (node_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(node_id)
    if row[0] not in RELEASABLE:
        raise TransitionError(f"node is {name(row[0])}, not held or quarantined")
    return _back(row[0], row[1])


def _back(current: int, held_from: int) -> int:
    if current == S.QUARANTINED:
        return S.JOINED if held_from == S.JOINED else S.DISCOVERED
    return int(held_from or S.DISCOVERED)
