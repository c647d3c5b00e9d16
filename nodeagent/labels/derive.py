"""The label map of a node: every enabled family, sanitised, checked, owner rules applied."""

from __future__ import annotations

from collections.abc import Mapping

from nodeagent import label_syntax as syntax
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.labels import cloud, gfd, nfd, own, ownership, platform
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.inputs import LabelInputs
from nodeagent.topology.tiers import PLACEHOLDER


def families(
    inp: LabelInputs, config: LabelConfig, previous: Mapping[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """{family: its labels} of every enabled family, sanitised, operator-owned keys out.
    The daemon reports them apart: a cluster puts only some families in Kubespray's
    node_labels. `previous` is the node's current label map: the OCI family keeps a real
    value while the metadata is unreachable."""
    enabled = set(config.families)
    out: dict[str, dict[str, str]] = {}
    if "nfd" in enabled and inp.features is not None:
        out["nfd"] = nfd.labels(inp.features)
    if "gfd" in enabled:
        out["gfd"] = gfd.labels(inp.inventory)
    if "oci" in enabled:
        out["oci"] = cloud.labels(inp.observation.cloud, previous or {})
    if "platform" in enabled:
        out["platform"] = platform.labels(inp)
    if "own" in enabled:
        out["own"] = own.labels(inp, config.domain)
    for family, labels in out.items():
        clean = {key: syntax.sanitize_value(value) for key, value in labels.items()}
        clean, _ = ownership.drop_owned(clean)
        bad = syntax.problems(clean)
        if bad:  # keys are built from checked parts and values sanitised: this is a bug
            raise ValueError(f"internal error, invalid labels: {'; '.join(bad)}")
        out[family] = clean
    return out


def derive(
    inp: LabelInputs, config: LabelConfig, previous: Mapping[str, str] | None = None
) -> dict[str, str]:
    """{key: value} of every enabled family, sorted by key (later families win a key)."""
    out: dict[str, str] = {}
    for labels in families(inp, config, previous).values():
        out |= labels
    return dict(sorted(out.items()))


def with_overrides(labels: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The inventory's label overrides over the derived map. The inventory refuses an
    invalid override when an admin sets it; one that slips through (an older inventory)
    is left out here rather than written where NFD would drop the whole file."""
    out = dict(labels)
    for key, value in overrides.items():
        if not syntax.problems({key: value}) and not ownership.owned_by_gpu_operator(key):
            out[key] = value
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
