"""The label maps of the modelled servers, key by key.

Every expected value is worked out here from the machine's description and the owning
tool's formula, not copied from the code's output.
"""

from __future__ import annotations

from tests.labels.conftest import LabelsOf

NFD = "feature.node.kubernetes.io"
PLACEHOLDER_TOPOLOGY = {
    "topology.nodeagent.io/fabric": "unknown",
    "topology.nodeagent.io/tier-2": "unknown",
    "topology.nodeagent.io/tier-1": "unknown",
    "topology.nodeagent.io/tier-0": "unknown",
}


def gfd_versions(driver: str, cuda: str | None) -> dict[str, str]:
    major, minor, rev = driver.split(".")
    out = {
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev,
        "nvidia.com/cuda.driver-version.full": driver,
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
    }
    if cuda:
        cmajor, cminor = cuda.split(".")
        out |= {
            "nvidia.com/cuda.runtime-version.major": cmajor,
            "nvidia.com/cuda.runtime-version.minor": cminor,
            "nvidia.com/cuda.runtime-version.full": cuda,
            "nvidia.com/cuda.runtime.major": cmajor,
            "nvidia.com/cuda.runtime.minor": cminor,
        }
    return out


H100_GFD = {
    # NVML name "NVIDIA H100 80GB HBM3", spaces -> "-"
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.count": "8",
    # NVML total 85520809984 bytes / 2^20
    "nvidia.com/gpu.memory": "81559",
    # compute capability 9.0 -> hopper
    "nvidia.com/gpu.family": "hopper",
    "nvidia.com/gpu.compute.major": "9",
    "nvidia.com/gpu.compute.minor": "0",
    # all GPUs class 0x030200
    "nvidia.com/gpu.mode": "compute",
    **gfd_versions("565.57.01", "12.7"),
}
H100_OWN = {
    "gpu.nodeagent.io/vendor": "nvidia",
    "gpu.nodeagent.io/model": "NVIDIA-H100-80GB-HBM3",
    "gpu.nodeagent.io/count": "8",
    "gpu.nodeagent.io/memory-mib": "81559",
    "gpu.nodeagent.io/family": "hopper",
    "gpu.nodeagent.io/nvswitch": "true",
    "rdma.nodeagent.io/present": "true",
    "rdma.nodeagent.io/nic-model": "ConnectX-7",
    "rdma.nodeagent.io/degraded": "false",
    "cpu.nodeagent.io/sockets": "2",
    "cpu.nodeagent.io/numa-nodes": "2",
    # each GPU sits behind a PCIe switch with its NIC (topo -m PXB on DGX, PIX on OCI)
    "pcie.nodeagent.io/gpu-nic-aligned": "true",
}


def test_dgx_h100(labels_of: LabelsOf) -> None:
    assert labels_of("dgx-h100") == {
        # NFD default whitelist (03, 0b40, 12) -> class_vendor: H100 0302, BMC VGA 0300
        f"{NFD}/pci-0302_10de.present": "true",
        f"{NFD}/pci-0300_1a03.present": "true",
        # GPU Operator whitelist (02, 0200, 0207, 0300, 0302) -> vendor: ConnectX-7 IB
        # 0207 and Ethernet 0200, E810/X550 0200, H100 0302, BMC VGA 0300
        f"{NFD}/pci-10de.present": "true",
        f"{NFD}/pci-15b3.present": "true",
        f"{NFD}/pci-8086.present": "true",
        f"{NFD}/pci-1a03.present": "true",
        # a 15b3 function exists; rdma_ucm is not loaded, so no rdma.available
        f"{NFD}/rdma.capable": "true",
        **H100_GFD,
        # DMI product_name "DGXH100"
        "nvidia.com/gpu.machine": "DGXH100",
        **H100_OWN,
        # compute rails: the 8 ConnectX-7 next to the GPUs (mlx5_0,3,4,5,6,9,10,11),
        # not the storage pair (mlx5_1,2,7,8); all InfiniBand NDR, ACTIVE
        "rdma.nodeagent.io/link-layer": "infiniband",
        "rdma.nodeagent.io/rails": "8",
        "rdma.nodeagent.io/rails-active": "8",
        "rdma.nodeagent.io/rate-gbps": "400",
        # no fabric recording in this root: every level present, as a placeholder
        **PLACEHOLDER_TOPOLOGY,
        # 2 boot PM9A3 (1920383410176 B) + 8 data PM1733 (3840755982336 B), decimal GB
        "storage.nodeagent.io/nvme-count": "10",
        "storage.nodeagent.io/nvme-capacity-gb": "34566",
    }


