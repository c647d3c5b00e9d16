"""heartbeat.py's split of HeartbeatRequest into news and state: a repeat (a quiet beat, the
inventory's repeat path) is judged by it, so a field in neither list, or news taken for
state, would let a report be skipped."""

from __future__ import annotations

import pytest

from nodeagent.api import heartbeat
from nodeagent.api.v1 import inventory_pb2 as ipb

FIELDS = {f.name for f in ipb.HeartbeatRequest.DESCRIPTOR.fields}


def test_every_field_is_news_or_state_and_not_both() -> None:
    assert heartbeat.NEWS | heartbeat.STATE == FIELDS
    assert not heartbeat.NEWS & heartbeat.STATE


def set_one(name: str) -> ipb.HeartbeatRequest:
    """A request with field `name` alone set (to something not its default)."""
    req = ipb.HeartbeatRequest()
    field = ipb.HeartbeatRequest.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None:
        if field.is_repeated:
            getattr(req, name).add()
        else:
            getattr(req, name).SetInParent()
    elif field.is_repeated:
        getattr(req, name).append("x" if field.type == field.TYPE_STRING else 1)
    elif field.type == field.TYPE_BOOL:
        setattr(req, name, True)
    elif field.type == field.TYPE_STRING:
        setattr(req, name, "x")
    else:
        setattr(req, name, 1)
    return req


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_news_is_never_a_repeat_and_state_is(name: str) -> None:
    req = set_one(name)
    assert req.ListFields(), name
    if name in heartbeat.NEWS:
        assert heartbeat.carries_news(req)
        assert heartbeat.repeatable(req) is None
    else:
        assert not heartbeat.carries_news(req)
        assert heartbeat.repeatable(req) is req


def test_a_repeat_is_the_same_state_and_only_that() -> None:
    a = ipb.HeartbeatRequest(node_id="n", phase="READY", health=["GPU 3 lost"], rails_down=1)
    b = ipb.HeartbeatRequest()
    b.CopyFrom(a)
    assert b == heartbeat.repeatable(a)
    b.rails_down = 0
    assert b != heartbeat.repeatable(a)
