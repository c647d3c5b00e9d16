"""The PCI bus listing every PCI-based collector shares.

Listed first, as a collector of its own, so that a function whose sysfs entry is
unreadable (a dangling link, garbage ids) is reported once, here, rather than
silently missing from whichever device class it belonged to.
"""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.scan import Scan


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    scan.pci()
    errors.extend(
        f"{address}: PCI function unreadable (no vendor/class; dangling link or missing files)"
        for address in scan.unreadable_pci
    )