def test_oci_bm_gpu_h100_8(labels_of: LabelsOf) -> None:
    assert labels_of("oci-bm-gpu-h100-8") == {
        f"{NFD}/pci-0302_10de.present": "true",
        f"{NFD}/pci-0300_1a03.present": "true",
        f"{NFD}/pci-10de.present": "true",
        f"{NFD}/pci-15b3.present": "true",
        f"{NFD}/pci-1a03.present": "true",
        f"{NFD}/rdma.capable": "true",
        **H100_GFD,
        # DMI product_name "BM.GPU.H100.8": dots are kept
        "nvidia.com/gpu.machine": "BM.GPU.H100.8",
        # rdmaTopologyData OCIDs, last 11 characters
        "oci.oraclecloud.com/rdma.hpc_island_id": "aeycajoqlss",
        "oci.oraclecloud.com/rdma.network_block_id": "qc4pbhxoqqf",
        "oci.oraclecloud.com/rdma.local_block_id": "qcnp7nxaaiz",
        "oci.oraclecloud.com/rdma.host_id": "qcm4vjkwmwf",
        **H100_OWN,
        # 16 RoCE ports next to the GPUs (2 per GPU, 200 Gb/s), not the CX-6 Dx front end
        "rdma.nodeagent.io/link-layer": "ethernet",
        "rdma.nodeagent.io/rails": "16",
        "rdma.nodeagent.io/rails-active": "16",
        "rdma.nodeagent.io/rate-gbps": "200",
        # cloud placement: island = tier-2, network block = tier-1, local block = tier-0
        "topology.nodeagent.io/fabric": "unknown",
        "topology.nodeagent.io/tier-2": "aeycajoqlss",
        "topology.nodeagent.io/tier-1": "qc4pbhxoqqf",
        "topology.nodeagent.io/tier-0": "qcnp7nxaaiz",
        # 16 PM1733 of 3840755982336 B
        "storage.nodeagent.io/nvme-count": "16",
        "storage.nodeagent.io/nvme-capacity-gb": "61452",
    }


def test_rtx_pro_6000(labels_of: LabelsOf) -> None:
    model = "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition"
    assert labels_of("rtx-pro-6000") == {
        f"{NFD}/pci-0302_10de.present": "true",
        f"{NFD}/pci-0300_1a03.present": "true",
        f"{NFD}/pci-10de.present": "true",
        f"{NFD}/pci-15b3.present": "true",
        f"{NFD}/pci-1a03.present": "true",
        f"{NFD}/rdma.capable": "true",
        # No NVML recording: no memory and no CUDA version (GFD could not write them
        # either); the name comes from the driver's procfs file, CC 12.0 from the PCI id
        "nvidia.com/gpu.product": model,
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.family": "blackwell",
        "nvidia.com/gpu.compute.major": "12",
        "nvidia.com/gpu.compute.minor": "0",
        "nvidia.com/gpu.mode": "compute",
        # "AS -5126GS-TNRT": strings.Fields splits at the space, joined by "-"
        "nvidia.com/gpu.machine": "AS--5126GS-TNRT",
        **gfd_versions("580.65.06", None),
        "gpu.nodeagent.io/vendor": "nvidia",
        "gpu.nodeagent.io/model": model,
        "gpu.nodeagent.io/count": "8",
        "gpu.nodeagent.io/family": "blackwell",
        "gpu.nodeagent.io/nvswitch": "false",
        # two BlueField-3 SuperNICs, 400 Gb/s Ethernet, nearest to GPUs 0,1 and 4,5
        "rdma.nodeagent.io/present": "true",
        "rdma.nodeagent.io/link-layer": "ethernet",
        "rdma.nodeagent.io/rails": "2",
        "rdma.nodeagent.io/rails-active": "2",
        "rdma.nodeagent.io/rate-gbps": "400",
        "rdma.nodeagent.io/nic-model": "BlueField-3",
        "rdma.nodeagent.io/degraded": "false",
        **PLACEHOLDER_TOPOLOGY,
        # 4 Micron 7450 of 7501476528 x 512 B
        "storage.nodeagent.io/nvme-count": "4",
        "storage.nodeagent.io/nvme-capacity-gb": "15363",
        "cpu.nodeagent.io/sockets": "2",
        "cpu.nodeagent.io/numa-nodes": "2",
        # GPUs 2,3,6,7 have no NIC on their PCIe switch
        "pcie.nodeagent.io/gpu-nic-aligned": "false",
    }


def test_cpu_node(labels_of: LabelsOf) -> None:
    assert labels_of("cpu-node") == {
        f"{NFD}/pci-0300_1a03.present": "true",
        f"{NFD}/pci-15b3.present": "true",
        f"{NFD}/pci-1a03.present": "true",
        f"{NFD}/rdma.capable": "true",
        "gpu.nodeagent.io/count": "0",
        # no GPU: every ACTIVE RDMA port is a compute rail
        "rdma.nodeagent.io/present": "true",
        "rdma.nodeagent.io/link-layer": "ethernet",
        "rdma.nodeagent.io/rails": "2",
        "rdma.nodeagent.io/rails-active": "2",
        "rdma.nodeagent.io/rate-gbps": "100",
        "rdma.nodeagent.io/nic-model": "ConnectX-6-Dx",
        "rdma.nodeagent.io/degraded": "false",
        **PLACEHOLDER_TOPOLOGY,
        "storage.nodeagent.io/nvme-count": "2",
        "storage.nodeagent.io/nvme-capacity-gb": "3840",
        "cpu.nodeagent.io/sockets": "1",
        "cpu.nodeagent.io/numa-nodes": "1",
    }
