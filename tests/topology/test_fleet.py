"""Fleet grouping over a multi-leaf fleet, and the Kueue and Slurm exports of it."""

from __future__ import annotations

import random

import pytest

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.topology import tiers
from nodeagent.topology.export import kueue_topology, slurm_topology
from nodeagent.topology.fleet import group_fleet
from tests.topology.fleetgen import fleet, leaf, observation


def su_leaves(su: int) -> list[str]:
    return [leaf(su, r) for r in range(8)]


def lg(su: int) -> str:
    return tiers.set_id("lg-", su_leaves(su))


def sg(pod: int) -> str:
    return tiers.set_id("sg-", [f"pod{pod}-s{k}" for k in range(4)])


def test_scalable_units_become_leaf_groups_under_spine_groups() -> None:
    topo = group_fleet(fleet(sus=3, nodes=4, pods=2))
    tier0 = [g for g in topo.groups if g.tier == 0]
    tier1 = [g for g in topo.groups if g.tier == 1]
    assert [g.id for g in tier0] == sorted([lg(0), lg(1), lg(2)])
    su0 = next(g for g in tier0 if g.id == lg(0))
    assert list(su0.switches) == su_leaves(0)
    assert list(su0.switch_names) == [f"leaf {x}" for x in su_leaves(0)]
    assert list(su0.nodes) == [f"su0-n{i:03d}" for i in range(4)]
    assert {g.id: sorted(g.children) for g in tier1} == {
        sg(0): sorted([lg(0), lg(2)]),
        sg(1): [lg(1)],
    }
    n = topo.nodes["su2-n003"]
    assert (n.tier_0, n.tier_1, n.tier_2, n.fabric, n.source) == (
        lg(2),
        sg(0),
        "unknown",
        "unknown",
        "fleet",
    )
    # The fleet agrees with what each healthy node computes on its own.
    for obs in fleet(sus=3, nodes=4, pods=2):
        local = tiers.node_tiers(obs)
        assert (local.tier_0, local.tier_1) == (
            topo.nodes[obs.node].tier_0,
            topo.nodes[obs.node].tier_1,
        )


def test_one_broken_cable_does_not_move_a_node() -> None:
    nodes = fleet(sus=2, nodes=4)
    nodes[1] = observation(
        "su0-n001", [*su_leaves(0)[:5], None, *su_leaves(0)[6:]], [f"pod0-s{k}" for k in range(4)]
    )
    topo = group_fleet(nodes)
    t = topo.nodes["su0-n001"]
    assert (t.tier_0, t.source, t.degraded, t.rails_active) == (lg(0), "fleet", True, 7)
    assert t.degraded_reasons == ["7 of 8 compute rails active (down: mlx5_5/1)"]
    assert "su0-n001" in next(g for g in topo.groups if g.id == lg(0)).nodes


def test_a_miscabled_rail_neither_moves_the_node_nor_makes_a_group() -> None:
    nodes = fleet(sus=2, nodes=4)
    wrong = su_leaves(1)
    wrong[5] = leaf(0, 5)  # su1-n002's rail 5 is plugged into SU0's rail-5 leaf
    nodes[6] = observation("su1-n002", wrong, [f"pod0-s{k}" for k in range(4)])
    topo = group_fleet(nodes)
    assert topo.nodes["su1-n002"].tier_0 == lg(1)
    assert sorted(g.id for g in topo.groups if g.tier == 0) == sorted([lg(0), lg(1)])


def test_half_the_rails_down_still_places_a_node_its_rails_agree_on() -> None:
    nodes = fleet(sus=2, nodes=4)
    nodes[2] = observation("su0-n002", [*su_leaves(0)[:4], None, None, None, None])
    t = group_fleet(nodes).nodes["su0-n002"]
    assert (t.tier_0, t.source, t.degraded, t.rails_active) == (lg(0), "fleet", True, 4)


def test_without_a_majority_the_last_good_value_stays() -> None:
    nodes = fleet(sus=2, nodes=4)
    first = group_fleet(nodes)
    split = [*su_leaves(0)[:4], *su_leaves(1)[4:]]  # half its rails on each unit
    nodes[2] = observation("su0-n002", split)
    without = group_fleet(nodes)
    assert without.nodes["su0-n002"].tier_0 == tiers.set_id("lg-", split)  # its own view
    kept = group_fleet(nodes, previous=dict(first.nodes))
    t = kept.nodes["su0-n002"]
    assert (t.tier_0, t.source) == (lg(0), "last-good")
    assert "su0-n002" in next(g for g in kept.groups if g.id == lg(0)).nodes


def test_a_unit_where_every_node_has_a_fault_still_groups() -> None:
    # Every node of SU0 misses the same rail: no complete node vouches for the set.
    nodes = [observation(f"su0-n{i}", [*su_leaves(0)[:7], None]) for i in range(3)]
    topo = group_fleet(nodes)
    seven = tiers.set_id("lg-", su_leaves(0)[:7])
    assert {t.tier_0 for t in topo.nodes.values()} == {seven}
    assert all(t.degraded for t in topo.nodes.values())


