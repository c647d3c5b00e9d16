"""Raw node features the inventory does not carry but NFD's formulas need.

NFD labels every PCI function in its class whitelist, BMC VGA included, and decides
`rdma.available` from loaded kernel modules; the inventory keeps only the devices
nodeagent cares about and no module list. So these are read from the root, as NFD
reads them, and kept apart from the labels derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.hardware.scan import Scan
from nodeagent.host import HostReadError, HostRoot

MODULES = "proc/modules"


@dataclass(frozen=True)
class NodeFeatures:
    pci: frozenset[tuple[str, str]]  # (class as 6 hex digits, vendor): ("030200", "10de")
    modules: frozenset[str]  # loaded kernel modules
    modules_known: bool = True  # False when /proc/modules could not be read


def read_features(root: HostRoot) -> NodeFeatures:
    """PCI (class, vendor) pairs and loaded modules of `root`."""
    pci = frozenset((fn.pci_class.lower(), fn.vendor.lower()) for fn in Scan(root).pci().values())
    try:
        text = root.read_text(MODULES)
    except HostReadError:
        return NodeFeatures(pci, frozenset(), modules_known=False)
    modules = frozenset(line.split()[0] for line in text.splitlines() if line.strip())
    return NodeFeatures(pci, modules)
