"""Node-local, coordination-free tier ids, and rail health.

tier-0 is a short hash of the sorted set of leaf switch ids across the ACTIVE compute
rails: every node of a rail-optimised scalable unit is cabled to the same leaves, so
they compute the same value without talking to each other (the node-local equivalent
of Topograph merging switches with identical child sets). tier-1 is the same over
the spines those leaves uplink to, when the fabric shows them (InfiniBand).

Precedence per tier: static configuration, then cloud metadata (OCI: local block =
tier-0, network block = tier-1, HPC island = tier-2), then observation, then a
placeholder, because Kueue ignores a node that lacks any level label.

One broken cable must not move a node to another group: when the observation is
incomplete (a rail down, or an active rail without a neighbour) and the previous tiers
had a real value whose leaf set contains what is seen now, the previous value is kept
(`last-good`) and the node is reported degraded instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nodeagent.api.v1 import fabric_pb2 as fpb

PLACEHOLDER = "unknown"
OCID_SUFFIX = 11  # oci-hpc-oke's labeler keeps the last 11 characters of an OCID
HASH_CHARS = 12
_KEEPABLE = {"observed", "fleet", "last-good", "labels"}


def set_id(prefix: str, ids: Iterable[str]) -> str:
    """`prefix` + a short hash of the sorted id set: the same set gives the same id anywhere."""
    joined = "\n".join(sorted(set(ids)))
    return prefix + hashlib.sha256(joined.encode()).hexdigest()[:HASH_CHARS]


def ocid_suffix(ocid: str) -> str:
    """The last 11 characters, trimmed to alphanumerics at the ends (OCIDs are [a-z0-9.])."""
    return ocid[-OCID_SUFFIX:].strip("-_.") if ocid else ""


def observed_sets(obs: fpb.FabricObservation) -> tuple[list[str], list[str]]:
    """(leaf ids, spine ids) across the active compute rails, each sorted and unique."""
    leaves: set[str] = set()
    spines: set[str] = set()
    for rail in obs.rails:
        if rail.active and rail.leaf.id:
            leaves.add(rail.leaf.id)
            spines.update(s.id for s in rail.spines if s.id)
    return sorted(leaves), sorted(spines)


def health(obs: fpb.FabricObservation, out: fpb.FabricTiers) -> None:
    """Rail counts, the slowest active rate and, when below expectation, why."""
    active = [r for r in obs.rails if r.active]
    expected = obs.rails_expected or len(obs.rails)
    out.rails_expected, out.rails_active = expected, len(active)
    out.rate_gbps = min((r.rate_gbps for r in active), default=0.0)
    reasons = []
    if len(active) < expected:
        down = [r.name for r in obs.rails if not r.active]
        missing = f" (down: {', '.join(down)})" if down else ""
        reasons.append(f"{len(active)} of {expected} compute rails active{missing}")
    for r in active:
        if obs.rate_expected_gbps and r.rate_gbps < obs.rate_expected_gbps:
            reasons.append(
                f"rail {r.name} at {r.rate_gbps:g} Gb/s, expected {obs.rate_expected_gbps:g}"
            )
    del out.degraded_reasons[:]
    out.degraded_reasons.extend(reasons)
    out.degraded = bool(reasons)


def incomplete(obs: fpb.FabricObservation) -> bool:
    """A rail is down or an active rail has no neighbour: the leaf set may be partial."""
    active = [r for r in obs.rails if r.active]
    expected = obs.rails_expected or len(obs.rails)
    return len(active) < expected or any(not r.leaf.id for r in active)


def node_tiers(
    obs: fpb.FabricObservation, previous: fpb.FabricTiers | None = None
) -> fpb.FabricTiers:
    """The tiers of one node from its own observation (and its previous tiers)."""
    out = fpb.FabricTiers()
    health(obs, out)
    leaves, spines = observed_sets(obs)
    tier0 = set_id("lg-", leaves) if leaves else ""
    tier1 = set_id("sg-", spines) if spines else ""
    source = "observed" if tier0 else "none"
    if previous is not None and keeps_last_good(obs, leaves, previous):
        tier0, source = previous.tier_0, "last-good"
        leaves = list(previous.leaf_ids) or leaves
        if previous.tier_1 not in ("", PLACEHOLDER):
            tier1, spines = previous.tier_1, list(previous.spine_ids) or spines
    resolve(obs, out, tier0, tier1, source)
    if source == "last-good" and previous is not None:
        # Blocks and fabric come only from configuration or the cloud: while the
        # metadata is unreachable the previous real value stays, as for OCI's labels.
        if out.tier_2 == PLACEHOLDER and previous.tier_2:
            out.tier_2 = previous.tier_2
        if out.fabric == PLACEHOLDER and previous.fabric:
            out.fabric = previous.fabric
    out.leaf_ids.extend(leaves)
    out.spine_ids.extend(spines)
    return out


def keeps_last_good(obs: fpb.FabricObservation, leaves: list[str], prev: fpb.FabricTiers) -> bool:
    """Keep the previous observed tier-0 while the observation is incomplete and consistent."""
    if not incomplete(obs) or prev.source not in _KEEPABLE:
        return False
    if not prev.tier_0 or prev.tier_0 == PLACEHOLDER:
        return False
    return not prev.leaf_ids or set(leaves) <= set(prev.leaf_ids)


def resolve(
    obs: fpb.FabricObservation, out: fpb.FabricTiers, tier0: str, tier1: str, source: str
) -> None:
    """Fill the tier values: static, then cloud, then the observed values, then placeholder."""
    static, cloud = obs.static_placement, obs.cloud
    cloud_ok = cloud.provider != "" and cloud.available
    out.fabric = static.fabric or PLACEHOLDER
    out.tier_2 = static.block or (ocid_suffix(cloud.hpc_island) if cloud_ok else "") or PLACEHOLDER
    out.tier_1 = (ocid_suffix(cloud.network_block) if cloud_ok else "") or tier1 or PLACEHOLDER
    cloud0 = ocid_suffix(cloud.local_block) if cloud_ok else ""
    if static.rack:
        out.tier_0, out.source = static.rack, "static"
    elif cloud0:
        out.tier_0, out.source = cloud0, "cloud"
    elif tier0:
        out.tier_0, out.source = tier0, source
    else:
        out.tier_0, out.source = PLACEHOLDER, "none"
