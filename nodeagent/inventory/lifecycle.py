"""The node lifecycle: the only place transitions are decided.

An illegal transition is an error, never a silent overwrite; every transition
is recorded by the store with time, actor, from, to and reason.
"""

from __future__ import annotations

from nodeagent.api.v1 import inventory_pb2 as ipb

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


def check(current: int, target: int) -> None:
    if target == S.MAINTENANCE:
        if current not in HOLDABLE:
            raise TransitionError(f"cannot hold a node that is {name(current)}")
        return
    if target == S.RETIRED:
        if current == S.RETIRED:
            raise TransitionError("node is already RETIRED")
        return
    if target not in ALLOWED.get(current, set()):
        raise TransitionError(f"illegal transition {name(current)} -> {name(target)}")


def from_agent_phase(current: int, phase: str) -> int | None:
    """The state an agent's reported phase leads to, or None to stay (held, retired, no-op)."""
    target = AGENT_PHASES.get(phase)
    if target is None or target == current or current in (S.MAINTENANCE, S.RETIRED):
        return None
    return target if target in ALLOWED.get(current, set()) else None
