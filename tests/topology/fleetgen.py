"""Synthetic fabric observations: rail-optimised scalable units for grouping tests and the
benchmark. Rail r of every node in SU s lands on leaf `su<s>-r<r>`; leaves of a pod
uplink to that pod's spines."""

from __future__ import annotations

from nodeagent.api.v1 import fabric_pb2 as fpb


def leaf(su: int, rail: int) -> str:
    return f"su{su}-r{rail}"


def observation(
    node: str,
    leaves: list[str | None],
    spines: list[str] = (),  # type: ignore[assignment]
    *,
    rate: float = 400.0,
    rates: dict[int, float] | None = None,
    expected: int = 0,
) -> fpb.FabricObservation:
    """A node whose rail r lands on leaves[r] (None: the rail is down)."""
    obs = fpb.FabricObservation(
        node=node, rails_expected=expected or len(leaves), rate_expected_gbps=rate
    )
    for r, sw in enumerate(leaves):
        rail = obs.rails.add(
            name=f"mlx5_{r}/1",
            device=f"mlx5_{r}",
            port=1,
            link_layer="infiniband",
            active=sw is not None,
            rate_gbps=(rates or {}).get(r, rate),
        )
        if sw is not None:
            rail.leaf.id, rail.leaf.name, rail.leaf.port = sw, f"leaf {sw}", str(r + 1)
            rail.neighbour_source = "infiniband"
            for s in spines:
                rail.spines.add(id=s, name=f"spine {s}", port="1")
    return obs


def fleet(
    sus: int, nodes: int, rails: int = 8, pods: int = 1, spines_per_pod: int = 4
) -> list[fpb.FabricObservation]:
    """`sus` SUs of `nodes` nodes; SUs are spread over `pods` spine pods round robin."""
    out = []
    for s in range(sus):
        pod = s % pods
        spines = [f"pod{pod}-s{k}" for k in range(spines_per_pod)]
        for i in range(nodes):
            out.append(observation(f"su{s}-n{i:03d}", [leaf(s, r) for r in range(rails)], spines))
    return out
