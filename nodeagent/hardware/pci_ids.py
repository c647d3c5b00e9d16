"""What a PCI id is, for the devices nodeagent must name without a driver.

The GPU table gives the name NVML would report (so a node reads the same with
or without the driver), its architecture and CUDA compute capability. Entries
come from pci.ids and published `nvidia-smi -q` output (see the repository's
reference notes); an id missing here still yields a GPU, named by its ids.
"""

from __future__ import annotations

from typing import NamedTuple

NVIDIA = "10de"
MELLANOX = "15b3"

# Vendors whose display/accelerator-class functions are compute devices. Server
# BMC consoles (ASPEED 1a03, Matrox 102b) are VGA too and must not count.
ACCELERATOR_VENDORS = {
    "10de": "nvidia",
    "1002": "amd",
    "8086": "intel",
    "1da3": "habana",
}


class GpuModel(NamedTuple):
    name: str  # as nvmlDeviceGetName returns it
    architecture: str
    compute_capability: str  # major.minor; "" for non-CUDA parts


NVIDIA_GPUS: dict[str, GpuModel] = {
    # Volta / Turing
    "1db1": GpuModel("Tesla V100-SXM2-16GB", "volta", "7.0"),
    "1db4": GpuModel("Tesla V100-PCIE-16GB", "volta", "7.0"),
    "1db5": GpuModel("Tesla V100-SXM2-32GB", "volta", "7.0"),
    "1eb8": GpuModel("Tesla T4", "turing", "7.5"),
    # Ampere
    "20b0": GpuModel("NVIDIA A100-SXM4-40GB", "ampere", "8.0"),
    "20b2": GpuModel("NVIDIA A100-SXM4-80GB", "ampere", "8.0"),
    "20b5": GpuModel("NVIDIA A100 80GB PCIe", "ampere", "8.0"),
    "20f1": GpuModel("NVIDIA A100-PCIE-40GB", "ampere", "8.0"),
    "20b7": GpuModel("NVIDIA A30", "ampere", "8.0"),
    "2235": GpuModel("NVIDIA A40", "ampere", "8.6"),
    "2236": GpuModel("NVIDIA A10", "ampere", "8.6"),
    # Ada Lovelace
    "26b5": GpuModel("NVIDIA L40", "ada-lovelace", "8.9"),
    "26b9": GpuModel("NVIDIA L40S", "ada-lovelace", "8.9"),
    "26ba": GpuModel("NVIDIA L20", "ada-lovelace", "8.9"),
    "27b8": GpuModel("NVIDIA L4", "ada-lovelace", "8.9"),
    # Hopper
    "2330": GpuModel("NVIDIA H100 80GB HBM3", "hopper", "9.0"),
    "2331": GpuModel("NVIDIA H100 PCIe", "hopper", "9.0"),
    "2321": GpuModel("NVIDIA H100 NVL", "hopper", "9.0"),
    "2322": GpuModel("NVIDIA H800 PCIe", "hopper", "9.0"),
    "2324": GpuModel("NVIDIA H800", "hopper", "9.0"),
    "2329": GpuModel("NVIDIA H20", "hopper", "9.0"),
    "2335": GpuModel("NVIDIA H200", "hopper", "9.0"),
    "233b": GpuModel("NVIDIA H200 NVL", "hopper", "9.0"),
    "2342": GpuModel("NVIDIA GH200 480GB", "hopper", "9.0"),
    # Blackwell
    "2901": GpuModel("NVIDIA B200", "blackwell", "10.0"),
    "29bc": GpuModel("NVIDIA B100", "blackwell", "10.0"),
    "2941": GpuModel("NVIDIA GB200", "blackwell", "10.0"),
    "3182": GpuModel("NVIDIA B300 SXM6 AC", "blackwell", "10.3"),
    "31c2": GpuModel("NVIDIA GB300", "blackwell", "10.3"),
    "2bb1": GpuModel("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "blackwell", "12.0"),
    "2bb5": GpuModel("NVIDIA RTX PRO 6000 Blackwell Server Edition", "blackwell", "12.0"),
}

NVIDIA_NVSWITCHES = {
    "1af1": "NVSwitch (Ampere)",
    "22a3": "NVSwitch (Hopper)",
}

# NVIDIA networking: PCI device id -> family. hca_type is "MT" + the decimal id.
MELLANOX_ADAPTERS = {
    "1003": "ConnectX-3",
    "1007": "ConnectX-3 Pro",
    "1013": "ConnectX-4",
    "1015": "ConnectX-4 Lx",
    "1016": "ConnectX-4 Lx VF",
    "1017": "ConnectX-5",
    "1018": "ConnectX-5 VF",
    "1019": "ConnectX-5 Ex",
    "101b": "ConnectX-6",
    "101c": "ConnectX-6 VF",
    "101d": "ConnectX-6 Dx",
    "101e": "ConnectX VF",
    "101f": "ConnectX-6 Lx",
    "1021": "ConnectX-7",
    "1023": "ConnectX-8",
    "a2d6": "BlueField-2",
    "a2dc": "BlueField-3",
}


def gpu_model(vendor_id: str, device_id: str) -> GpuModel | None:
    if vendor_id == NVIDIA:
        return NVIDIA_GPUS.get(device_id)
    return None


def mellanox_model(device_id: str, hca_type: str = "") -> str:
    """Adapter family from the PCI id, else from hca_type (`MT4129`)."""
    model = MELLANOX_ADAPTERS.get(device_id)
    if model:
        return model
    if hca_type.startswith("MT") and hca_type[2:].isdigit():
        return MELLANOX_ADAPTERS.get(f"{int(hca_type[2:]):04x}", "")
    return ""
