"""What labels are derived from: the inventory, the fabric, raw features, the assignment."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.labels.features import NodeFeatures


@dataclass(frozen=True)
class Assignment:
    """What the inventory (or an admin) has decided for the node."""

    pool: str = ""
    profile: str = ""  # golden profile name
    tuning: str = ""  # tuning state: pending | applied | drift | failed ...


@dataclass(frozen=True)
class LabelInputs:
    inventory: pb.HardwareInventory
    tiers: fpb.FabricTiers = field(default_factory=fpb.FabricTiers)
    observation: fpb.FabricObservation = field(default_factory=fpb.FabricObservation)
    features: NodeFeatures | None = None  # None: NFD keys that need them are left out
    assignment: Assignment = field(default_factory=Assignment)
