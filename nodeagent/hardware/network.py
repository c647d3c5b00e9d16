"""Network interfaces from /sys/class/net.

sysfs is read on every root, the live one included: it has everything here
(the PCI parent, driver, NUMA node, speed) and costs no import, while pyroute2
alone takes longer to import than a whole discovery (see docs/discovery.md).
"""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

NET_CLASS = "sys/class/net"
_KINDS = {1: "ethernet", 32: "infiniband", 772: "loopback"}


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    inv.network_interfaces.extend(
        scan.each_entry(NET_CLASS, lambda name: _interface(scan, name, errors), errors)
    )


def _int_attr(scan: Scan, rel: str, errors: list[str]) -> int:
    """A numeric attribute; garbage is reported and reads as 0 so the interface still shows."""
    text = scan.root.attr(rel)
    try:
        return parse.parse_int(text, rel) if text else 0
    except ValueError as exc:
        errors.append(str(exc))
        return 0


def _interface(scan: Scan, name: str, errors: list[str]) -> pb.NetworkInterface:
    root = scan.root
    base = f"{NET_CLASS}/{name}"
    nic = pb.NetworkInterface(name=name, numa_node=-1)
    nic.mac = root.attr(f"{base}/address").lower()
    nic.mtu = _int_attr(scan, f"{base}/mtu", errors)
    nic.operstate = root.attr(f"{base}/operstate")
    nic.kind = _KINDS.get(_int_attr(scan, f"{base}/type", errors), "other")
    nic.carrier = root.attr(f"{base}/carrier") == "1"  # EINVAL while down
    speed = root.attr(f"{base}/speed")  # EINVAL while down, -1 with no link
    if speed and speed.lstrip("-").isdigit() and int(speed) > 0:
        nic.speed_mbps = int(speed)
    parent = root.readlink_name(f"{base}/device")
    if not parent and root.exists(f"{base}/device"):
        nic.physical = True  # a captured tree may hold `device` as a plain directory
    elif parent:
        nic.physical = True
        nic.driver = root.readlink_name(f"{base}/device/driver")
        if not parse.is_bdf(parent):  # virtio0 and the like sit below their PCI function
            real = root.resolve(f"{base}/device").split("/")
            parent = next((p for p in reversed(real) if parse.is_bdf(p)), "")
        if parent:
            nic.pci_address = parent
            nic.numa_node = scan.numa_node(f"sys/bus/pci/devices/{parent}")
            ib = root.listdir(f"{base}/device/infiniband")
            nic.rdma_device = ib[0] if ib else ""
    return nic
