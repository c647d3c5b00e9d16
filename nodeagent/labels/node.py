"""A node's label map from everything it is made of: the one computation behind the
daemon's feature file, `nodeagent labels` and what the node reports to the inventory.

Two callers computing the map each their own way would write two different files for
one node; both come here, with what the inventory decided for the node (pool, profile,
label overrides, the fleet's tiers) passed in as `Decided`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.derive import families, previous_tiers, with_overrides
from nodeagent.labels.features import NodeFeatures
from nodeagent.labels.inputs import Assignment, LabelInputs
from nodeagent.topology.tiers import PLACEHOLDER, node_tiers


@dataclass(frozen=True)
class Decided:
    """What the inventory (or the node's configuration) decided for the node."""

    pool: str = ""
    profile: str = ""
    tuning: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)
    fleet_tiers: fpb.FabricTiers | None = None


@dataclass(frozen=True)
class NodeLabels:
    by_family: dict[str, dict[str, str]]
    labels: dict[str, str]  # every family merged, overrides over them, sorted
    tiers: fpb.FabricTiers


def tiers_of(
    obs: fpb.FabricObservation,
    previous: Mapping[str, str],
    domain: str,
    fleet: fpb.FabricTiers | None,
) -> fpb.FabricTiers:
    """The node's own tiers (rail health always from its own observation), with the
    fleet's grouping of the tier names when the inventory has one: the fleet sees the
    other nodes, so its tier-1 and tier-2 are the ones every node of a group shares."""
    tiers = node_tiers(obs, previous_tiers(previous, domain))
    if fleet is not None and fleet.tier_0 and fleet.tier_0 != PLACEHOLDER:
        tiers.fabric, tiers.tier_2 = fleet.fabric, fleet.tier_2
        tiers.tier_1, tiers.tier_0 = fleet.tier_1, fleet.tier_0
        tiers.source = "fleet"
    return tiers


def compute(
    inv: pb.HardwareInventory,
    obs: fpb.FabricObservation,
    features: NodeFeatures | None,
    decided: Decided,
    config: LabelConfig,
    previous: Mapping[str, str],
) -> NodeLabels:
    tiers = tiers_of(obs, previous, config.domain, decided.fleet_tiers)
    assignment = Assignment(
        decided.pool or config.pool, decided.profile or config.profile, decided.tuning
    )
    by_family = families(LabelInputs(inv, tiers, obs, features, assignment), config, previous)
    merged: dict[str, str] = {}
    for labels in by_family.values():
        merged |= labels
    return NodeLabels(by_family, with_overrides(merged, decided.overrides), tiers)
