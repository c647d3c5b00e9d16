"""Text renderings: JSON, YAML, tables and times for people, an inventory, topo -m.

`-o json` and `-o yaml` mean the same in every command (the object itself, protobuf JSON
for messages); tables are for people, so their times are UTC to the second and their
cells one line each.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.api.v1 import hardware_pb2 as pb

HEALTH = {
    pb.HEALTH_UNSPECIFIED: "-",
    pb.HEALTH_OK: "ok",
    pb.HEALTH_DEGRADED: "degraded",
    pb.HEALTH_FAILED: "failed",
}


def to_dict(msg: Message) -> dict[str, Any]:
    """Protobuf JSON mapping with snake_case names and every field present."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def to_json(msg: Message) -> str:
    return json_format.MessageToJson(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=2
    )


def to_yaml(msg: Message) -> str:
    return dump(to_dict(msg), "yaml")


def dump(data: Any, fmt: str) -> str:
    """Plain data (a label map, a document of several messages) as `-o json|yaml` prints
    it, ending in a newline."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml  # only this output needs it

    return str(yaml.safe_dump(data, sort_keys=False, width=120))


def message(msg: Message, fmt: str) -> str:
    """A reply as `-o json|yaml` prints it, ending in a newline."""
    return to_json(msg) + "\n" if fmt == "json" else to_yaml(msg)


def stream_item(msg: Message, fmt: str) -> str:
    """One message of a stream a command follows: a JSON object per line (so a consumer
    reads line by line), or one YAML document each."""
    if fmt == "json":
        return to_json(msg).replace("\n", " ") + "\n"
    return "---\n" + to_yaml(msg)


def timestamp(ts: Timestamp) -> str:
    """UTC to the second ('2025-01-31 14:05:09Z'), '-' when unset: the nanoseconds of
    protobuf's JSON form are noise in a table, and an unset time is not 1970."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def expired(ts: Timestamp) -> bool:
    """A set time that has passed (tokens, certificates)."""
    return bool(ts.seconds or ts.nanos) and ts.ToDatetime(dt.UTC) <= dt.datetime.now(dt.UTC)


MIN_CLIPPED = 20


