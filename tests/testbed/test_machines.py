"""The modelled machine roots: formats, links, and the PCIe tree against real `topo -m` output.

The topology tests carry their own small implementation of the sysfs.md §11 algorithm, so they
validate the model, not the product's affinity code.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from testbed import MACHINES, build_machine

DGX_GPU_BUSES = ("1b", "43", "52", "61", "9d", "c3", "d1", "df")
OCI_GPU_BUSES = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")
BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: build_machine(name, tmp_path_factory.mktemp(name)) for name in MACHINES}


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def attr(root: Path, rel: str) -> str:
    return read(root, rel).strip()


def pci_functions(root: Path) -> list[str]:
    return sorted(os.listdir(root / "sys/bus/pci/devices"))


def gpus(root: Path) -> list[str]:
    dev = "sys/bus/pci/devices"
    return [
        f
        for f in pci_functions(root)
        if attr(root, f"{dev}/{f}/vendor") == "0x10de"
        and attr(root, f"{dev}/{f}/class").startswith(("0x0302", "0x0300"))
    ]


def ibdev_address(root: Path, ibdev: str) -> str:
    return os.path.basename(os.path.realpath(root / f"sys/class/infiniband/{ibdev}/device"))


# ---------------------------------------------------------------- sysfs.md §11, test-local


def pcie_path(root: Path, bdf: str) -> tuple[str, list[str]]:
    real = os.path.realpath(root / "sys/bus/pci/devices" / bdf)
    host_bridge, *chain = os.path.relpath(real, os.path.realpath(root / "sys/devices")).split("/")
    return host_bridge, chain


def switch_nodes(chain: list[str]) -> list[str]:
    above = chain[:-1]
    return [above[0], *above[1::2]] if above else []


def level(root: Path, a: str, b: str) -> str:
    host_a, chain_a = pcie_path(root, a)
    host_b, chain_b = pcie_path(root, b)
    if host_a != host_b:
        numa = [int(attr(root, f"sys/bus/pci/devices/{x}/numa_node")) for x in (a, b)]
        return "NODE" if numa[0] == numa[1] != -1 else "SYS"
    nodes_a, nodes_b = switch_nodes(chain_a), switch_nodes(chain_b)
    common = 0
    while common < min(len(nodes_a), len(nodes_b)) and nodes_a[common] == nodes_b[common]:
        common += 1
    if common == 0:
        return "PHB"
    hops = len(nodes_a) - common + len(nodes_b) - common + 1
    return "PIX" if hops == 1 else "PXB"


def topo_fixture(name: str) -> dict[str, dict[str, str]]:
    """Rows of a `nvidia-smi topo -m` printout: {"GPU0": {"GPU1": "NV18", "NIC0": "PXB", ...}}."""
    text = resources.files("testbed").joinpath("data", name).read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")[1:]
    rows = {}
    for line in lines[1:]:
        cells = line.split("\t")
        if not cells[0].startswith(("GPU", "NIC")):
            break
        rows[cells[0]] = {col: cell.strip() for col, cell in zip(header, cells[1:], strict=False)}
    return rows


# ---------------------------------------------------------------- every machine


def walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath, name)


@pytest.mark.parametrize("name", MACHINES)
def test_machine_builds(roots: dict[str, Path], name: str) -> None:
    root = roots[name]
    for rel in ("sys/devices", "proc/cpuinfo", "proc/meminfo", "etc/os-release", "etc/hostname"):
        assert (root / rel).exists(), rel


@pytest.mark.parametrize("name", MACHINES)
def test_symlinks_are_relative_and_resolve_inside_the_root(
    roots: dict[str, Path], name: str
) -> None:
    root = os.path.realpath(roots[name])
    links = [p for p in walk(roots[name]) if p.is_symlink()]
    assert len(links) > 100
    for link in links:
        target = os.readlink(link)
        assert not os.path.isabs(target), link
        resolved = os.path.realpath(link)
        assert resolved.startswith(root + os.sep), (link, target)
        assert os.path.exists(resolved), (link, target)


@pytest.mark.parametrize("name", MACHINES)
def test_sysfs_attributes_end_with_newline(roots: dict[str, Path], name: str) -> None:
    for path in walk(roots[name] / "sys"):
        if path.is_file() and not path.is_symlink():
            content = path.read_text()
            assert content.endswith("\n"), path


@pytest.mark.parametrize("name", MACHINES)
def test_pci_bus_numbering_is_consistent(roots: dict[str, Path], name: str) -> None:
    root = roots[name]
    windows = []
    for host in sorted(os.listdir(root / "sys/devices")):
        if not host.startswith("pci0000:"):
            continue
        buses = [
            int(p.name[5:7], 16)
            for p in walk(root / "sys/devices" / host)
            if p.is_dir() and not p.is_symlink() and BDF.match(p.name)
        ]
        windows.append((int(host[8:], 16), max(buses)))
    for (_, last), (first, _) in itertools.pairwise(windows):
        assert last < first, windows
    for bdf in pci_functions(root):
        dev = root / "sys/bus/pci/devices" / bdf
        if attr(root, f"sys/bus/pci/devices/{bdf}/class") != "0x060400":
            continue
        secondary = int(attr(root, f"sys/bus/pci/devices/{bdf}/secondary_bus_number"))
        subordinate = int(attr(root, f"sys/bus/pci/devices/{bdf}/subordinate_bus_number"))
        children = [c.name for c in dev.iterdir() if BDF.match(c.name)]
        assert children and all(int(c[5:7], 16) == secondary for c in children)
        assert (dev / "pci_bus" / f"0000:{secondary:02x}").is_dir()
        below = [p.name for p in walk(dev) if BDF.match(p.name) and not p.is_symlink()]
        assert all(secondary <= int(b[5:7], 16) <= subordinate for b in below)


@pytest.mark.parametrize("name", MACHINES)
def test_pci_function_attributes(roots: dict[str, Path], name: str) -> None:
    root = roots[name]
    for bdf in pci_functions(root):
        base = f"sys/bus/pci/devices/{bdf}"
        for field in ("vendor", "device", "subsystem_vendor", "subsystem_device"):
            value = attr(root, f"{base}/{field}")
            assert len(value) == 6 and value == value.lower() and value.startswith("0x")
        assert len(attr(root, f"{base}/class")) == 8
        uevent = dict(line.split("=", 1) for line in read(root, f"{base}/uevent").splitlines())
        assert uevent["PCI_SLOT_NAME"] == bdf
        assert uevent["PCI_ID"] == (
            f"{attr(root, f'{base}/vendor')[2:]}:{attr(root, f'{base}/device')[2:]}".upper()
        )
        driver = root / base / "driver"
        assert uevent.get("DRIVER") == (
            os.path.basename(os.readlink(driver)) if driver.is_symlink() else None
        )
        if (root / base / "current_link_speed").exists():
            assert attr(root, f"{base}/max_link_speed").endswith(" GT/s PCIe")
            assert int(attr(root, f"{base}/current_link_width")) <= int(
                attr(root, f"{base}/max_link_width")
            )


@pytest.mark.parametrize("name", MACHINES)
def test_nvme_strings_are_space_padded(roots: dict[str, Path], name: str) -> None:
    root = roots[name]
    controllers = os.listdir(root / "sys/class/nvme")
    assert controllers
    for ctrl in controllers:
        base = f"sys/class/nvme/{ctrl}"
        for field, width in (("model", 40), ("serial", 20), ("firmware_rev", 8)):
            raw = read(root, f"{base}/{field}")
            assert len(raw) == width + 1 and raw.endswith("\n"), (ctrl, field, raw)
            assert raw[:-1] == raw[:-1].strip().ljust(width)
        assert attr(root, f"{base}/transport") == "pcie"
        assert attr(root, f"{base}/state") == "live"
        address = attr(root, f"{base}/address")
        assert os.path.basename(os.path.realpath(root / base / "device")) == address


def test_cpu_node_has_nothing_nvidia(roots: dict[str, Path]) -> None:
    root = roots["cpu-node"]
    vendors = {attr(root, f"sys/bus/pci/devices/{f}/vendor") for f in pci_functions(root)}
    assert "0x10de" not in vendors
    assert not (root / "proc/driver/nvidia").exists()
    assert not (root / ".nodeagent/probes/nvml.json").exists()
    assert gpus(root) == []  # the ASPEED VGA is not an NVIDIA GPU


# ---------------------------------------------------------------- DGX H100


def test_dgx_links_are_spelled_like_the_kernel(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    module = "pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0"
    assert os.readlink(root / "sys/bus/pci/devices/0000:18:00.0") == f"../../../devices/{module}"
    assert os.readlink(root / "sys/class/net/ibp24s0") == f"../../devices/{module}/net/ibp24s0"
    assert os.readlink(root / "sys/class/infiniband/mlx5_0") == (
        f"../../devices/{module}/infiniband/mlx5_0"
    )
    assert os.readlink(root / f"sys/devices/{module}/infiniband/mlx5_0/device") == (
        "../../../0000:18:00.0"
    )
    gpu = root / "sys/bus/pci/devices/0000:1b:00.0"
    depth = len(os.path.relpath(os.path.realpath(gpu), os.path.realpath(root)).split("/"))
    assert os.readlink(gpu / "driver") == "../" * (depth - 1) + "bus/pci/drivers/nvidia"
    assert os.readlink(root / "sys/class/dmi/id") == "../../devices/virtual/dmi/id"
    assert os.readlink(root / "sys/block/nvme0n1") == (
        "../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    )


def test_dgx_topology_reproduces_nvidia_smi_topo(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    rows = topo_fixture("nvidia-smi-topo-m_DGX-H100_12nic.txt")
    device = {f"GPU{i}": bdf for i, bdf in enumerate(gpus(root))}
    device |= {f"NIC{k}": ibdev_address(root, f"mlx5_{k}") for k in range(12)}
    assert list(device.values())[:8] == [f"0000:{b}:00.0" for b in DGX_GPU_BUSES]
    checked = 0
    for row, cells in rows.items():
        for col, expected in cells.items():
            if col not in device or col == row:
                continue
            if row.startswith("GPU") and col.startswith("GPU"):  # NV18; the PCIe level below
                same_socket = cells["CPU Affinity"] == rows[col]["CPU Affinity"]
                expected = "NODE" if same_socket else "SYS"
            assert level(root, device[row], device[col]) == expected, (row, col)
            checked += 1
    assert checked == 20 * 19


def test_dgx_pci_layout(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    dev = "sys/bus/pci/devices"
    for i, bus in enumerate(DGX_GPU_BUSES):
        base = f"{dev}/0000:{bus}:00.0"
        assert attr(root, f"{base}/device") == "0x2330"
        assert attr(root, f"{base}/subsystem_device") == "0x16c1"
        assert attr(root, f"{base}/class") == "0x030200"
        assert attr(root, f"{base}/revision") == "0xa1"
        assert attr(root, f"{base}/numa_node") == str(i // 4)
        assert attr(root, f"{base}/local_cpulist") == ("0-55,112-167", "56-111,168-223")[i // 4]
        assert attr(root, f"{base}/current_link_speed") == "32.0 GT/s PCIe"
        assert attr(root, f"{base}/current_link_width") == "16"
    bridges = [f for f in pci_functions(root) if attr(root, f"{dev}/{f}/device") == "0x1979"]
    assert len(bridges) == 8 * 5
    nvswitches = [f for f in pci_functions(root) if attr(root, f"{dev}/{f}/device") == "0x22a3"]
    assert nvswitches == [f"0000:0{b}:00.0" for b in "5678"]
    assert all(attr(root, f"{dev}/{f}/class") == "0x068000" for f in nvswitches)
    assert attr(root, f"{dev}/0000:0a:00.0/class") == "0x030000"  # BMC VGA, not a GPU


def test_dgx_rdma_devices(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    ib = "sys/class/infiniband"
    assert sorted(os.listdir(root / ib), key=lambda n: int(n[5:])) == [
        f"mlx5_{k}" for k in range(12)
    ]
    guids = set()
    for k in range(12):
        port = f"{ib}/mlx5_{k}/ports/1"
        guids.add(attr(root, f"{ib}/mlx5_{k}/node_guid"))
        assert attr(root, f"{ib}/mlx5_{k}/hca_type") == "MT4129"
        assert attr(root, f"{ib}/mlx5_{k}/fw_ver") == "28.39.1002"
        assert attr(root, f"{port}/state") == "4: ACTIVE"
        ethernet = k in (2, 8)
        assert attr(root, f"{port}/link_layer") == ("Ethernet" if ethernet else "InfiniBand")
        assert attr(root, f"{port}/rate") == (
            "200 Gb/sec (4X HDR)" if ethernet else "400 Gb/sec (4X NDR)"
        )
        assert (attr(root, f"{port}/lid") == "0x0") is ethernet
    assert len(guids) == 12
    assert attr(root, f"{ib}/mlx5_0/node_guid") == "a088:c203:00b2:5c6e"
    assert attr(root, f"{ib}/mlx5_0/ports/1/gids/0") == "fe80:0000:0000:0000:a088:c203:00b2:5c6e"
    assert attr(root, f"{ib}/mlx5_2/ports/1/gid_attrs/ndevs/0") == "enp41s0f1np1"
    assert attr(root, f"{ib}/mlx5_2/ports/1/gid_attrs/types/1") == "RoCE v2"
    assert os.listdir(root / f"{ib}/mlx5_0/device/net") == ["ibp24s0"]
    net = root / "sys/class/net/ibp24s0"
    assert (
        attr(root, "sys/class/net/ibp24s0/type"),
        len(attr(root, "sys/class/net/ibp24s0/address").split(":")),
    ) == ("32", 20)
    assert net.joinpath("addr_len").read_text() == "20\n"
    operstates = [
        attr(root, f"sys/class/net/ibp{int(b, 16)}s0/operstate")
        for b in ("18", "40", "4f", "5e", "9a", "c0", "ce", "dc")
    ]
    assert operstates.count("up") == operstates.count("down") == 4
    assert not (root / "sys/class/net/ens6f1/speed").exists()  # EINVAL when down
    assert attr(root, "sys/class/net/ens6f0/speed") == "100000"
    assert attr(root, "sys/class/net/lo/type") == "772"
    assert not (root / "sys/class/net/lo/device").exists()


def test_dgx_nvme_native_multipath(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    assert len(os.listdir(root / "sys/class/nvme")) == 10
    ctrl = root / "sys/class/nvme/nvme2"
    subsystems = [p.parent.name for p in (root / "sys/class/nvme-subsystem").glob("*/nvme2")]
    assert subsystems == ["nvme-subsys3"]
    assert (ctrl / "nvme3c2n1").is_dir() and not (ctrl / "nvme2n1").exists()
    head = root / "sys/devices/virtual/nvme-subsystem/nvme-subsys3/nvme3n1"
    assert os.path.realpath(root / "sys/block/nvme3n1") == os.path.realpath(head)
    assert attr(root, "sys/block/nvme3n1/size") == "7501476528"
    assert attr(root, "sys/block/nvme0n1/size") == "3750748848"
    assert attr(root, "sys/block/nvme0n1/queue/logical_block_size") == "512"
    assert attr(root, "sys/class/nvme/nvme0/model") == "SAMSUNG MZ1L21T9HCLS-00A07"


def test_dgx_system_files(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    assert attr(root, "sys/class/dmi/id/sys_vendor") == "NVIDIA"
    assert attr(root, "sys/class/dmi/id/product_name") == "DGXH100"
    cpuinfo = read(root, "proc/cpuinfo").strip().split("\n\n")
    assert len(cpuinfo) == 224
    assert "model name\t: Intel(R) Xeon(R) Platinum 8480C\n" in cpuinfo[0]
    assert "physical id\t: 1\n" in cpuinfo[56] and "core id\t\t: 0\n" in cpuinfo[56]
    cpu = "sys/devices/system/cpu"
    assert attr(root, f"{cpu}/online") == "0-223"
    assert attr(root, f"{cpu}/cpu0/topology/thread_siblings_list") == "0,112"
    assert attr(root, f"{cpu}/cpu168/topology/physical_package_id") == "1"
    assert attr(root, f"{cpu}/cpu5/cpufreq/scaling_driver") == "intel_pstate"
    node = "sys/devices/system/node"
    assert attr(root, f"{node}/online") == "0-1"
    assert attr(root, f"{node}/node1/cpulist") == "56-111,168-223"
    assert attr(root, f"{node}/node0/distance") == "10 21"
    assert read(root, f"{node}/node0/meminfo").startswith("Node 0 MemTotal:       1056429832 kB\n")
    assert "Hugepagesize:       2048 kB\n" in read(root, "proc/meminfo")
    assert read(root, "proc/meminfo").startswith("MemTotal:       2112859664 kB\n")
    assert attr(root, "sys/kernel/mm/transparent_hugepage/enabled") == "always [madvise] never"
    assert 'VERSION_ID="22.04"' in read(root, "etc/os-release")
    assert attr(root, "proc/sys/kernel/hostname") == "dgx-h100-01"
    assert "nvidia 54005760 " in read(root, "proc/modules")


def label(line: str) -> str:
    """`Model: \t\t ` of `Model: \t\t NVIDIA H100 80GB HBM3`: the key and its exact padding."""
    key, _, value = line.partition(":")
    padding = len(value) - len(value.lstrip(" \t"))
    return f"{key}:{value[:padding]}"


def test_dgx_nvidia_procfs_and_recording(roots: dict[str, Path]) -> None:
    root = roots["dgx-h100"]
    version = read(root, "proc/driver/nvidia/version")
    assert version.startswith(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  565.57.01  "
    )
    rec = json.loads(read(root, ".nodeagent/probes/nvml.json"))
    assert rec["driver_version"] == "565.57.01" and rec["cuda_driver_version"] == "12.7"
    assert [d["pci_bus_id"] for d in rec["devices"]] == [f"0000:{b}:00.0" for b in DGX_GPU_BUSES]
    assert all(d["nvlink_states"] == [True] * 18 for d in rec["devices"])
    template = resources.files("testbed").joinpath(
        "data", "proc_driver_nvidia_gpus_information_H100.tabs"
    )
    real_layout = [label(line) for line in template.read_text().splitlines()]
    for device in rec["devices"]:
        info = read(root, f"proc/driver/nvidia/gpus/{device['pci_bus_id']}/information")
        layout = [label(line) for line in info.splitlines()]
        assert layout == real_layout
        fields = {k: v.strip() for k, v in (line.split(":", 1) for line in info.splitlines())}
        assert fields["Model"] == device["name"] == "NVIDIA H100 80GB HBM3"
        assert fields["GPU UUID"] == device["uuid"]
        assert fields["Video BIOS"] == device["vbios_version"]
        assert fields["Bus Location"] == device["pci_bus_id"]


def test_driver_not_loaded(tmp_path: Path) -> None:
    root = build_machine("dgx-h100", tmp_path / "root", driver=False)
    assert not (root / "proc/driver/nvidia").exists()
    assert not (root / "sys/bus/pci/devices/0000:1b:00.0/driver").exists()
    assert not (root / "sys/bus/pci/drivers/nvidia").exists()
    assert "DRIVER=" not in read(root, "sys/bus/pci/devices/0000:1b:00.0/uevent")
    assert (root / "sys/bus/pci/devices/0000:18:00.0/driver").is_symlink()  # mlx5_core stays
    assert "nvidia" not in read(root, "proc/modules")
    rec = json.loads(read(root, ".nodeagent/probes/nvml.json"))
    assert (rec["available"], rec["error"], rec["devices"]) == (False, "Driver Not Loaded", [])


def test_without_nvml_recording(tmp_path: Path) -> None:
    root = build_machine("dgx-h100", tmp_path / "root", nvml=False)
    assert not (root / ".nodeagent/probes/nvml.json").exists()
    assert (root / "proc/driver/nvidia/gpus/0000:1b:00.0/information").exists()


def test_build_refuses_a_non_empty_directory_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "stray").write_text("x")
    with pytest.raises(FileExistsError):
        build_machine("cpu-node", tmp_path)
    with pytest.raises(ValueError, match="dgx-h100"):
        build_machine("dgx-a100", tmp_path / "new")


def test_dgx_builds_fast(tmp_path: Path) -> None:
    """Times the builder, not the disk: on tmpfs where there is one."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        start = time.perf_counter()
        build_machine("dgx-h100", Path(scratch) / "root")
        elapsed = time.perf_counter() - start
    assert elapsed < 1.0


