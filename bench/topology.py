"""Topology benchmark: fleet grouping and label derivation, beside a naive all-pairs grouping.

Fleet: 10,000 nodes of 8 rails in rail-optimised scalable units of 32 nodes, with the
faults grouping must tolerate (1% of nodes with a pulled cable, 0.2% with a miscabled
rail). The naive peer groups nodes by comparing every pair's leaf set (union-find over
identical sets, no majority rule): O(n^2), so it runs on 1,000 nodes in the same run
and is extrapolated to 10,000 by (10,000 / 1,000)^2; the output says so. Labels: the
full label map of a DGX H100 (every family) from its inventory, fabric tiers included.

Prints a table, then one JSON line (the last line) with every figure and goal.
Goals (topology issue): fleet grouping of 10,000 x 8 rails < 1 s; labels < 5 ms a node.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testbed/ is not installed: it lives beside the package

from nodeagent.api.v1 import fabric_pb2 as fpb  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.labels.config import FAMILIES, LabelConfig  # noqa: E402
from nodeagent.labels.derive import derive  # noqa: E402
from nodeagent.labels.features import read_features  # noqa: E402
from nodeagent.labels.inputs import Assignment, LabelInputs  # noqa: E402
from nodeagent.topology.config import FabricConfig  # noqa: E402
from nodeagent.topology.fleet import group_fleet  # noqa: E402
from nodeagent.topology.observe import observe  # noqa: E402
from nodeagent.topology.tiers import node_tiers  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

NODES, SMALL, RAILS, SU_NODES, SPINES = 10_000, 1_000, 8, 32, 8


def fleet(n: int, seed: int = 1) -> list[fpb.FabricObservation]:
    rng = random.Random(seed)
    units = (n + SU_NODES - 1) // SU_NODES
    out = []
    for i in range(n):
        su = i // SU_NODES
        obs = fpb.FabricObservation(
            node=f"gpu-{i:05d}", rails_expected=RAILS, rate_expected_gbps=400
        )
        pulled = rng.randrange(RAILS) if rng.random() < 0.01 else -1
        wrong = rng.randrange(RAILS) if rng.random() < 0.002 else -1
        pod = su % 4
        for r in range(RAILS):
            rail = obs.rails.add(
                name=f"mlx5_{r}/1",
                device=f"mlx5_{r}",
                port=1,
                link_layer="infiniband",
                active=r != pulled,
                rate_gbps=400,
            )
            if r == pulled:
                continue
            unit = (su + 1) % units if r == wrong else su
            rail.leaf.id, rail.leaf.name = f"{unit:04d}-{r}", f"su{unit}-leaf-r{r}"
            for k in range(SPINES):
                rail.spines.add(id=f"p{pod}-s{k}")
        out.append(obs)
    return out


def naive_all_pairs(observations: Sequence[fpb.FabricObservation]) -> dict[str, str]:
    """Group nodes whose active leaf sets are identical by comparing every pair."""
    sets = [frozenset(r.leaf.id for r in o.rails if r.active and r.leaf.id) for o in observations]
    parent = list(range(len(sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            if sets[i] == sets[j]:
                parent[find(j)] = find(i)
    return {o.node: observations[find(i)].node for i, o in enumerate(observations)}


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def label_inputs() -> LabelInputs:
    tmp = Path(tempfile.mkdtemp(prefix="bench-topology-"))
    try:
        root = HostRoot(build_machine("dgx-h100", tmp / "dgx"))
        inv = discover(root)
        obs = observe(root, inv, FabricConfig())
        return LabelInputs(
            inv,
            node_tiers(obs),
            obs,
            read_features(root),
            Assignment("train-a", "dgx-h100-v1", "applied"),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    big, small = fleet(NODES), fleet(SMALL)
    topo = group_fleet(big)
    placed = sum(1 for t in topo.nodes.values() if t.source == "fleet")
    assert placed == NODES, f"only {placed} of {NODES} nodes placed"
    grouping_ms = median_ms(lambda: group_fleet(big), 5)
    small_ms = median_ms(lambda: group_fleet(small), 5)
    naive_small_ms = median_ms(lambda: naive_all_pairs(small), 3)
    naive_big_ms = naive_small_ms * (NODES / SMALL) ** 2

    inp = label_inputs()
    config = LabelConfig(families=FAMILIES)
    labels = derive(inp, config)
    labels_ms = median_ms(lambda: derive(inp, config), 300)
    tiers_ms = median_ms(lambda: node_tiers(inp.observation), 300)

    rows = [
        (
            f"fleet grouping, {NODES:,} nodes x {RAILS} rails (median)",
            f"{grouping_ms:.0f} ms",
            "< 1000 ms",
        ),
        (f"fleet grouping, {SMALL:,} nodes", f"{small_ms:.1f} ms", ""),
        (f"naive all-pairs grouping, {SMALL:,} nodes (measured)", f"{naive_small_ms:.0f} ms", ""),
        (
            f"naive all-pairs grouping, {NODES:,} nodes (extrapolated x{(NODES // SMALL) ** 2})",
            f"{naive_big_ms:.0f} ms",
            "",
        ),
        (
            f"speed-up over naive at {SMALL:,} nodes (both measured)",
            f"{naive_small_ms / small_ms:.1f}x",
            "",
        ),
        (
            f"speed-up over naive at {NODES:,} nodes (naive extrapolated)",
            f"{naive_big_ms / grouping_ms:.0f}x",
            "",
        ),
        (
            f"labels of a DGX H100, {len(labels)} keys, all families (median)",
            f"{labels_ms:.3f} ms",
            "< 5 ms",
        ),
        ("node-local tiers of a DGX H100 (median)", f"{tiers_ms:.3f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>12}  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value:>12}  {goal}")
    print(
        f"\nThe naive peer is O(n^2): it ran on {SMALL:,} nodes; its {NODES:,}-node figure is "
        f"that time x (n/{SMALL:,})^2, not a measurement."
    )
    results = [
        {
            "name": "fleet_grouping_10k_nodes_8_rails",
            "value": round(grouping_ms, 1),
            "unit": "ms",
            "goal": 1000,
            "better": "lower",
        },
        {
            "name": "fleet_grouping_1k_nodes",
            "value": round(small_ms, 2),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "naive_all_pairs_1k_nodes",
            "value": round(naive_small_ms, 1),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "naive_all_pairs_10k_nodes_extrapolated",
            "value": round(naive_big_ms),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "speedup_over_naive_1k_nodes",
            "value": round(naive_small_ms / small_ms, 1),
            "unit": "x",
            "goal": None,
            "better": "higher",
        },
        {
            "name": "speedup_over_naive_10k_nodes_extrapolated",
            "value": round(naive_big_ms / grouping_ms, 1),
            "unit": "x",
            "goal": None,
            "better": "higher",
        },
        {
            "name": "label_derivation_per_node",
            "value": round(labels_ms, 3),
            "unit": "ms",
            "goal": 5,
            "better": "lower",
        },
        {
            "name": "node_tiers_per_node",
            "value": round(tiers_ms, 3),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
    ]
    print(json.dumps({"bench": "topology", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
