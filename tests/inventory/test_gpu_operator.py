"""`nodeagent admin export gpu-operator` (issue 15): what the GPU Operator needs from us for a
cluster's nodes: the kernel-module ConfigMap (uvm_disable_hmm=1 for RTX PRO 6000 Blackwell,
as the reference requires) and the Helm values that point at it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.inventory import clusters
from nodeagent.inventory.gpu_operator import NodeGpus, documents, module_params, values
from testbed.cli import nodeagent as run
from tests.inventory.conftest import ServiceThread, enrol
from tests.inventory.test_admin_cli import _env

RTX = NodeGpus(("NVIDIA RTX PRO 6000 Blackwell Server Edition",) * 8, rdma=True)
H100 = NodeGpus(("NVIDIA H100 80GB HBM3",) * 8, rdma=True)
CPU = NodeGpus((), rdma=False)
CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "kernel-module-params", "namespace": "gpu-operator"},
    "data": {"nvidia-uvm.conf": "uvm_disable_hmm=1\n"},
}


def test_rtx_pro_6000_nodes_get_uvm_disable_hmm() -> None:
    text = documents("prod", "operator", [RTX, CPU])
    configmap, helm = list(yaml.safe_load_all(text))
    assert configmap == CONFIGMAP
    assert helm == {
        "driver": {
            "enabled": True,
            "version": "580.82.07",
            "kernelModuleConfig": {"name": "kernel-module-params"},
            "rdma": {"enabled": True, "useHostMofed": False},
        }
    }
    assert text.startswith(
        "# GPU Operator settings for cluster prod: gpu_driver operator, 2 node(s), 1 with "
        "NVIDIA GPUs\n# nvidia-uvm uvm_disable_hmm=1 for 1 node(s): RTX PRO 6000 Blackwell: "
        "CUDA validation fails with HMM\napiVersion: v1\n"
    )


def test_other_gpus_need_no_configmap_and_no_pinned_driver() -> None:
    docs = list(yaml.safe_load_all(documents("prod", "operator", [H100])))
    assert docs == [{"driver": {"enabled": True, "rdma": {"enabled": True, "useHostMofed": False}}}]
    assert module_params([H100, CPU]) == {}
    assert values("operator", [RTX, H100], True)["driver"].get("version") is None
    assert values("operator", [NodeGpus(("NVIDIA B200",), False)], False) == {
        "driver": {"enabled": True, "version": "580.82.07"}
    }
    assert values("operator", [], False) == {"driver": {"enabled": True}}


def test_host_mode_tells_the_operator_to_leave_the_driver_alone() -> None:
    text = documents("prod", "host", [RTX])
    assert list(yaml.safe_load_all(text)) == [{"driver": {"enabled": False}}]
    assert "the hosts carry the driver (gpu_driver host)" in text


def test_cluster_gpu_driver_is_validated() -> None:
    spec = clusters.with_defaults(ipb.Cluster(name="prod", kubespray_dir="/opt/kubespray"))
    assert spec.gpu_driver == "host"
    spec.gpu_driver = "dkms"
    with pytest.raises(ValueError, match="gpu_driver 'dkms': one of host, operator"):
        clusters.check_cluster(spec)
    spec.gpu_driver = ""  # stored before the setting existed: host
    clusters.check_cluster(spec)
    current = clusters.with_defaults(ipb.Cluster(name="prod", gpu_driver="operator"))
    assert clusters.merged(current, ipb.Cluster(name="prod"), []).gpu_driver == "operator"
    assert clusters.merged(current, ipb.Cluster(gpu_driver="host"), []).gpu_driver == "host"


def test_export_through_a_live_inventory(
    service_factory: Callable[..., ServiceThread],
    machine_root: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'gpu.db'}")
    admin = svc.admin()
    env = _env(svc, scratch)
    flags = ["--kubespray-dir", "/opt/kubespray", "--gpu-driver", "operator", "-o", "json"]
    created = run("admin", "clusters", "create", "prod", *flags, env=env)
    assert created.returncode == 0, created.stderr
    assert '"gpu_driver": "operator"' in created.stdout
    inv: pb.HardwareInventory = discover(HostRoot(machine_root("rtx-pro-6000", driver=False)))
    assert {g.model for g in inv.gpus} == {"NVIDIA RTX PRO 6000 Blackwell Server Edition"}
    node = enrol(svc, admin, inv)
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )

    viewer = _env(svc, scratch, "viewer")
    out = run("admin", "export", "gpu-operator", "--cluster", "prod", env=viewer)
    assert out.returncode == 0, out.stderr
    configmap, helm = list(yaml.safe_load_all(out.stdout))
    assert configmap == CONFIGMAP
    assert helm["driver"]["kernelModuleConfig"] == {"name": "kernel-module-params"}

    updated = run("admin", "clusters", "update", "prod", "--gpu-driver", "host", env=env)
    assert updated.returncode == 0, updated.stderr
    out = run("admin", "export", "gpu-operator", "--cluster", "prod", env=viewer)
    assert list(yaml.safe_load_all(out.stdout)) == [{"driver": {"enabled": False}}]
    missing = run("admin", "export", "gpu-operator", "--cluster", "nope", env=viewer)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    empty = run("admin", "clusters", "create", "empty", "--kubespray-dir", "/opt/k", env=env)
    assert empty.returncode == 0, empty.stderr
    out = run("admin", "export", "gpu-operator", "--cluster", "empty", env=viewer)
    assert "no node is assigned to cluster empty" in out.stderr
