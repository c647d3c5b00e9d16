"""Shared, lazily read facts about a root that several collectors need.

The PCI bus is listed once per discovery (one `uevent` read per function gives
driver, class, ids and subsystem) and NUMA cpulists once, however many
collectors ask. Everything else a collector reads itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.host import HostReadError, HostRoot

PCI_DEVICES = "sys/bus/pci/devices"
T = TypeVar("T")


@dataclass
class PciFunction:
    """One PCI function as the bus lists it (a scan record, not part of the model)."""

    address: str
    vendor: str = ""  # 10de
    device: str = ""  # 2330
    subsystem: str = ""  # 10de:16c1
    pci_class: str = ""  # 030200
    driver: str = ""

    @property
    def sysfs(self) -> str:
        return f"{PCI_DEVICES}/{self.address}"


@dataclass
class Scan:
    root: HostRoot
    _pci: dict[str, PciFunction] | None = None
    unreadable_pci: list[str] = field(default_factory=list)
    _node_cpus: dict[int, set[int]] | None = None
    _paths: dict[str, list[str]] = field(default_factory=dict)

    def pci(self) -> dict[str, PciFunction]:
        """Every PCI function by address; read once."""
        if self._pci is None:
            self._pci = {}
            for address in self.root.listdir(PCI_DEVICES):
                if not parse.is_bdf(address):
                    continue
                fn = self._read_function(address)
                if fn.vendor and fn.pci_class:
                    self._pci[address] = fn
                else:
                    self.unreadable_pci.append(address)
        return self._pci

    def _read_function(self, address: str) -> PciFunction:
        fn = PciFunction(address)
        base = fn.sysfs
        try:
            uevent = parse.parse_key_values(self.root.read_text(f"{base}/uevent"), "=")
        except HostReadError:
            uevent = {}
        pci_id = uevent.get("PCI_ID", "").lower()
        klass = uevent.get("PCI_CLASS", "").lower()
        if ":" in pci_id and klass:
            fn.vendor, _, fn.device = pci_id.partition(":")
            fn.subsystem = uevent.get("PCI_SUBSYS_ID", "").lower()
            fn.pci_class = klass.rjust(6, "0")
            fn.driver = uevent.get("DRIVER", "")
        else:  # trees without uevent (old kernels, partial captures)
            fn.vendor = _hex4(self.root.attr(f"{base}/vendor"))
            fn.device = _hex4(self.root.attr(f"{base}/device"))
            sub_v = _hex4(self.root.attr(f"{base}/subsystem_vendor"))
            sub_d = _hex4(self.root.attr(f"{base}/subsystem_device"))
            fn.subsystem = f"{sub_v}:{sub_d}" if sub_v and sub_d else ""
            klass = self.root.attr(f"{base}/class").lower().removeprefix("0x")
            fn.pci_class = klass.rjust(6, "0") if klass else ""
            fn.driver = self.root.readlink_name(f"{base}/driver")
        return fn

    def each_entry(self, class_dir: str, read: Callable[[str], T], errors: list[str]) -> list[T]:
        """What `read` makes of each entry of a sysfs class directory. An entry it cannot
        read is recorded in `errors` and the others still report."""
        items = []
        for name in self.root.listdir(class_dir):
            try:
                items.append(read(name))
            except (OSError, ValueError) as exc:
                errors.append(f"{class_dir}/{name}: {exc}")
        return items

    def numa_node(self, sysfs_dir: str, cpulist: str | None = None) -> int:
        """A device's NUMA node; -1 from firmware is resolved through its local CPUs.

        Firmware without proximity info reports -1; the device's local_cpulist
        still says which node's CPUs are nearest, which is what placement needs.
        """
        text = self.root.attr(f"{sysfs_dir}/numa_node", "-1")
        node = parse.parse_int(text, f"{sysfs_dir}/numa_node")
        if node >= 0:
            return node
        if cpulist is None:
            cpulist = self.root.attr(f"{sysfs_dir}/local_cpulist")
        if not cpulist:
            return -1
        local = set(parse.parse_cpulist(cpulist, f"{sysfs_dir}/local_cpulist"))
        matches = [n for n, cpus in self.node_cpus().items() if cpus and cpus <= local]
        return matches[0] if len(matches) == 1 else -1

    def node_cpus(self) -> dict[int, set[int]]:
        if self._node_cpus is None:
            self._node_cpus = {}
            base = "sys/devices/system/node"
            for name in self.root.listdir(base):
                if name.startswith("node") and name[4:].isdigit():
                    text = self.root.attr(f"{base}/{name}/cpulist")
                    self._node_cpus[int(name[4:])] = set(parse.parse_cpulist(text))
        return self._node_cpus

    def pci_chain(self, address: str) -> list[str]:
        """Components of the device's sysfs path below /sys/devices.

        `['pci0000:15', '0000:15:01.0', '0000:16:00.0', ..., address]`: the host
        bridge, then every PCI function from the root port down to the device.
        """
        chain = self._paths.get(address)
        if chain is None:
            real = self.root.resolve(f"{PCI_DEVICES}/{address}")
            parts = real.split("/")
            if len(parts) < 4 or parts[:2] != ["sys", "devices"]:
                raise ValueError(f"{address}: unexpected sysfs path {real}")
            chain = parts[2:]
            self._paths[address] = chain
        return chain

    def pcie_link(self, sysfs_dir: str, *, speed_counts: bool = True) -> pb.PcieLink:
        """The function's link; `speed_counts=False` for GPUs, which slow idle links.

        A GPU drops to Gen1 when idle, so only a narrower link than the maximum
        marks it degraded; for NICs and NVMe a slower link is degraded too.
        """
        link = pb.PcieLink()
        cur = self.root.attr(f"{sysfs_dir}/current_link_speed")
        if not cur:
            return link
        link.current_speed_gts = parse.parse_link_speed(cur)
        link.max_speed_gts = parse.parse_link_speed(self.root.attr(f"{sysfs_dir}/max_link_speed"))
        link.current_width = _width(self.root.attr(f"{sysfs_dir}/current_link_width"))
        link.max_width = _width(self.root.attr(f"{sysfs_dir}/max_link_width"))
        link.current_generation = parse.pcie_generation(link.current_speed_gts)
        link.max_generation = parse.pcie_generation(link.max_speed_gts)
        link.degraded = link.current_width < link.max_width or (
            speed_counts and 0 < link.current_speed_gts < link.max_speed_gts
        )
        return link


def _hex4(text: str) -> str:
    text = text.strip().lower().removeprefix("0x")
    return text.rjust(4, "0") if text else ""


def _width(text: str) -> int:
    # Unknown widths read as 255 or are absent; treat both as 0 (unknown).
    try:
        value = int(text.removeprefix("x"))
    except ValueError:
        return 0
    return value if 0 < value <= 32 else 0
