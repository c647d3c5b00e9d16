"""Discovery over sysfs/procfs trees captured from real machines (Prometheus fixtures).

The archives are read directly with the ttar reader; see tests/fixtures/ttar/README.md
for their origin. They are odd in places (missing files, directories where the
kernel has links), which is the point: discovery must report what is there and
record the rest as collector errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from testbed.ttar import extract_ttar

TTAR = Path(__file__).resolve().parent.parent / "fixtures" / "ttar"


@pytest.fixture(scope="module")
def procfs_tree(tmp_path_factory: pytest.TempPathFactory) -> pb.HardwareInventory:
    dest = tmp_path_factory.mktemp("procfs")
    extract_ttar(TTAR / "procfs_fixtures.ttar", dest)
    return discover(HostRoot(dest / "fixtures"))


@pytest.fixture(scope="module")
def node_exporter_tree(tmp_path_factory: pytest.TempPathFactory) -> pb.HardwareInventory:
    dest = tmp_path_factory.mktemp("node_exporter")
    extract_ttar(TTAR / "node_exporter_sys.ttar", dest)
    return discover(HostRoot(dest))


def _collector(inv: pb.HardwareInventory, name: str) -> pb.CollectorResult:
    return next(c for c in inv.collectors if c.name == name)


def test_procfs_tree_dmi_cpu_memory(procfs_tree: pb.HardwareInventory) -> None:
    inv = procfs_tree
    assert (inv.system.vendor, inv.system.product, inv.system.serial) == (
        "Dell Inc.",
        "PowerEdge R6515",
        "7N62AI2",
    )
    assert inv.cpu.model_name == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    assert inv.cpu.vendor == "GenuineIntel"
    assert inv.memory.total_bytes == 15666184 * 1024
    # cpu2 has no topology files in this capture: reported, not guessed
    assert any("cpu2/topology" in e for e in _collector(inv, "cpu").errors)


def test_procfs_tree_rdma(procfs_tree: pb.HardwareInventory) -> None:
    devs = {d.name: d for d in procfs_tree.rdma_devices}
    assert sorted(devs) == ["hfi1_0", "mlx4_0", "mlx5_0"]
    mlx5 = devs["mlx5_0"]
    assert (mlx5.hca_type, mlx5.fw_version, mlx5.node_guid) == (
        "MT4118",
        "14.28.2006",
        "0a7fbc1245efd23b",
    )
    assert mlx5.model == "ConnectX-4 Lx VF"  # from hca_type: there is no device link here
    port = mlx5.ports[0]
    assert (port.rate_gbps, port.width, port.speed, port.state) == (25.0, 1, "EDR", "ACTIVE")
    assert [p.port for p in devs["mlx4_0"].ports] == [1, 2]
    assert all(p.rate_gbps == 40.0 and p.speed == "QDR" for p in devs["mlx4_0"].ports)
    assert devs["mlx4_0"].model == "ConnectX-3"
    assert devs["hfi1_0"].ports[0].rate_gbps == 100.0


def test_procfs_tree_nvme_padding_trimmed(procfs_tree: pb.HardwareInventory) -> None:
    (ctrl,) = procfs_tree.nvme_controllers
    assert ctrl.model == "Samsung SSD 970 PRO 512GB"
    assert ctrl.serial == "S680HF8N190894I"
    assert [(ns.name, ns.size_bytes) for ns in ctrl.namespaces] == [("nvme0n0", 3906250000 * 512)]


def test_procfs_tree_network(procfs_tree: pb.HardwareInventory) -> None:
    (eth0,) = procfs_tree.network_interfaces
    assert (eth0.name, eth0.mac, eth0.speed_mbps, eth0.operstate) == (
        "eth0",
        "01:01:01:01:01:01",
        1000,
        "up",
    )
    assert eth0.physical


def test_node_exporter_tree_numa_and_rates(node_exporter_tree: pb.HardwareInventory) -> None:
    inv = node_exporter_tree
    nodes = {n.id: n for n in inv.numa_nodes}
    assert [nodes[i].cpulist for i in (0, 1, 2)] == ["0-1", "2-3", ""]  # node2: memory only
    assert [nodes[i].memory_total_bytes for i in (0, 1, 2)] == [
        134182340 * 1024,
        134217728 * 1024,
        134217728 * 1024,
    ]
    assert inv.cpu.logical_cpus == 4
    devs = {d.name: d for d in inv.rdma_devices}
    assert devs["i40iw0"].ports[0].rate_gbps == 10.0
    assert devs["i40iw0"].ports[0].speed == ""  # old kernels print `10 Gb/sec (4X)`
    # No /proc here: memory and cpu report it, the rest still ran
    assert not _collector(inv, "memory").success
    assert _collector(inv, "numa").success and _collector(inv, "rdma").success