# ---------------------------------------------------------------- OCI BM.GPU.H100.8


def test_oci_topology_follows_the_hgx_reference(roots: dict[str, Path]) -> None:
    """GPU i <-> the NICs of GPU j as on the HPE XD670, whose GPU j pairs with one NIC."""
    root = roots["oci-bm-gpu-h100-8"]
    rows = topo_fixture("nvidia-smi-topo-m_HPE-XD670_HGX-H100x8_12nic.txt")
    paired = [next(c for c, v in rows[f"GPU{j}"].items() if v == "PIX") for j in range(8)]
    devices = gpus(root)
    assert devices == [f"0000:{b}:00.0" for b in OCI_GPU_BUSES]
    for i, gpu in enumerate(devices):
        for j in range(8):
            expected = rows[f"GPU{i}"][paired[j]]
            for nic in (f"mlx5_{2 * j}", f"mlx5_{2 * j + 1}"):
                assert level(root, gpu, ibdev_address(root, nic)) == expected, (i, nic)
        front_end = level(root, gpu, ibdev_address(root, "mlx5_16"))
        assert front_end == ("SYS" if i < 4 else "NODE")
    assert level(root, devices[0], devices[1]) == "PXB"
    assert level(root, devices[0], devices[2]) == "NODE"


def test_oci_rdma_and_storage(roots: dict[str, Path]) -> None:
    root = roots["oci-bm-gpu-h100-8"]
    ib = "sys/class/infiniband"
    assert len(os.listdir(root / ib)) == 17
    addresses = [ibdev_address(root, f"mlx5_{k}") for k in range(17)]
    assert addresses == sorted(addresses)  # named in bus order
    for k in range(16):
        assert attr(root, f"{ib}/mlx5_{k}/ports/1/link_layer") == "Ethernet"
        assert attr(root, f"{ib}/mlx5_{k}/ports/1/rate") == "200 Gb/sec (4X HDR)"
        assert os.listdir(root / f"{ib}/mlx5_{k}/device/net") == [f"rdma{k}"]
        assert attr(root, f"sys/class/net/rdma{k}/speed") == "200000"
    assert attr(root, f"{ib}/mlx5_16/hca_type") == "MT4125"
    assert len(os.listdir(root / "sys/class/nvme")) == 16
    for c in range(16):
        ctrl = root / f"sys/class/nvme/nvme{c}"
        assert (ctrl / f"nvme{c}n1").is_dir()
        assert attr(root, f"sys/block/nvme{c}n1/size") == "7501476528"
        assert attr(root, f"sys/block/nvme{c}n1/queue/logical_block_size") == "4096"
    assert not (root / "sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1").exists()
    oci = json.loads(read(root, ".nodeagent/probes/oci.json"))
    assert oci["probe"] == "oci" and oci["version"] == 1
    assert oci["rdmaTopologyData"]["customerLocalBlock"][-11:] == "v5xpuyqcnp7nxaaiz"[-11:]
    nvml = json.loads(read(root, ".nodeagent/probes/nvml.json"))
    assert [d["pci_bus_id"] for d in nvml["devices"]] == [f"0000:{b}:00.0" for b in OCI_GPU_BUSES]
    assert attr(root, "sys/class/dmi/id/chassis_asset_tag") == "OracleCloud.com"


