"""The health policy: what a heartbeat says about a node, as a verdict (pure functions).

Inputs are the node's state and state reason, the heartbeat's signals, the mismatches of
its hardware against the assigned profile's expected_hardware and the policy of
inventory.toml; the output says whether to quarantine (with the reason) or release. A
quarantine's reason starts with its kind (`hardware:`, `xid:`, `rails:`, `manual:`), so
the policy knows later which kinds may be released automatically and the taint's value
says what happened.

Hysteresis, so that a heartbeat flapping every interval cannot cordon and uncordon a node
each time: rails must be bad for `quarantine_after` heartbeats in a row before a
quarantine, and any kind must be clear for `release_after` in a row before an automatic
release; one bad heartbeat starts the count again. Hardware mismatches and fatal XIDs
quarantine at once: neither comes and goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nodeagent.api.v1 import inventory_pb2 as ipb

S = ipb.NodeState
# XID classes that mean the GPU must not take work until someone looks (NVIDIA's XID
# catalogue): double-bit ECC, row-remap events, NVLink, fallen off the bus, contained and
# uncontained ECC, GSP errors.
FATAL_XIDS = (48, 63, 64, 74, 79, 94, 95, 119, 120)
XID_NAMES = {
    48: "double-bit ECC error",
    63: "row remapping event",
    64: "row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}
KINDS = ("hardware", "xid", "rails", "manual")
# States a health verdict may quarantine from (the lifecycle allows it from these).
QUARANTINABLE = (S.DISCOVERED, S.TUNING, S.READY, S.JOINED)
QUARANTINED = S.QUARANTINED  # read once: each S.X is a Python-level lookup in protobuf


@dataclass(frozen=True)
class Policy:
    fatal_xids: tuple[int, ...] = FATAL_XIDS
    rails_limit: int = 0  # rails down or degraded tolerated before a quarantine
    quarantine_after: int = 3
    release_after: int = 10
    auto_release: tuple[str, ...] = ("rails",)
    hardware_mismatch: bool = True


@dataclass
class Signals:
    xids: list[tuple[str, int, int]] = field(default_factory=list)  # (gpu, code, count)
    row_remap_failure: bool = False
    rails_down: int = 0
    rails_degraded: int = 0


@dataclass
class Streak:
    bad: int = 0  # heartbeats in a row with a rail problem
    good: int = 0  # heartbeats in a row with no problem at all


@dataclass(frozen=True)
class Verdict:
    quarantine: str = ""  # the reason, "kind: text"
    release: str = ""  # why the quarantine ends


def signals(req: ipb.HeartbeatRequest) -> Signals:
    return Signals(
        [(x.gpu, x.code, x.count) for x in req.xids],
        req.row_remap_failure,
        req.rails_down,
        req.rails_degraded,
    )


def kind_of(reason: str) -> str:
    head = reason.split(":", 1)[0].strip()
    return head if head in KINDS else ""


def slug(reason: str) -> str:
    """The quarantine taint's value: a label value (63 characters of [a-z0-9-], starting
    and ending alphanumeric) made from the reason."""
    text = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")
    return text[:63].rstrip("-") or "quarantined"


def at_rest(state: int, req: ipb.HeartbeatRequest, mismatches: list[str], policy: Policy) -> bool:
    """True when `evaluate` can only find nothing and count one more clean heartbeat: no
    XID or remap failure, rails within the limit, no mismatch it counts, and a node that is
    not quarantined (only a quarantined node's clean count can move it). The repeat path
    takes this shortcut (health_watch.py): most beats of a healthy fleet are such."""
    return (
        state != QUARANTINED
        and not req.xids
        and not req.row_remap_failure
        and req.rails_down + req.rails_degraded <= policy.rails_limit
        and not (mismatches and policy.hardware_mismatch)
    )


def evaluate(
    state: int,
    reason: str,
    sig: Signals,
    mismatches: list[str],
    policy: Policy,
    streak: Streak,
) -> tuple[Verdict, Streak]:
    """The verdict on one heartbeat and the streak after it."""
    fatal = [
        f"XID {code} ({XID_NAMES.get(code, 'fatal')}) on GPU {gpu}"
        for gpu, code, count in sig.xids
        if code in policy.fatal_xids and count > 0
    ]
    if sig.row_remap_failure:
        fatal.append("row remapping failed")
    mismatch = mismatches if policy.hardware_mismatch else []
    rails = sig.rails_down + sig.rails_degraded
    rails_bad = rails > policy.rails_limit
    clean = not fatal and not mismatch and not rails_bad
    after = Streak(
        bad=streak.bad + 1 if rails_bad else 0,
        good=streak.good + 1 if clean else 0,
    )
    if state in QUARANTINABLE:
        if mismatch:
            return Verdict(quarantine="hardware: " + "; ".join(mismatch)), after
        if fatal:
            return Verdict(quarantine="xid: " + "; ".join(fatal)), after
        if rails_bad and after.bad >= policy.quarantine_after:
            what = f"{sig.rails_down} rail(s) down, {sig.rails_degraded} degraded"
            return Verdict(
                quarantine=f"rails: {what} (more than {policy.rails_limit}) for "
                f"{after.bad} heartbeats"
            ), after
    if (
        state == QUARANTINED
        and kind_of(reason) in policy.auto_release
        and after.good >= policy.release_after
    ):
        return Verdict(release=f"clear for {after.good} heartbeats: {reason}"), after
    return Verdict(), after
