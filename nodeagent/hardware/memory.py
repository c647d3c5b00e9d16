"""Memory, huge pages and NUMA nodes."""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

NODE_DIR = "sys/devices/system/node"
HUGEPAGES_DIR = "sys/kernel/mm/hugepages"


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
    meminfo = parse.parse_key_values(root.read_text("proc/meminfo"))
    if "MemTotal" not in meminfo:
        raise ValueError("proc/meminfo: no MemTotal line")
    inv.memory.total_bytes = _kb(meminfo["MemTotal"], "proc/meminfo MemTotal")
    inv.memory.hugepages.extend(_hugepages(scan, HUGEPAGES_DIR, errors))
    thp = root.attr("sys/kernel/mm/transparent_hugepage/enabled")
    inv.memory.transparent_hugepages = parse.parse_bracketed_choice(thp) if thp else ""

    for name in root.listdir(NODE_DIR):
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        base = f"{NODE_DIR}/{name}"
        node = inv.numa_nodes.add(id=int(name[4:]))
        cpus = scan.node_cpus().get(node.id, set())
        node.cpulist = parse.format_cpulist(cpus)
        try:
            node_mem = parse.parse_key_values(root.read_text(f"{base}/meminfo"))
            total = next((v for k, v in node_mem.items() if k.endswith("MemTotal")), "")
            node.memory_total_bytes = _kb(total, f"{base}/meminfo MemTotal") if total else 0
            distance = root.attr(f"{base}/distance")
            node.distances.extend(parse.parse_int(d, f"{base}/distance") for d in distance.split())
        except (OSError, ValueError) as exc:
            errors.append(str(exc))
        node.hugepages.extend(_hugepages(scan, f"{base}/hugepages", errors))
    inv.numa_nodes.sort(key=lambda n: n.id)


def _kb(text: str, what: str) -> int:
    number, _, unit = text.strip().partition(" ")
    value = parse.parse_int(number, what)
    return value * 1024 if unit.strip().lower() == "kb" else value


def _hugepages(scan: Scan, base: str, errors: list[str]) -> list[pb.HugePages]:
    pools = []
    for name in scan.root.listdir(base):
        if not (name.startswith("hugepages-") and name.endswith("kB")):
            continue
        try:
            size_kb = parse.parse_int(name[len("hugepages-") : -2], f"{base}/{name}")
            total = parse.parse_int(scan.root.read_attr(f"{base}/{name}/nr_hugepages"), name)
            free = parse.parse_int(scan.root.read_attr(f"{base}/{name}/free_hugepages"), name)
        except (OSError, ValueError) as exc:
            errors.append(str(exc))
            continue
        pools.append(pb.HugePages(page_size_bytes=size_kb * 1024, total=total, free=free))
    return pools
