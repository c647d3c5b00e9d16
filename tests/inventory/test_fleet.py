"""FleetService: nodes report their fabric, the service groups the fleet and exports it for
Kueue and Slurm, and derives any node's labels; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import fleet_pb2, fleet_pb2_grpc
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.topology.tiers import set_id
from testbed.variants import variant
from tests.inventory.conftest import EnrolledNode, ServiceThread, enrol
from tests.inventory.test_admin_cli import run


def _observation(node: str, leaves: list[str], spine: str) -> fpb.FabricObservation:
    """A node with one rail per leaf, all ACTIVE at 400 Gb/s (a rail-optimised unit)."""
    obs = fpb.FabricObservation(node=node, rails_expected=len(leaves), rate_expected_gbps=400)
    for i, leaf in enumerate(leaves):
        obs.rails.add(
            name=f"mlx5_{i}",
            device=f"mlx5_{i}",
            port=1,
            link_layer="infiniband",
            active=True,
            rate_gbps=400,
            neighbour_source="infiniband",
            leaf=fpb.SwitchRef(id=leaf, name=f"leaf-{leaf}", port=str(i + 1)),
            spines=[fpb.SwitchRef(id=spine, name=f"spine-{spine}")],
        )
    return obs


def test_fleet_grouping_exports_and_labels(
    service_factory: Callable[..., ServiceThread],
    database: str,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    fleet = fleet_pb2_grpc.FleetServiceStub(admin.channel)
    nodes = [enrol(svc, admin, variant(dgx_inventory, 900 + i)) for i in range(3)]
    layout = [(["a1", "a2"], "s1"), (["a1", "a2"], "s1"), (["b1", "b2"], "s1")]
    for i, (node, (leaves, spine)) in enumerate(zip(nodes, layout, strict=True)):
        stub = fleet_pb2_grpc.FleetServiceStub(node.client.channel)
        stub.ReportFabric(
            fleet_pb2.ReportFabricRequest(
                node_id=node.id, observation=_observation(f"gpu-{900 + i:05d}", leaves, spine)
            ),
            timeout=10,
        )

    exported = fleet.ExportTopology(fleet_pb2.ExportTopologyRequest(format="json"), timeout=10)
    tiers = exported.topology.nodes
    assert tiers["gpu-00900"].tier_0 == tiers["gpu-00901"].tier_0 != tiers["gpu-00902"].tier_0
    assert tiers["gpu-00900"].tier_1 == tiers["gpu-00902"].tier_1, "one spine over both leaves"
    assert json.loads(exported.text)["nodes"]
    slurm = fleet.ExportTopology(fleet_pb2.ExportTopologyRequest(format="slurm"), timeout=10).text
    leaf_lines = [line for line in slurm.splitlines() if "Nodes=" in line]
    assert len(leaf_lines) == 2 and any(
        "gpu-00900" in ln and "gpu-00901" in ln for ln in leaf_lines
    )
    assert any(
        line.startswith("SwitchName=") and "Switches=" in line for line in slurm.splitlines()
    )
    kueue = fleet.ExportTopology(fleet_pb2.ExportTopologyRequest(format="kueue"), timeout=10).text
    assert "kind: Topology" in kueue and "kubernetes.io/hostname" in kueue

    labels = fleet.GetNodeLabels(
        fleet_pb2.GetNodeLabelsRequest(node_id=nodes[0].id), timeout=10
    ).labels
    assert labels["topology.nodeagent.io/tier-0"] == tiers["gpu-00900"].tier_0
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["gpu.nodeagent.io/count"] == "8"

    # a node reports only for itself, and reads no fleet-wide view
    own = fleet_pb2_grpc.FleetServiceStub(nodes[0].client.channel)
    with pytest.raises(grpc.RpcError) as err:
        own.ReportFabric(fleet_pb2.ReportFabricRequest(node_id=nodes[1].id), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        own.ExportTopology(fleet_pb2.ExportTopologyRequest(format="slurm"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        fleet.ExportTopology(fleet_pb2.ExportTopologyRequest(format="xml"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _report(node: EnrolledNode, obs: fpb.FabricObservation) -> None:
    fleet_pb2_grpc.FleetServiceStub(node.client.channel).ReportFabric(
        fleet_pb2.ReportFabricRequest(observation=obs), timeout=10
    )


# a line of topology.conf we write: a switch token, then node or switch tokens
SLURM_LINE = re.compile(r"SwitchName=[-A-Za-z0-9_.]+ (Nodes|Switches)=[-A-Za-z0-9_.,]+")
INJECTED = "\nSwitchName=evil Switches=x"


def test_reports_place_only_their_sender_and_names_reach_slurm_checked(
    service_factory: Callable[..., ServiceThread],
    database: str,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    fleet = fleet_pb2_grpc.FleetServiceStub(admin.channel)

    def export(fmt: str) -> fleet_pb2.ExportTopologyResponse:
        got: fleet_pb2.ExportTopologyResponse = fleet.ExportTopology(
            fleet_pb2.ExportTopologyRequest(format=fmt), timeout=10
        )
        return got

    a, b = (enrol(svc, admin, variant(dgx_inventory, n)) for n in (910, 911))
    _report(b, _observation("gpu-00911", ["b1", "b2"], "s1"))
    # A names B in its report, then a name that would add a line to topology.conf
    _report(a, _observation("gpu-00911", ["a1", "a2"], "s1"))
    _report(a, _observation("gpu-00910" + INJECTED, ["a1", "a2"], "s1"))
    tiers = export("json").topology.nodes
    assert sorted(tiers) == ["gpu-00910", "gpu-00911"]
    assert tiers["gpu-00911"].tier_0 == set_id("lg-", ["b1", "b2"]), "B's placement is B's"
    assert tiers["gpu-00910"].tier_0 == set_id("lg-", ["a1", "a2"]), "A's report lands on A"
    lg_a, lg_b, sg = set_id("lg-", ["a1", "a2"]), set_id("lg-", ["b1", "b2"]), set_id("sg-", ["s1"])
    assert export("slurm").text.splitlines()[1:] == [
        *sorted([f"SwitchName={lg_a} Nodes=gpu-00910", f"SwitchName={lg_b} Nodes=gpu-00911"]),
        f"SwitchName={sg} Switches={','.join(sorted([lg_a, lg_b]))}",
    ]

    # a control character in a switch name is refused, naming the field; nothing is stored
    hostile = _observation("gpu-00910", ["c1", "c2"], "s1")
    hostile.rails[1].leaf.name = "leaf-c2" + INJECTED
    with pytest.raises(grpc.RpcError) as err:
        _report(a, hostile)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "observation.rails[1].leaf.name" in (err.value.details() or "")
    assert export("json").topology.nodes["gpu-00910"].tier_0 == lg_a

    # printable but unsafe: a rack name is rewritten to one token, a host name left out
    racked = _observation("gpu-00910", ["a1", "a2"], "s1")
    racked.static_placement.rack = "r1 Nodes=evil,gpu-00911"
    _report(a, racked)
    bad_name = variant(dgx_inventory, 912)
    bad_name.system.hostname = "gpu-00912 SwitchName=evil"
    c = enrol(svc, admin, bad_name)
    _report(c, _observation("gpu-00912", ["a1", "a2"], "s1"))
    slurm = export("slurm").text.splitlines()
    assert "SwitchName=r1-Nodes-evil-gpu-00911 Nodes=gpu-00910" in slurm
    assert f"# left out (host name is not a lower-case RFC 1123 name): node {c.id}" in slurm
    assert all(line.startswith("#") or SLURM_LINE.fullmatch(line) for line in slurm), slurm
    assert sorted(export("json").topology.nodes) == ["gpu-00910", "gpu-00911"]

    # a node that takes B's name displaces nobody: neither is placed until one is retired
    twin = variant(dgx_inventory, 913)
    twin.system.hostname = "gpu-00911"
    d = enrol(svc, admin, twin)
    _report(d, _observation("gpu-00911", ["a1", "a2"], "s1"))
    slurm = export("slurm").text.splitlines()
    assert "gpu-00911" not in export("json").topology.nodes
    assert {line for line in slurm if "shared" in line} == {
        f"# left out (host name shared with another node): node {n.id}" for n in (b, d)
    }
    admin.RetireNode(ipb.NodeActionRequest(node_id=d.id, reason="impostor"))
    admin.RetireNode(ipb.NodeActionRequest(node_id=a.id, reason="decommissioned"))
    tiers = export("json").topology.nodes
    assert sorted(tiers) == ["gpu-00911"] and tiers["gpu-00911"].tier_0 == lg_b
    slurm_text = export("slurm").text
    assert "gpu-00910" not in slurm_text and d.id not in slurm_text and a.id not in slurm_text
    assert f"SwitchName={lg_b} Nodes=gpu-00911" in slurm_text.splitlines()


def test_fleet_cli(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'fleet.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 950))
    fleet_pb2_grpc.FleetServiceStub(node.client.channel).ReportFabric(
        fleet_pb2.ReportFabricRequest(observation=_observation("gpu-00950", ["x1"], "s9")),
        timeout=10,
    )
    cert, key = svc.svc.ca.issue_client("cli", "viewer")
    for name, data in (("c.crt", cert), ("c.key", key), ("ca.crt", svc.ca_pem)):
        (scratch / name).write_bytes(data)
    env = {
        "NODEAGENT_INVENTORY": svc.address,
        "NODEAGENT_ADMIN_CERT": str(scratch / "c.crt"),
        "NODEAGENT_ADMIN_KEY": str(scratch / "c.key"),
        "NODEAGENT_ADMIN_CA": str(scratch / "ca.crt"),
    }
    slurm = run("admin", "export", "slurm-topology", env=env)
    assert slurm.returncode == 0 and "Nodes=gpu-00950" in slurm.stdout, slurm.stderr
    kueue = run("admin", "export", "kueue-topology", env=env)
    assert "nodeLabel: topology.nodeagent.io/tier-0" in kueue.stdout
    labels = run("admin", "-o", "json", "nodes", "labels", node.id, env=env)
    assert json.loads(labels.stdout)["topology.nodeagent.io/tier-0"].startswith("lg-")
