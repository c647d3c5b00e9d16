"""Fleet grouping: every node's observations -> switch groups and each node's tiers.

A pure function for the inventory service. Leaf groups are the leaf sets of nodes that
see all their expected rails: identical sets are one group (the dual of Topograph's
"switches with identical child sets merge"), and a set that overlaps a better
supported group is no group at all (a miscabled node). Each node then joins the group
that a strict majority of its expected rails land in, or the only group its working
rails land in, so one broken or miscabled cable does not move it; a node whose rails
disagree keeps its previous (last-good) tiers.

Group ids are hashes of their member sets, the same values nodes compute on their own
(tiers.set_id), so re-runs, a growing fleet and input order do not change them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.topology import tiers


@dataclass
class _Node:
    obs: fpb.FabricObservation
    rail_leaves: list[str]  # one entry per active rail with a neighbour
    expected: int

    @property
    def leaf_set(self) -> frozenset[str]:
        return frozenset(self.rail_leaves)

    @property
    def complete(self) -> bool:
        return self.expected > 0 and len(self.rail_leaves) >= self.expected


@dataclass
class _Switches:
    """What the fleet says about each switch: its name and, for leaves, its spines.

    A leaf's spines are the fullest set any node reported for it. Every node on a leaf
    reads the same leaf's links, so views differ only when one was cut short, and
    reading each view only when it is larger keeps the 10,000-node case fast.
    """

    names: dict[str, str] = field(default_factory=dict)
    spines: dict[str, list[str]] = field(default_factory=dict)

    def scan(self, obs: fpb.FabricObservation) -> _Node:
        node = _Node(obs, [], obs.rails_expected or len(obs.rails))
        for rail in obs.rails:
            leaf = rail.leaf.id
            if not (rail.active and leaf):
                continue
            node.rail_leaves.append(leaf)
            if leaf not in self.names:
                self.names[leaf] = rail.leaf.name
            if len(rail.spines) > len(self.spines.get(leaf, ())):
                self.spines[leaf] = [s.id for s in rail.spines if s.id]
                for s in rail.spines:
                    self.names.setdefault(s.id, s.name)
        return node


def _claim(
    candidates: Counter[frozenset[str]], claimed: dict[str, str]
) -> dict[str, frozenset[str]]:
    """Accept candidate leaf sets, best supported first, that share no leaf with one accepted."""
    groups: dict[str, frozenset[str]] = {}
    for key, _ in sorted(candidates.items(), key=lambda kv: (-kv[1], sorted(kv[0]))):
        if any(leaf in claimed for leaf in key):
            continue
        gid = tiers.set_id("lg-", key)
        groups[gid] = key
        claimed.update(dict.fromkeys(key, gid))
    return groups


def _majority(node: _Node, claimed: dict[str, str]) -> str:
    votes = Counter(claimed[leaf] for leaf in node.rail_leaves if leaf in claimed)
    if not votes:
        return ""
    gid, count = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))
    return gid if 2 * count > max(node.expected, 1) else ""


def _sole_group(node: _Node, claimed: dict[str, str]) -> str:
    """The group every leaf the node sees belongs to: rails are missing, none disagree."""
    gids = {claimed.get(leaf, "") for leaf in node.leaf_set}
    return gids.pop() if len(gids) == 1 and "" not in gids else ""


def group_fleet(
    observations: Sequence[fpb.FabricObservation],
    previous: Mapping[str, fpb.FabricTiers] | None = None,
) -> fpb.FabricTopology:
    """Switch groups and every node's tiers; `previous` holds last run's tiers by node."""
    previous = previous or {}
    switches = _Switches()
    nodes = sorted((switches.scan(o) for o in observations), key=lambda n: n.obs.node)
    claimed: dict[str, str] = {}
    groups = _claim(Counter(n.leaf_set for n in nodes if n.complete and n.rail_leaves), claimed)
    member: dict[str, str] = {}
    orphans = []
    for node in nodes:
        gid = _majority(node, claimed) or _sole_group(node, claimed)
        if gid:
            member[node.obs.node] = gid
        elif node.rail_leaves and not _has_last_good(node, previous):
            orphans.append(node)
    # Nodes no complete node vouches for (a unit where every node has a fault) still
    # group among themselves, by identical leaf sets, on leaves nobody else claimed.
    groups |= _claim(Counter(n.leaf_set for n in orphans), claimed)
    for node in orphans:
        gid = _sole_group(node, claimed)
        if gid:
            member[node.obs.node] = gid
    return _assemble(nodes, groups, member, switches, previous)


def _has_last_good(node: _Node, previous: Mapping[str, fpb.FabricTiers]) -> bool:
    prev = previous.get(node.obs.node)
    return prev is not None and prev.tier_0 not in ("", tiers.PLACEHOLDER)


def _assemble(
    nodes: list[_Node],
    groups: dict[str, frozenset[str]],
    member: dict[str, str],
    switches: _Switches,
    previous: Mapping[str, fpb.FabricTiers],
) -> fpb.FabricTopology:
    names = switches.names
    spines_of = {
        gid: {s for leaf in leaves for s in switches.spines.get(leaf, ())}
        for gid, leaves in groups.items()
    }
    spine_id = {gid: tiers.set_id("sg-", s) for gid, s in spines_of.items() if s}
    topo = fpb.FabricTopology()
    nodes_of: dict[str, list[str]] = {gid: [] for gid in groups}
    for node in nodes:  # sorted by name
        out = topo.nodes[node.obs.node]
        _node_tiers(node, out, groups, member, spine_id, spines_of, previous)
        if out.source in ("fleet", "last-good") and out.tier_0 in nodes_of:
            nodes_of[out.tier_0].append(node.obs.node)
    children: dict[str, list[str]] = {}
    for gid in sorted(groups):
        if not nodes_of[gid]:
            continue
        leaves = sorted(groups[gid])
        known = [names.get(x, "") for x in leaves]
        topo.groups.add(id=gid, tier=0, switches=leaves, switch_names=known, nodes=nodes_of[gid])
        if gid in spine_id:
            children.setdefault(spine_id[gid], []).append(gid)
    for sg in sorted(children):
        spines = sorted(spines_of[children[sg][0]])
        known = [names.get(x, "") for x in spines]
        topo.groups.add(id=sg, tier=1, switches=spines, switch_names=known, children=children[sg])
    return topo


def _node_tiers(
    node: _Node,
    out: fpb.FabricTiers,
    groups: dict[str, frozenset[str]],
    member: dict[str, str],
    spine_id: dict[str, str],
    spines_of: dict[str, set[str]],
    previous: Mapping[str, fpb.FabricTiers],
) -> None:
    """Group member: the group's ids; else the last-good tiers; else the node's own view."""
    gid = member.get(node.obs.node)
    prev = previous.get(node.obs.node)
    if gid:
        tiers.health(node.obs, out)
        tiers.resolve(node.obs, out, gid, spine_id.get(gid, ""), "fleet")
        out.leaf_ids.extend(sorted(groups[gid]))
        out.spine_ids.extend(sorted(spines_of[gid]))
    elif prev is not None and prev.tier_0 not in ("", tiers.PLACEHOLDER):
        tiers.health(node.obs, out)
        tier1 = "" if prev.tier_1 == tiers.PLACEHOLDER else prev.tier_1
        tiers.resolve(node.obs, out, prev.tier_0, tier1, "last-good")
        out.leaf_ids.extend(prev.leaf_ids)
        out.spine_ids.extend(prev.spine_ids)
    else:
        out.CopyFrom(tiers.node_tiers(node.obs))