# ---------------------------------------------------------------- RTX PRO 6000


def test_rtx_pro_6000_quirks(roots: dict[str, Path]) -> None:
    root = roots["rtx-pro-6000"]
    devices = gpus(root)
    assert len(devices) == 8
    dev = "sys/bus/pci/devices"
    assert all(attr(root, f"{dev}/{g}/device") == "0x2bb5" for g in devices)
    widths = [attr(root, f"{dev}/{g}/current_link_width") for g in devices]
    assert widths == ["16"] * 5 + ["8"] + ["16"] * 2
    assert all(attr(root, f"{dev}/{g}/max_link_width") == "16" for g in devices)
    numa = [attr(root, f"{dev}/{g}/numa_node") for g in devices]
    assert numa == ["0"] * 4 + ["1", "1", "-1", "1"]
    assert attr(root, f"{dev}/{devices[6]}/local_cpulist") == "64-127,192-255"
    assert attr(root, "sys/devices/system/node/node1/cpulist") == "64-127,192-255"
    vga = [f for f in pci_functions(root) if attr(root, f"{dev}/{f}/class") == "0x030000"]
    assert [attr(root, f"{dev}/{f}/vendor") for f in vga] == ["0x1a03"]
    assert not (root / f"{dev}/{vga[0]}/current_link_speed").exists()  # conventional PCI
    assert not (root / ".nodeagent/probes/nvml.json").exists()
    info = read(root, f"proc/driver/nvidia/gpus/{devices[0]}/information")
    assert info.startswith("Model: \t\t NVIDIA RTX PRO 6000 Blackwell Server Edition\n")
    ib = "sys/class/infiniband"
    assert sorted(os.listdir(root / ib)) == ["mlx5_0", "mlx5_1"]
    assert attr(root, f"{ib}/mlx5_0/hca_type") == "MT41692"
    assert attr(root, f"{ib}/mlx5_0/ports/1/rate") == "400 Gb/sec (4X NDR)"
    assert level(root, devices[0], ibdev_address(root, "mlx5_0")) == "PIX"
    assert level(root, devices[2], ibdev_address(root, "mlx5_0")) == "NODE"
    assert level(root, devices[6], ibdev_address(root, "mlx5_0")) == "SYS"
    assert len(os.listdir(root / "sys/class/nvme")) == 4


