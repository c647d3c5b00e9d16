"""GPUs and other accelerators, found by PCI class and vendor.

Not /sys/class/drm (absent for headless datacenter GPUs without nvidia-drm) and
not an allow-list of device ids: every display (0x03xx) or processing
accelerator (0x12xx) function is a GPU, except the BMC and virtual consoles that
every server has. The name comes from the driver's procfs file when loaded, else
from the PCI id table, else the ids themselves; NVML refines it later.
"""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse, pci_ids
from nodeagent.hardware.scan import PciFunction, Scan

NVIDIA_PROCFS = "proc/driver/nvidia/gpus"
# Display functions that are consoles, not accelerators: ASPEED and Matrox BMC
# VGA, QEMU/Bochs, VMware, Cirrus, virtio and Red Hat virtual GPUs.
CONSOLE_VENDORS = {"1a03", "102b", "1234", "15ad", "1013", "1af4", "1b36", "19a2"}


def is_gpu(fn: PciFunction) -> bool:
    if fn.pci_class.startswith("12"):
        return True
    return fn.pci_class.startswith("03") and fn.vendor not in CONSOLE_VENDORS


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    counters: dict[str, int] = {}
    for fn in sorted(scan.pci().values(), key=lambda f: f.address):
        if not is_gpu(fn):
            continue
        try:
            gpu = _gpu(scan, fn)
        except (OSError, ValueError) as exc:
            errors.append(f"{fn.address}: {exc}")
            gpu = pb.Gpu(
                pci_address=fn.address,
                vendor_id=fn.vendor,
                pci_device_id=fn.device,
                numa_node=-1,
                health=pb.HEALTH_UNSPECIFIED,
            )
            gpu.health_reasons.append(f"sysfs unreadable: {exc}")
        gpu.index = counters.get(gpu.vendor, 0)
        counters[gpu.vendor] = gpu.index + 1
        inv.gpus.append(gpu)


def _gpu(scan: Scan, fn: PciFunction) -> pb.Gpu:
    root = scan.root
    gpu = pb.Gpu(
        pci_address=fn.address,
        vendor=pci_ids.ACCELERATOR_VENDORS.get(fn.vendor, fn.vendor),
        vendor_id=fn.vendor,
        pci_device_id=fn.device,
        pci_subsystem_id=fn.subsystem,
        pci_class=fn.pci_class,
        driver=fn.driver,
    )
    gpu.cpu_affinity = root.attr(f"{fn.sysfs}/local_cpulist")
    gpu.numa_node = scan.numa_node(fn.sysfs, gpu.cpu_affinity)
    gpu.pcie.CopyFrom(scan.pcie_link(fn.sysfs, speed_counts=False))

    known = pci_ids.gpu_model(fn.vendor, fn.device)
    if known:
        gpu.model, gpu.model_source = known.name, "pci-table"
        gpu.architecture, gpu.compute_capability = known.architecture, known.compute_capability
    else:
        gpu.model, gpu.model_source = f"{fn.vendor}:{fn.device}", "pci-id"

    info_path = f"{NVIDIA_PROCFS}/{fn.address}/information"
    if fn.vendor == pci_ids.NVIDIA and root.exists(info_path):
        info = parse.parse_key_values(root.read_text(info_path))
        if info.get("Model"):
            gpu.model, gpu.model_source = info["Model"], "procfs"
        gpu.uuid = info.get("GPU UUID", "")
        gpu.vbios_version = info.get("Video BIOS", "")
        if info.get("GPU Excluded", "No").lower().startswith("y"):
            gpu.health_reasons.append("excluded by the NVIDIA driver")

    if gpu.pcie.degraded:
        gpu.health_reasons.append(f"PCIe link x{gpu.pcie.current_width} of x{gpu.pcie.max_width}")
    if gpu.health_reasons:
        gpu.health = pb.HEALTH_DEGRADED
    return gpu
