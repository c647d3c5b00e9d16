"""NVMe controllers and namespaces, with and without native multipath.

With `nvme_core.multipath=Y` (the distro default) the block device `nvme<S>n<N>`
is a head disk of the subsystem and the controller directory holds only hidden
paths `nvme<S>c<C>n<N>`; `S` is the subsystem instance, not the controller.
"""

from __future__ import annotations

import re

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

NVME_CLASS = "sys/class/nvme"
SUBSYS_CLASS = "sys/class/nvme-subsystem"
_PATH_RE = re.compile(r"^nvme(\d+)c(\d+)n(\d+)$")
_NS_RE = re.compile(r"^nvme(\d+)n(\d+)$")


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    for name in scan.root.listdir(NVME_CLASS):
        if not re.fullmatch(r"nvme\d+", name):
            continue
        try:
            inv.nvme_controllers.append(_controller(scan, name, errors))
        except (OSError, ValueError) as exc:
            errors.append(f"{NVME_CLASS}/{name}: {exc}")
    inv.nvme_controllers.sort(key=lambda c: int(c.name[4:]))


def _controller(scan: Scan, name: str, errors: list[str]) -> pb.NvmeController:
    root = scan.root
    base = f"{NVME_CLASS}/{name}"
    ctrl = pb.NvmeController(name=name)
    ctrl.model = root.attr(f"{base}/model")
    ctrl.serial = root.attr(f"{base}/serial")
    ctrl.firmware = root.attr(f"{base}/firmware_rev")
    ctrl.transport = root.attr(f"{base}/transport")
    ctrl.address = root.attr(f"{base}/address")
    ctrl.state = root.attr(f"{base}/state")
    ctrl.subsystem_nqn = root.attr(f"{base}/subsysnqn")
    ctrl.numa_node = -1
    pci = root.readlink_name(f"{base}/device")
    if parse.is_bdf(pci):
        ctrl.pci_address = pci
        pci_dir = f"sys/bus/pci/devices/{pci}"
        ctrl.numa_node = scan.numa_node(pci_dir)
        ctrl.pcie.CopyFrom(scan.pcie_link(pci_dir))
    elif parse.is_bdf(ctrl.address):
        ctrl.pci_address = ctrl.address

    for entry in root.listdir(base):
        path = _PATH_RE.match(entry)
        if path:  # hidden multipath path: the namespace lives on the subsystem head
            subsys, nsid = path.group(1), path.group(3)
            ctrl.subsystem = f"nvme-subsys{subsys}"
            head = f"nvme{subsys}n{nsid}"
            ns_dir = f"{SUBSYS_CLASS}/{ctrl.subsystem}/{head}"
            if not root.is_dir(ns_dir):
                ns_dir = f"sys/block/{head}"
        elif _NS_RE.match(entry):
            head, ns_dir = entry, f"{base}/{entry}"
        else:
            continue
        try:
            ctrl.namespaces.append(_namespace(scan, head, ns_dir))
        except (OSError, ValueError) as exc:
            errors.append(f"{ns_dir}: {exc}")
    ctrl.namespaces.sort(key=lambda n: n.nsid)
    return ctrl


def _namespace(scan: Scan, name: str, ns_dir: str) -> pb.NvmeNamespace:
    root = scan.root
    ns = pb.NvmeNamespace(name=name)
    # `size` counts 512-byte sectors whatever the LBA format.
    ns.size_bytes = parse.parse_int(root.read_attr(f"{ns_dir}/size"), f"{ns_dir}/size") * 512
    nsid = root.attr(f"{ns_dir}/nsid")
    ns.nsid = parse.parse_int(nsid, f"{ns_dir}/nsid") if nsid else int(name.rpartition("n")[2])
    lbs = root.attr(f"{ns_dir}/queue/logical_block_size")
    pbs = root.attr(f"{ns_dir}/queue/physical_block_size")
    ns.logical_block_size = parse.parse_int(lbs, f"{ns_dir}/logical_block_size") if lbs else 0
    ns.physical_block_size = parse.parse_int(pbs, f"{ns_dir}/physical_block_size") if pbs else 0
    ns.wwid = root.attr(f"{ns_dir}/wwid")
    return ns
