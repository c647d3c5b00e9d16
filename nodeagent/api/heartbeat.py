"""Which heartbeat fields report news and which restate the node's state.

The agent sends some fields once, when they change, and counts them delivered only when
the beat is acknowledged (the inventory, label map, addresses, hook results, acceptance
report, XIDs since the last acknowledged beat...): news. The others say again, every beat,
how the node is (its phase, drift count, rails): state. A beat of state alone that
repeats the last one changes nothing but the node's liveness and its health streak, so on
a stream the agent need not wait for its acknowledgement (SessionRequest.quiet) and the
inventory need not parse its way through it again (service.py's repeat path).

Both lists name every field of HeartbeatRequest: tests/test_heartbeat_fields.py fails
when a field is added to the message and to neither, since a news field taken for state
would be skipped by a repeat.
"""

from __future__ import annotations

from nodeagent.api.v1 import inventory_pb2 as ipb

NEWS = frozenset(
    {
        "inventory",
        "blocking",
        "blocking_set",
        "labels",
        "network",
        "hook_results",
        "hook_phases",
        "hook_phases_set",
        "xids",
        "acceptance",
        "acceptance_request_id",
    }
)
STATE = frozenset(
    {
        "node_id",
        "phase",
        "drift_count",
        "health",
        "inventory_hash",
        "fleet_tiers_hash",
        "row_remap_failure",
        "rails_down",
        "rails_degraded",
        "devices_ok",
        "devices_set",
    }
)


def carries_news(req: ipb.HeartbeatRequest) -> bool:
    """Whether any news field is set (ListFields lists only the fields that are)."""
    return any(field.name in NEWS for field, _ in req.ListFields())


def repeatable(req: ipb.HeartbeatRequest) -> ipb.HeartbeatRequest | None:
    """What a later beat may repeat: `req`, unless it carries news (never a repeat, nor
    something to repeat). Equal messages are a repeat: the comparison is upb's, in C."""
    return None if carries_news(req) else req
