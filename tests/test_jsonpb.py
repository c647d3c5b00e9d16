"""nodeagent.api.jsonpb writes the very text json_format.MessageToJson writes: the inventory
stores it, and every reader parses it with json_format, so a difference in one value would
be a node's record changed by the way it was written."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from google.protobuf import json_format

from nodeagent.api import jsonpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.machines import MACHINES, VARIANTS
from testbed.variants import variant


def same(message: object) -> None:
    assert jsonpb.to_json(message) == json_format.MessageToJson(message, indent=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*MACHINES, *VARIANTS])
@pytest.mark.parametrize("driver", [True, False])
def test_every_machine_inventory_is_written_as_json_format_writes_it(
    name: str, driver: bool, inventory_of: Callable[..., pb.HardwareInventory]
) -> None:
    inv = inventory_of(name, driver=driver)
    same(inv)
    same(variant(inv, 7))  # other serials, MACs, hostname


def test_values_at_the_edges_of_each_kind() -> None:
    inv = pb.HardwareInventory()
    inv.system.hostname = 'nöde-ü\u2603"\\\n'  # escaped as json.dumps escapes them
    gpu = inv.gpus.add()
    gpu.memory_bytes = 2**64 - 1  # uint64: a string
    gpu.persistence_mode = False  # optional, set to the default: written
    gpu.temperature_celsius = 0.0  # optional double, set: written
    gpu.pcie.current_speed_gts = 1e-300
    gpu.pcie.max_speed_gts = 1.5e300
    same(inv)
    empty = pb.HardwareInventory()
    assert jsonpb.to_json(empty) == "{}"
    same(empty)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_infinities_and_nan_are_left_to_json_format(value: float) -> None:
    inv = pb.HardwareInventory()
    inv.gpus.add().pcie.current_speed_gts = value
    same(inv)
    assert jsonpb.to_json(inv) != "{}"


def test_well_known_types_and_enums_are_written_as_json_format_writes_them() -> None:
    node = ipb.Node(id="n1", state=ipb.NodeState.JOINED, gpu_count=8)  # an enum
    node.created_at.FromNanoseconds(1_700_000_000_123_456_789)  # a Timestamp: json_format's
    node.assignment.labels["a/b"] = "c"  # a map
    same(node)
    unnamed = ipb.Node(state=999)  # an open enum's number with no name: json_format's
    same(unnamed)
