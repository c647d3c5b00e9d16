"""Discovery of the modelled reference servers, field by field.

The roots are built by testbed.machines from published facts about
each server (see that module); the answers here are those facts, not a dump of
what the code printed.
"""

from __future__ import annotations

from collections.abc import Callable

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.cli import render
from testbed import TESTBED_DATA

Inventory = Callable[..., pb.HardwareInventory]
DGX_GPU_BUSES = ["1b", "43", "52", "61", "9d", "c3", "d1", "df"]
DGX_COMPUTE = {
    "mlx5_0": "18",
    "mlx5_3": "40",
    "mlx5_4": "4f",
    "mlx5_5": "5e",
    "mlx5_6": "9a",
    "mlx5_9": "c0",
    "mlx5_10": "ce",
    "mlx5_11": "dc",
}
TOPO = TESTBED_DATA


def _ok(inv: pb.HardwareInventory) -> None:
    failed = {c.name: list(c.errors) for c in inv.collectors if not c.success}
    assert not failed, failed


def test_dgx_h100_system_cpu_memory(inventory_of: Inventory) -> None:
    inv = inventory_of("dgx-h100")
    _ok(inv)
    assert (inv.system.vendor, inv.system.product) == ("NVIDIA", "DGXH100")
    assert inv.system.hostname == "dgx-h100-01" and inv.system.boot_mode == "uefi"
    c = inv.cpu
    assert c.model_name == "Intel(R) Xeon(R) Platinum 8480C"
    assert (c.sockets, c.cores_per_socket, c.threads_per_core, c.logical_cpus) == (2, 56, 2, 224)
    assert c.scaling_driver == "intel_pstate" and "amx_tile" in c.flags
    assert [(n.id, n.cpulist) for n in inv.numa_nodes] == [
        (0, "0-55,112-167"),
        (1, "56-111,168-223"),
    ]
    assert list(inv.numa_nodes[0].distances) == [10, 21]
    assert inv.memory.total_bytes > 2000 * (1 << 30)
    assert sum(n.memory_total_bytes for n in inv.numa_nodes) <= inv.memory.total_bytes * 1.01


def test_dgx_h100_gpus_with_nvml(inventory_of: Inventory) -> None:
    inv = inventory_of("dgx-h100")
    assert [g.pci_address for g in inv.gpus] == [f"0000:{b}:00.0" for b in DGX_GPU_BUSES]
    assert [g.index for g in inv.gpus] == list(range(8))
    for g in inv.gpus:
        assert (g.vendor, g.vendor_id, g.pci_device_id, g.pci_class) == (
            "nvidia",
            "10de",
            "2330",
            "030200",
        )
        assert (g.model, g.model_source) == ("NVIDIA H100 80GB HBM3", "nvml")
        assert g.memory_bytes == 81559 * (1 << 20)
        assert g.uuid.startswith("GPU-") and len(g.serial) == 13
        assert (g.architecture, g.compute_capability) == ("hopper", "9.0")
        assert (g.pcie.current_speed_gts, g.pcie.current_width, g.pcie.max_width) == (32.0, 16, 16)
        assert (g.pcie.current_generation, g.pcie.degraded) == (5, False)
        assert (g.nvlinks_total, g.nvlinks_active, g.health) == (18, 18, pb.HEALTH_OK)
        assert g.driver == "nvidia" and g.fabric_state == "completed"
    assert [g.numa_node for g in inv.gpus] == [0] * 4 + [1] * 4
    assert inv.gpus[0].cpu_affinity == "0-55,112-167"
    assert [list(g.nearest_rdma_devices) for g in inv.gpus] == [[n] for n in DGX_COMPUTE]
    assert len({g.uuid for g in inv.gpus}) == 8
    assert inv.software.nvidia_driver_version == "565.57.01"
    assert inv.software.cuda_driver_version == "12.7"
    assert inv.software.nvidia_kernel_module == "open"