def clip(text: str, room: int) -> str:
    """`text` on one line (whitespace runs become one space) in at most `room` characters,
    cut with '...'."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= room else text[: max(room - 3, 0)] + "..."


def table(rows: list[list[str]], headers: list[str], width: int | None = None) -> str:
    """Columns padded to their widest cell. With `width`, the last column (free text: a
    reason, a message) is cut so each line fits, keeping at least MIN_CLIPPED characters."""
    if width is not None and rows:
        fixed = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)][:-1]
        room = max(MIN_CLIPPED, width - sum(fixed) - 2 * len(fixed))
        rows = [[*row[:-1], clip(str(row[-1]), room)] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.0f} GiB" if n else "-"


def _tb(n: int) -> str:
    return f"{n / 1e12:.2f} TB" if n else "-"


def _link(link: pb.PcieLink) -> str:
    if not link.max_width:
        return "-"
    text = f"Gen{link.current_generation or '?'} x{link.current_width}"
    return text + (f" (max x{link.max_width}, degraded)" if link.degraded else "")


def _host_line(s: pb.System) -> str:
    """What is known of the machine and nothing else: a VM or a board without DMI has no
    vendor, serial or BIOS, and blanks or dashes in their place read like values."""
    known = [
        " ".join(x for x in (s.vendor, s.product) if x),
        f"serial {s.serial}" if s.serial else "",
        f"BIOS {s.bios_version}" if s.bios_version else "",
        f"{s.boot_mode} boot" if s.boot_mode else "",
    ]
    details = ", ".join(x for x in known if x)
    return f"Host      {s.hostname or '-'}" + (f"   ({details})" if details else "")


def inventory_table(inv: pb.HardwareInventory) -> str:
    c = inv.cpu
    out = [
        _host_line(inv.system),
        f"OS        {inv.software.os_pretty_name or '-'}"
        + (f", kernel {inv.software.kernel_release}" if inv.software.kernel_release else ""),
        f"CPU       {c.sockets} x {c.model_name} ({c.cores_per_socket} cores x "
        f"{c.threads_per_core} threads; {c.logical_cpus} logical)",
        f"Memory    {_gib(inv.memory.total_bytes)} over {len(inv.numa_nodes)} NUMA node(s)"
        + "".join(f"; node{n.id} {n.cpulist}" for n in inv.numa_nodes),
    ]
    if inv.software.nvidia_driver_version:
        cuda = inv.software.cuda_driver_version
        out.append(
            f"Driver    NVIDIA {inv.software.nvidia_driver_version}"
            f" ({inv.software.nvidia_kernel_module or '?'} module)"
            + (f", CUDA {cuda}" if cuda else "")
        )
    if inv.gpus:
        out += [
            "",
            f"GPUs ({len(inv.gpus)})",
            table(
                [
                    [
                        str(g.index),
                        g.pci_address,
                        g.model,
                        _gib(g.memory_bytes),
                        str(g.numa_node),
                        _link(g.pcie),
                        ",".join(g.nearest_rdma_devices) or "-",
                        HEALTH[g.health]
                        + (f": {'; '.join(g.health_reasons)}" if g.health_reasons else ""),
                    ]
                    for g in inv.gpus
                ],
                ["#", "PCI", "MODEL", "MEMORY", "NUMA", "PCIE", "NEAREST NIC", "HEALTH"],
            ),
        ]
    if inv.nvswitches:
        out += [
            "",
            f"NVSwitches ({len(inv.nvswitches)})",
            table(
                [[n.pci_address, n.model, str(n.numa_node)] for n in inv.nvswitches],
                ["PCI", "MODEL", "NUMA"],
            ),
        ]
    if inv.rdma_devices:
        rows = []
        for d in inv.rdma_devices:
            for p in d.ports or [pb.RdmaPort()]:
                rows.append(
                    [
                        d.name,
                        d.pci_address or "-",
                        d.model,
                        d.fw_version,
                        str(p.port),
                        p.link_layer,
                        f"{p.state}/{p.phys_state}",
                        f"{p.rate_gbps:g} Gb/s {p.speed}".strip(),
                        p.netdev or "-",
                        str(d.numa_node),
                    ]
                )
        out += [
            "",
            f"RDMA devices ({len(inv.rdma_devices)})",
            table(
                rows,
                [
                    "DEVICE",
                    "PCI",
                    "MODEL",
                    "FIRMWARE",
                    "PORT",
                    "LINK",
                    "STATE",
                    "RATE",
                    "NETDEV",
                    "NUMA",
                ],
            ),
        ]
    if inv.nvme_controllers:
        out += [
            "",
            f"NVMe ({len(inv.nvme_controllers)})",
            table(
                [
                    [
                        n.name,
                        n.pci_address or n.address or "-",
                        n.model,
                        n.firmware,
                        _tb(sum(ns.size_bytes for ns in n.namespaces)),
                        str(n.numa_node),
                        n.subsystem or "-",
                    ]
                    for n in inv.nvme_controllers
                ],
                ["NAME", "PCI", "MODEL", "FIRMWARE", "CAPACITY", "NUMA", "SUBSYSTEM"],
            ),
        ]
    phys = [n for n in inv.network_interfaces if n.physical]
    if phys:
        out += [
            "",
            f"Network interfaces ({len(phys)} physical)",
            table(
                [
                    [
                        n.name,
                        n.pci_address or "-",
                        n.kind,
                        n.driver,
                        n.operstate,
                        f"{n.speed_mbps // 1000} Gb/s" if n.HasField("speed_mbps") else "-",
                        n.rdma_device or "-",
                        str(n.numa_node),
                    ]
                    for n in phys
                ],
                ["NAME", "PCI", "KIND", "DRIVER", "STATE", "SPEED", "RDMA", "NUMA"],
            ),
        ]
    failed = [col for col in inv.collectors if not col.success]
    if failed:
        out += ["", "Collector errors"]
        out += [f"  {col.name}: {e}" for col in failed for e in col.errors]
    return "\n".join(out) + "\n"


TOPO_LEGEND = """
Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""  # noqa: E501


def topo_matrix(inv: pb.HardwareInventory) -> str:
    """The affinity matrix in the layout of `nvidia-smi topo -m`."""
    matrix = inv.pcie_affinity
    if not matrix.devices:
        return "No GPUs or RDMA devices with a PCI address.\n"
    labels = [d.label for d in matrix.devices]
    lines = ["\t" + "\t".join(labels) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID"]
    for dev, row in zip(matrix.devices, matrix.rows, strict=True):
        cells = [" X " if c == "X" else c for c in row.cells]
        tail = ""
        if dev.label.startswith("GPU"):
            numa = str(dev.numa_node) if dev.numa_node >= 0 else "N/A"
            tail = f"\t{dev.cpu_affinity}\t{numa}\t\tN/A"
        lines.append(f"{dev.label}\t" + "\t".join(cells) + tail)
    nics = [d for d in matrix.devices if d.label.startswith("NIC")]
    out = "\n".join(lines) + "\n" + TOPO_LEGEND
    if nics:
        out += "\nNIC Legend:\n\n" + "\n".join(f"  {d.label}: {d.name}" for d in nics) + "\n"
    return out