def test_stable_across_runs_and_input_order() -> None:
    nodes = fleet(sus=4, nodes=5, pods=2)
    first = group_fleet(nodes)
    shuffled = list(nodes)
    random.Random(7).shuffle(shuffled)
    again = group_fleet(shuffled, previous=dict(first.nodes))
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True
    )
    grown = group_fleet([*nodes, *fleet(sus=6, nodes=5, pods=2)[20:]])
    for name, t in first.nodes.items():
        assert (grown.nodes[name].tier_0, grown.nodes[name].tier_1) == (t.tier_0, t.tier_1)


def test_cloud_and_static_placement_win_in_the_fleet_too() -> None:
    nodes = fleet(sus=1, nodes=2)
    nodes[0].static_placement.CopyFrom(fpb.StaticPlacement(fabric="east", block="b1"))
    topo = group_fleet(nodes)
    assert (topo.nodes["su0-n000"].fabric, topo.nodes["su0-n000"].tier_2) == ("east", "b1")
    assert topo.nodes["su0-n000"].tier_0 == lg(0)


def test_kueue_topology_levels_are_our_tiers_then_hostname() -> None:
    assert kueue_topology() == {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "Topology",
        "metadata": {"name": "nodeagent"},
        "spec": {
            "levels": [
                {"nodeLabel": "topology.nodeagent.io/fabric"},
                {"nodeLabel": "topology.nodeagent.io/tier-2"},
                {"nodeLabel": "topology.nodeagent.io/tier-1"},
                {"nodeLabel": "topology.nodeagent.io/tier-0"},
                {"nodeLabel": "kubernetes.io/hostname"},
            ]
        },
    }
    custom = kueue_topology("example.com", "gpus", hostname=False)
    assert custom["metadata"]["name"] == "gpus"
    assert custom["spec"]["levels"][-1] == {"nodeLabel": "topology.example.com/tier-0"}


def test_slurm_topology_for_a_multi_leaf_fleet() -> None:
    nodes = fleet(sus=3, nodes=2, pods=2)
    nodes.append(fpb.FabricObservation(node="cpu-01"))  # no rails: not placed
    topo = group_fleet(nodes)
    assert slurm_topology(topo.nodes) == (
        "# Slurm topology.conf (topology/tree) generated by nodeagent from fabric tiers\n"
        + "".join(
            f"SwitchName={g} Nodes=su{s}-n000,su{s}-n001\n"
            for g, s in sorted((lg(s), s) for s in range(3))
        )
        + "".join(
            f"SwitchName={p} Switches={c}\n"
            for p, c in sorted([(sg(0), ",".join(sorted([lg(0), lg(2)]))), (sg(1), lg(1))])
        )
        + "# not placed (no tier-0): cpu-01\n"
    )


def test_slurm_topology_goes_up_to_blocks_and_fabrics() -> None:
    def placed(t0: str, t1: str, t2: str, fabric: str) -> fpb.FabricTiers:
        return fpb.FabricTiers(tier_0=t0, tier_1=t1, tier_2=t2, fabric=fabric)

    conf = slurm_topology(
        {
            "a": placed("qcnp7nxaaiz", "qc4pbhxoqqf", "aeycajoqlss", "unknown"),
            "b": placed("qcnp7nxaaiz", "qc4pbhxoqqf", "aeycajoqlss", "unknown"),
            "c": placed("r12", "unknown", "b1", "east"),  # a gap cuts the chain there
            "d": placed("blk", "blk", "unknown", "unknown"),  # same value at two tiers
        }
    )
    assert conf.splitlines()[1:] == [
        "SwitchName=t0-blk Nodes=d",
        "SwitchName=qcnp7nxaaiz Nodes=a,b",
        "SwitchName=r12 Nodes=c",
        "SwitchName=t1-blk Switches=t0-blk",
        "SwitchName=qc4pbhxoqqf Switches=qcnp7nxaaiz",
        "SwitchName=aeycajoqlss Switches=qc4pbhxoqqf",
    ]


def test_slurm_topology_refuses_a_node_name_that_is_not_a_host_name() -> None:
    good = fpb.FabricTiers(tier_0="lg-1", tier_1="unknown")
    for name in ("gpu1\nSwitchName=evil Switches=x", "gpu1 Nodes=x", "gpu1,gpu2", "gpu#1", ""):
        with pytest.raises(ValueError, match="Slurm topology: node host name") as err:
            slurm_topology({"gpu-2": good, name: good})
        assert "\n" not in str(err.value)


def test_slurm_tier_values_become_single_tokens() -> None:
    rack = fpb.FabricTiers(tier_0="r1\nSwitchName=evil Nodes=x,y#", tier_1="unknown")
    assert slurm_topology({"gpu-1": rack}).splitlines()[1:] == [
        "SwitchName=r1-SwitchName-evil-Nodes-x-y- Nodes=gpu-1"
    ]


@pytest.mark.parametrize(
    ("domain", "name"), [("Example.COM", "gpus"), ("a b", "gpus"), ("example.com", "gpus\nx")]
)
def test_kueue_topology_refuses_what_is_not_a_kubernetes_name(domain: str, name: str) -> None:
    with pytest.raises(ValueError):
        kueue_topology(domain, name)