def test_dgx_h100_models_without_nvml_or_driver(inventory_of: Inventory) -> None:
    no_nvml = inventory_of("dgx-h100", nvml=False)
    assert {(g.model, g.model_source) for g in no_nvml.gpus} == {
        ("NVIDIA H100 80GB HBM3", "procfs")
    }
    bare = inventory_of("dgx-h100", nvml=False, driver=False)
    _ok(bare)
    assert len(bare.gpus) == 8
    assert {(g.model, g.model_source, g.driver) for g in bare.gpus} == {
        ("NVIDIA H100 80GB HBM3", "pci-table", "")
    }
    assert all(g.health == pb.HEALTH_UNSPECIFIED and not g.uuid for g in bare.gpus)
    assert bare.software.nvidia_driver_version == ""
    # Without NVML the GPU-GPU cells are PCIe levels, and the NIC cells do not change
    rows = [list(r.cells) for r in bare.pcie_affinity.rows]
    assert rows[0][1] == "NODE" and rows[0][4] == "SYS"
    assert [list(r.cells)[8:] for r in bare.pcie_affinity.rows] == [
        list(r.cells)[8:] for r in inventory_of("dgx-h100").pcie_affinity.rows
    ]


def test_dgx_h100_affinity_reproduces_nvidia_smi_topo(inventory_of: Inventory) -> None:
    """Every cell of the real `nvidia-smi topo -m` of a DGX H100, GPUs then NICs."""
    lines = (TOPO / "nvidia-smi-topo-m_DGX-H100_12nic.txt").read_text().splitlines()
    table = [ln for ln in lines if ln.startswith(("GPU", "NIC")) and "\t" in ln]
    expected = [[c.strip() for c in ln.split("\t")[1:21]] for ln in table]
    inv = inventory_of("dgx-h100")
    got = [list(r.cells) for r in inv.pcie_affinity.rows]
    assert got == expected
    assert [d.label for d in inv.pcie_affinity.devices] == [
        *(f"GPU{i}" for i in range(8)),
        *(f"NIC{i}" for i in range(12)),
    ]
    assert [d.name for d in inv.pcie_affinity.devices[8:]] == [f"mlx5_{i}" for i in range(12)]
    text = render.topo_matrix(inv)
    for want, have in zip(table, text.splitlines()[1:21], strict=True):
        assert have.rstrip() == want.rstrip().replace("\t\t", "\t\t")


def test_dgx_h100_rdma(inventory_of: Inventory) -> None:
    devs = {d.name: d for d in inventory_of("dgx-h100").rdma_devices}
    assert sorted(devs, key=lambda n: int(n[5:])) == [f"mlx5_{i}" for i in range(12)]
    for name, bus in DGX_COMPUTE.items():
        d = devs[name]
        assert d.pci_address == f"0000:{bus}:00.0"
        assert (d.model, d.hca_type, d.fw_version, d.board_id) == (
            "ConnectX-7",
            "MT4129",
            "28.39.1002",
            "MT_0000000838",
        )
        assert len(d.node_guid) == 16 and ":" not in d.node_guid
        (port,) = d.ports
        assert (port.link_layer, port.state, port.phys_state) == ("infiniband", "ACTIVE", "LinkUp")
        assert (port.rate_gbps, port.width, port.speed) == (400.0, 4, "NDR")
        assert port.lid > 0 and port.sm_lid > 0 and port.gid.startswith("fe80:")
        assert port.netdev == f"ibp{int(bus, 16)}s0" and list(d.netdevs) == [port.netdev]
        assert d.numa_node == (0 if bus < "80" else 1)
    assert devs["mlx5_2"].ports[0].link_layer == "ethernet"
    assert devs["mlx5_2"].ports[0].netdev == "enp41s0f1np1"
    assert (devs["mlx5_1"].pci_address, devs["mlx5_2"].pci_address) == (
        "0000:29:00.0",
        "0000:29:00.1",
    )
    assert len({d.node_guid for d in devs.values()}) == 12