# ---------------------------------------------------------------- expected counts

# name: (GPUs, NVSwitches, RDMA devices, NVMe controllers, netdevs incl. lo, logical CPUs)
COUNTS = {
    "dgx-h100": (8, 4, 12, 10, 16, 224),
    "oci-bm-gpu-h100-8": (8, 4, 17, 16, 18, 224),
    "rtx-pro-6000": (8, 0, 2, 4, 3, 256),
    "cpu-node": (0, 0, 2, 2, 3, 192),
    "rtx-pro-2-8-5-200": (8, 0, 5, 4, 6, 256),
    "hgx-b200-2-8-9-400": (8, 0, 9, 10, 10, 224),
}


@pytest.mark.parametrize("name", MACHINES)
def test_counts(roots: dict[str, Path], name: str) -> None:
    root = roots[name]
    dev = "sys/bus/pci/devices"
    nvswitches = [f for f in pci_functions(root) if attr(root, f"{dev}/{f}/class") == "0x068000"]
    found = (
        len(gpus(root)),
        len(nvswitches),
        len(os.listdir(root / "sys/class/infiniband"))
        if (root / "sys/class/infiniband").exists()
        else 0,
        len(os.listdir(root / "sys/class/nvme")),
        len(os.listdir(root / "sys/class/net")),
        read(root, "proc/cpuinfo").count("processor\t:"),
    )
    assert found == COUNTS[name]
