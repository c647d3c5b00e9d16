"""NVSwitches: NVIDIA functions of class 0x0680 (bridge, other) on Hopper and Ampere boards.

HGX B200 switch chips are not on the host PCI bus; the NVML fabric state of the
GPUs tells about them instead.
"""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import pci_ids
from nodeagent.hardware.scan import Scan


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    for fn in sorted(scan.pci().values(), key=lambda f: f.address):
        if fn.vendor != pci_ids.NVIDIA or not fn.pci_class.startswith("0680"):
            continue
        try:
            inv.nvswitches.append(
                pb.NvSwitch(
                    pci_address=fn.address,
                    numa_node=scan.numa_node(fn.sysfs),
                    vendor_id=fn.vendor,
                    pci_device_id=fn.device,
                    model=pci_ids.NVIDIA_NVSWITCHES.get(fn.device, f"NVSwitch {fn.device}"),
                    driver=fn.driver,
                    pcie=scan.pcie_link(fn.sysfs),
                )
            )
        except (OSError, ValueError) as exc:
            errors.append(f"{fn.address}: {exc}")
