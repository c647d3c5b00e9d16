"""A message as JSON, exactly as `json_format.MessageToJson(msg, indent=None)` writes it,
in a fraction of the time.

json_format works out each field's kind again for every value it converts. The inventory
service turns every node's HardwareInventory (about 2,000 values on a DGX) into JSON when
the node enrols or re-sends it, and json_format's 3-4 ms a node was the largest single
cost of an enrolment storm (issue 20). Here each field's conversion is planned once per
field and reused. What the plan does not cover (well-known types, maps, bytes, 32-bit
floats, infinities and NaN, enum numbers with no name) is left to json_format, so the
output is always json_format's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

FD = FieldDescriptor
_INT64 = (FD.CPPTYPE_INT64, FD.CPPTYPE_UINT64)
_Plan = tuple[str, bool, Callable[[Any], Any] | None]  # json name, repeated, convert
_plans: dict[FieldDescriptor, _Plan] = {}


class _Unplanned(Exception):
    """A value this module leaves to json_format."""


def to_json(message: Message) -> str:
    """MessageToJson(message, indent=None), the same text."""
    try:
        return json.dumps(_object(message))
    except _Unplanned:
        return json_format.MessageToJson(message, indent=None)


def _object(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        plan = _plans.get(field)
        if plan is None:
            plan = _plans[field] = _plan(field)
        name, repeated, convert = plan
        if convert is None:
            out[name] = list(value) if repeated else value
        elif repeated:
            out[name] = [convert(v) for v in value]
        else:
            out[name] = convert(value)
    return out


def _plan(field: FieldDescriptor) -> _Plan:
    if field.is_extension:
        raise _Unplanned(field.full_name)
    return field.json_name, field.is_repeated, _converter(field)


def _converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    cpp = field.cpp_type
    if cpp == FD.CPPTYPE_MESSAGE:
        kind = field.message_type
        if kind is None or kind.GetOptions().map_entry:
            raise _Unplanned(field.full_name)
        if kind.full_name.startswith("google.protobuf."):  # well-known types
            raise _Unplanned(field.full_name)
        return _object
    if cpp == FD.CPPTYPE_ENUM:
        enum = field.enum_type
        if enum is None or any(v.GetOptions().ListFields() for v in enum.values):
            raise _Unplanned(field.full_name)  # json_name options and the like
        names = {v.number: v.name for v in enum.values}

        def enum_name(value: int) -> str:
            name = names.get(value)
            if name is None:
                raise _Unplanned(field.full_name)
            return name

        return enum_name
    if cpp in _INT64:
        return str
    if cpp == FD.CPPTYPE_DOUBLE:
        return _finite
    if cpp == FD.CPPTYPE_FLOAT or field.type == FD.TYPE_BYTES:
        raise _Unplanned(field.full_name)
    return None  # strings, bools, 32-bit integers: as they are


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _Unplanned("Infinity or NaN")
    return value
