"""The label map of a node: every enabled family, sanitised, checked, owner rules applied."""

from __future__ import annotations

from collections.abc import Mapping

from nodeagent import label_syntax as syntax
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.labels import cloud, gfd, nfd, own, ownership, platform
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.inputs import LabelInputs
from nodeagent.topology.tiers import PLACEHOLDER


def derive(
    inp: LabelInputs, config: LabelConfig, previous: Mapping[str, str] | None = None
) -> dict[str, str]:
    """{key: value}, sorted by key. `previous` is the node's current label map: the OCI
    family keeps a real value while the metadata is unreachable."""
    families = set(config.families)
    out: dict[str, str] = {}
    if "nfd" in families and inp.features is not None:
        out |= nfd.labels(inp.features)
    if "gfd" in families:
        out |= gfd.labels(inp.inventory)
    if "oci" in families:
        out |= cloud.labels(inp.observation.cloud, previous or {})
    if "platform" in families:
        out |= platform.labels(inp)
    if "own" in families:
        out |= own.labels(inp, config.domain)
    out = {key: syntax.sanitize_value(value) for key, value in out.items()}
    out, _ = ownership.drop_owned(out)
    bad = syntax.problems(out)
    if bad:  # keys are built from checked parts and values sanitised: this is a bug
        raise ValueError(f"internal error, invalid labels: {'; '.join(bad)}")
    return dict(sorted(out.items()))


def previous_tiers(labels: Mapping[str, str], domain: str) -> fpb.FabricTiers | None:
    """The tiers a previous label map carried, for the last-good rule (no leaf set known)."""
    tier0 = labels.get(f"topology.{domain}/tier-0", "")
    if not tier0 or tier0 == PLACEHOLDER:
        return None
    return fpb.FabricTiers(
        fabric=labels.get(f"topology.{domain}/fabric", PLACEHOLDER),
        tier_2=labels.get(f"topology.{domain}/tier-2", PLACEHOLDER),
        tier_1=labels.get(f"topology.{domain}/tier-1", PLACEHOLDER),
        tier_0=tier0,
        source="labels",
    )
