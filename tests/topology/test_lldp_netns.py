"""RoCE fabric out of network namespaces: real lldpd, real neighbours, real tiers.

Two units of two leaves; nodes n1 and n2 have their two rails on the leaves of unit A,
n3 on those of unit B. Each node's view comes from `nodeagent fabric` / `nodeagent
labels` run inside its namespace (`ip netns exec`, which also gives it the namespace's
own /sys/class/net), reading its lldpd through the daemon's control socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM
from nodeagent.topology import tiers
from nodeagent.topology.export import slurm_topology
from nodeagent.topology.fleet import group_fleet
from tests.topology.netfabric import NetFabric

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates network namespaces and runs lldpd"
)
CHASSIS = {
    "leaf-a1": "0c:42:a1:00:00:01",
    "leaf-a2": "0c:42:a1:00:00:02",
    "leaf-b1": "0c:42:a1:00:00:11",
    "leaf-b2": "0c:42:a1:00:00:12",
}
CABLING = {"n1": ("leaf-a1", "leaf-a2"), "n2": ("leaf-a1", "leaf-a2"), "n3": ("leaf-b1", "leaf-b2")}


@pytest.fixture(scope="module")
def fabric() -> Iterator[NetFabric]:
    net = NetFabric()
    try:
        for leaf, chassis in CHASSIS.items():
            net.add_leaf(leaf, chassis)
        for node, leaves in CABLING.items():
            net.add_node(node)
            for rail, leaf in enumerate(leaves):
                net.cable(node, rail, leaf)
        net.start()
        for node, leaves in CABLING.items():
            net.wait(node, {f"rail{r}": leaf for r, leaf in enumerate(leaves)})
        yield net
    finally:
        net.close()


def nodeagent(net: NetFabric, node: str, *args: str) -> tuple[int, Any]:
    """Run the CLI in `node`'s namespace; (exit code, parsed JSON output)."""
    config = net.workdir / f"{node}.toml"
    config.write_text(
        f'[fabric]\nnode_name = "{node}"\n[fabric.rails]\nnetdevs = ["rail*"]\n'
        f'[fabric.lldp]\nsocket = "{net.socket(node)}"\n[fabric.oci]\nenabled = "off"\n'
    )
    cmd = [
        "ip",
        "netns",
        "exec",
        net.ns(node),
        sys.executable,
        "-m",
        "nodeagent.cli.main",
        *args,
        "--config",
        str(config),
        "-o",
        "json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode in (EXIT_OK, EXIT_PROBLEM), done.stderr
    return done.returncode, json.loads(done.stdout)


def observation(doc: dict[str, Any]) -> fpb.FabricObservation:
    return json_format.ParseDict(doc["observation"], fpb.FabricObservation())


def test_fabric_from_real_lldp(fabric: NetFabric, tmp_path: Path) -> None:
    a = tiers.set_id("lg-", [CHASSIS["leaf-a1"], CHASSIS["leaf-a2"]])
    b = tiers.set_id("lg-", [CHASSIS["leaf-b1"], CHASSIS["leaf-b2"]])
    views = {node: nodeagent(fabric, node, "fabric")[1] for node in CABLING}
    n1 = views["n1"]["observation"]["rails"]
    assert [
        (r["name"], r["active"], r["leaf"]["name"], r["leaf"]["port"], r["neighbour_source"])
        for r in n1
    ] == [("rail0", True, "leaf-a1", "swp1", "lldp"), ("rail1", True, "leaf-a2", "swp1", "lldp")]
    assert n1[0]["leaf"]["id"] == CHASSIS["leaf-a1"]
    t0 = {node: doc["tiers"]["tier_0"] for node, doc in views.items()}
    assert t0 == {"n1": a, "n2": a, "n3": b}  # same leaves, same tier; no coordination

    code, labels = nodeagent(fabric, "n2", "labels")
    assert code == EXIT_OK
    assert {k: v for k, v in labels.items() if k.startswith(("topology.", "rdma."))} == {
        "rdma.nodeagent.io/degraded": "false",
        "rdma.nodeagent.io/link-layer": "ethernet",
        "rdma.nodeagent.io/present": labels["rdma.nodeagent.io/present"],
        "rdma.nodeagent.io/rails": "2",
        "rdma.nodeagent.io/rails-active": "2",
        "rdma.nodeagent.io/rate-gbps": labels["rdma.nodeagent.io/rate-gbps"],
        "topology.nodeagent.io/fabric": "unknown",
        "topology.nodeagent.io/tier-2": "unknown",
        "topology.nodeagent.io/tier-1": "unknown",
        "topology.nodeagent.io/tier-0": a,
    }

    topo = group_fleet([observation(doc) for doc in views.values()])
    assert {g.id: list(g.nodes) for g in topo.groups} == {a: ["n1", "n2"], b: ["n3"]}
    assert slurm_topology(topo.nodes).splitlines()[1:] == sorted(
        [f"SwitchName={a} Nodes=n1,n2", f"SwitchName={b} Nodes=n3"]
    )

    # Pull n1's second cable at the leaf.
    _, before = nodeagent(fabric, "n1", "labels")
    previous = tmp_path / "n1-labels.json"
    previous.write_text(json.dumps(before))
    fabric.cut("n1", 1)
    fabric.wait("n1", {"rail0": "leaf-a1"})
    code, cut = nodeagent(fabric, "n1", "fabric")
    assert code == EXIT_PROBLEM  # degraded: "ran fine, found a problem"
    assert cut["tiers"]["tier_0"] != a  # alone, one leaf is another set ...
    code, after = nodeagent(fabric, "n1", "labels", "--previous", str(previous))
    assert after["topology.nodeagent.io/tier-0"] == a  # ... so the last-good value stays
    assert after["rdma.nodeagent.io/degraded"] == "true"
    assert after["rdma.nodeagent.io/rails-active"] == "1"
    assert after["rdma.nodeagent.io/rails"] == "2"

    # The fleet keeps n1 in its unit: the one leaf it still sees belongs to unit A.
    views["n1"] = cut
    regrouped = group_fleet([observation(doc) for doc in views.values()], dict(topo.nodes))
    n1_tiers = regrouped.nodes["n1"]
    assert (n1_tiers.tier_0, n1_tiers.degraded, n1_tiers.rails_active) == (a, True, 1)
    assert [list(g.nodes) for g in regrouped.groups if g.id == a] == [["n1", "n2"]]