def test_dgx_h100_nvswitch_nvme_network(inventory_of: Inventory) -> None:
    inv = inventory_of("dgx-h100")
    assert len(inv.nvswitches) == 4
    assert {(s.pci_device_id, s.model) for s in inv.nvswitches} == {("22a3", "NVSwitch (Hopper)")}
    sizes = sorted(ns.size_bytes for c in inv.nvme_controllers for ns in c.namespaces)
    assert sizes == [3750748848 * 512] * 2 + [7501476528 * 512] * 8
    for c in inv.nvme_controllers:
        assert c.subsystem.startswith("nvme-subsys"), "native multipath layout"
        assert c.model.startswith("SAMSUNG") and c.model == c.model.strip()
        assert c.transport == "pcie" and c.state == "live" and c.pci_address
        assert [ns.nsid for ns in c.namespaces] == [1]
    nics = {n.name: n for n in inv.network_interfaces}
    ib = nics["ibp24s0"]
    assert (ib.kind, ib.rdma_device, ib.pci_address, ib.mtu) == (
        "infiniband",
        "mlx5_0",
        "0000:18:00.0",
        4092,
    )
    assert len(ib.mac.split(":")) == 20  # IPoIB: QPN + GID, not a fake MAC
    assert nics["lo"].kind == "loopback" and not nics["lo"].physical
    assert nics["ens6f0"].speed_mbps == 100000 and nics["ens6f0"].driver == "ice"
    assert not nics["ens6f1"].HasField("speed_mbps")
    assert {f.device: f.version for f in inv.software.nic_firmware}["mlx5_0"] == "28.39.1002"


def test_oci_bm_gpu_h100_8(inventory_of: Inventory) -> None:
    inv = inventory_of("oci-bm-gpu-h100-8")
    _ok(inv)
    # the recorded HGX H100 fixture applies unchanged: real bus ids, real serials
    assert [g.pci_address[5:7] for g in inv.gpus] == [
        "18",
        "2a",
        "3a",
        "5d",
        "9a",
        "ab",
        "ba",
        "db",
    ]
    assert inv.gpus[0].serial == "1654423001593"
    assert inv.gpus[0].uuid == "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"
    assert len(inv.nvme_controllers) == 16
    assert all(c.subsystem == "" and len(c.namespaces) == 1 for c in inv.nvme_controllers)
    assert all(
        ns.size_bytes == 7501476528 * 512 for c in inv.nvme_controllers for ns in c.namespaces
    )
    rails = [d for d in inv.rdma_devices if d.model == "ConnectX-7"]
    assert len(rails) == 16
    assert {p.link_layer for d in rails for p in d.ports} == {"ethernet"}
    assert [d.ports[0].netdev for d in rails] == [f"rdma{i}" for i in range(16)]
    # GPU i shares its PCIe switch with two rails (PIX), as on HGX boards with switches
    assert [list(g.nearest_rdma_devices) for g in inv.gpus] == [
        [f"mlx5_{2 * i}", f"mlx5_{2 * i + 1}"] for i in range(8)
    ]
    row0 = list(inv.pcie_affinity.rows[0].cells)
    assert row0[8:10] == ["PIX", "PIX"] and row0[1] == "NV18"


def test_rtx_pro_6000(inventory_of: Inventory) -> None:
    inv = inventory_of("rtx-pro-6000")
    _ok(inv)
    assert len(inv.gpus) == 8, "the ASPEED BMC VGA is not a GPU"
    assert {g.model for g in inv.gpus} == {"NVIDIA RTX PRO 6000 Blackwell Server Edition"}
    assert {g.pci_device_id for g in inv.gpus} == {"2bb5"}
    degraded = [g for g in inv.gpus if g.pcie.degraded]
    assert [(g.index, g.pcie.current_width, g.pcie.max_width) for g in degraded] == [(5, 8, 16)]
    assert degraded[0].health == pb.HEALTH_DEGRADED
    assert degraded[0].health_reasons[:] == ["PCIe link x8 of x16"]
    assert all(g.numa_node in (0, 1) for g in inv.gpus), "numa_node -1 resolved via local CPUs"
    assert [g.numa_node for g in inv.gpus] == [0] * 4 + [1] * 4
    assert {d.model for d in inv.rdma_devices} == {"BlueField-3"}
    assert inv.cpu.vendor == "AuthenticAMD" and inv.cpu.logical_cpus == 256
    assert not inv.nvswitches


def test_cpu_node(inventory_of: Inventory) -> None:
    inv = inventory_of("cpu-node")
    _ok(inv)
    assert not inv.gpus and not inv.nvswitches
    assert [d.label for d in inv.pcie_affinity.devices] == ["NIC0", "NIC1"]
    assert (inv.cpu.sockets, inv.cpu.cores_per_socket, inv.cpu.logical_cpus) == (1, 96, 192)
    assert [d.model for d in inv.rdma_devices] == ["ConnectX-6 Dx"] * 2
    assert inv.software.nvidia_driver_version == ""
    assert len(inv.nvme_controllers) == 2
