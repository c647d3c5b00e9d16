"""Label test helpers: the label map of a modelled machine, computed as the CLI does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.host import HostRoot
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.derive import derive
from nodeagent.labels.features import read_features
from nodeagent.labels.inputs import Assignment, LabelInputs
from nodeagent.topology.config import FabricConfig
from nodeagent.topology.observe import observe
from nodeagent.topology.tiers import node_tiers
from tests.rootcopy import root_copy

__all__ = ["root_copy"]

LabelsOf = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def inputs_of(
    machine_root: Callable[..., Path], inventory_of: Callable[..., pb.HardwareInventory]
) -> Callable[..., LabelInputs]:
    cache: dict[str, LabelInputs] = {}

    def get(name: str) -> LabelInputs:
        if name not in cache:
            root = HostRoot(machine_root(name))
            inv = inventory_of(name)
            obs = observe(root, inv, FabricConfig())
            cache[name] = LabelInputs(inv, node_tiers(obs), obs, read_features(root))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def labels_of(inputs_of: Callable[..., LabelInputs]) -> LabelsOf:
    def get(
        name: str,
        config: LabelConfig | None = None,
        assignment: Assignment | None = None,
        previous: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        inp = inputs_of(name)
        if assignment is not None:
            inp = LabelInputs(inp.inventory, inp.tiers, inp.observation, inp.features, assignment)
        return derive(inp, config or LabelConfig(), previous)

    return get
