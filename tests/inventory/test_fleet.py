"""FleetService: nodes report their fabric, the service groups the fleet and exports it for
Kueue and Slurm, and derives any node's labels; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import fleet_pb2, fleet_pb2_grpc
from nodeagent.api.v1 import hardware_pb2 as pb
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, enrol
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
