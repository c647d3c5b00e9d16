"""RDMA devices: every /sys/class/infiniband entry (InfiniBand and RoCE), keyed by PCI address."""

from __future__ import annotations

import contextlib
import re

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse, pci_ids
from nodeagent.hardware.scan import Scan
from nodeagent.host import HostRoot

IB_CLASS = "sys/class/infiniband"
_RATE_RE = re.compile(r"^\s*([0-9.]+)\s*Gb/sec\s*(?:\((\d+)X\s*([A-Za-z0-9]*)\))?")


def parse_rate(text: str) -> tuple[float, int, str]:
    """`400 Gb/sec (4X NDR)` -> (400.0, 4, 'NDR'); `10 Gb/sec (4X)` -> (10.0, 4, '')."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"rate: unrecognised {text[:40]!r}")
    return float(m.group(1)), int(m.group(2) or 0), m.group(3) or ""


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    inv.rdma_devices.extend(
        scan.each_entry(IB_CLASS, lambda name: _device(scan, name, errors), errors)
    )
    inv.rdma_devices.sort(key=lambda d: _natural(d.name))


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def _device(scan: Scan, name: str, errors: list[str]) -> pb.RdmaDevice:
    root = scan.root
    base = f"{IB_CLASS}/{name}"
    dev = pb.RdmaDevice(name=name)
    address = root.readlink_name(f"{base}/device")
    if parse.is_bdf(address):
        fn = scan.pci().get(address)
        pci_dir = f"sys/bus/pci/devices/{address}"
        dev.pci_address = address
        dev.numa_node = scan.numa_node(pci_dir)
        dev.pcie.CopyFrom(scan.pcie_link(pci_dir))
        if fn is not None:
            dev.vendor_id, dev.pci_device_id, dev.driver = fn.vendor, fn.device, fn.driver
    else:
        dev.numa_node = -1
    dev.fw_version = root.attr(f"{base}/fw_ver")
    dev.hca_type = root.attr(f"{base}/hca_type")
    dev.board_id = root.attr(f"{base}/board_id")
    dev.node_type = parse.parse_enum_attr(root.attr(f"{base}/node_type"))
    dev.node_desc = root.attr(f"{base}/node_desc")[:64]
    for key in ("node_guid", "sys_image_guid"):
        try:
            setattr(dev, key, parse.sysfs_guid(root.attr(f"{base}/{key}")))
        except ValueError as exc:
            errors.append(f"{base}/{key}: {exc}")
    if dev.vendor_id == pci_ids.MELLANOX or dev.hca_type.startswith("MT"):
        dev.model = pci_ids.mellanox_model(dev.pci_device_id, dev.hca_type)
    if not dev.model:
        dev.model = dev.hca_type or name.rstrip("0123456789_")

    netdevs = root.listdir(f"{base}/device/net") if dev.pci_address else []
    dev.netdevs.extend(netdevs)
    for port_name in root.listdir(f"{base}/ports"):
        if not port_name.isdigit():
            continue
        try:
            dev.ports.append(_port(scan, base, int(port_name), netdevs))
        except (OSError, ValueError) as exc:
            errors.append(f"{base}/ports/{port_name}: {exc}")
    dev.ports.sort(key=lambda p: p.port)
    return dev


def _port(scan: Scan, base: str, number: int, netdevs: list[str]) -> pb.RdmaPort:
    root = scan.root
    pdir = f"{base}/ports/{number}"
    port = pb.RdmaPort(port=number)
    port.link_layer = root.attr(f"{pdir}/link_layer", "unknown").lower()
    port.state = parse.parse_enum_attr(root.read_attr(f"{pdir}/state"))
    port.phys_state = parse.parse_enum_attr(root.attr(f"{pdir}/phys_state"))
    rate = root.attr(f"{pdir}/rate")
    if rate:
        port.rate_gbps, port.width, port.speed = parse_rate(rate)
    lid, sm_lid = root.attr(f"{pdir}/lid"), root.attr(f"{pdir}/sm_lid")
    port.lid = parse.parse_hex(lid, f"{pdir}/lid") if lid else 0
    port.sm_lid = parse.parse_hex(sm_lid, f"{pdir}/sm_lid") if sm_lid else 0
    port.gid = root.attr(f"{pdir}/gids/0")
    # RoCE names its netdev per GID; on IB (EINVAL there) match dev_port = port - 1.
    port.netdev = root.attr(f"{pdir}/gid_attrs/ndevs/0")
    if not port.netdev and netdevs:
        if len(netdevs) == 1:
            port.netdev = netdevs[0]
        else:
            for netdev in netdevs:
                dev_port = root.attr(f"{base}/device/net/{netdev}/dev_port", "0")
                if dev_port.isdigit() and int(dev_port) == number - 1:
                    port.netdev = netdev
                    break
    return port


PORT_COUNTERS = (
    "port_xmit_data",
    "port_rcv_data",
    "port_xmit_packets",
    "port_rcv_packets",
    "symbol_error",
    "link_downed",
    "link_error_recovery",
    "port_rcv_errors",
)


def read_port_status(root: HostRoot) -> dict[tuple[str, int], dict[str, int | str]]:
    """State and counters of every RDMA port, for cheap periodic polling.

    Returns {(device, port): {"state": "ACTIVE", "phys_state": "LinkUp",
    "rate_gbps": 400, "<counter>": n, ...}}; unreadable counters are left out.
    """
    out: dict[tuple[str, int], dict[str, int | str]] = {}
    for name in root.listdir(IB_CLASS):
        for port in root.listdir(f"{IB_CLASS}/{name}/ports"):
            if not port.isdigit():
                continue
            pdir = f"{IB_CLASS}/{name}/ports/{port}"
            status: dict[str, int | str] = {
                "state": parse.parse_enum_attr(root.attr(f"{pdir}/state")),
                "phys_state": parse.parse_enum_attr(root.attr(f"{pdir}/phys_state")),
            }
            with contextlib.suppress(ValueError):
                status["rate_gbps"] = int(parse_rate(root.attr(f"{pdir}/rate"))[0])
            for counter in PORT_COUNTERS:
                text = root.attr(f"{pdir}/counters/{counter}")
                if text.isdigit():
                    status[counter] = int(text)
            out[(name, int(port))] = status
    return out
