"""Memory: total, huge page pools, transparent huge pages."""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

HUGEPAGES_DIR = "sys/kernel/mm/hugepages"


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
    meminfo = parse.parse_key_values(root.read_text("proc/meminfo"))
    if "MemTotal" not in meminfo:
        raise ValueError("proc/meminfo: no MemTotal line")
    inv.memory.total_bytes = kb_to_bytes(meminfo["MemTotal"], "proc/meminfo MemTotal")
    inv.memory.hugepages.extend(hugepage_pools(scan, HUGEPAGES_DIR, errors))
    thp = root.attr("sys/kernel/mm/transparent_hugepage/enabled")
    inv.memory.transparent_hugepages = parse.parse_bracketed_choice(thp) if thp else ""


def kb_to_bytes(text: str, what: str) -> int:
    number, _, unit = text.strip().partition(" ")
    value = parse.parse_int(number, what)
    return value * 1024 if unit.strip().lower() == "kb" else value


def hugepage_pools(scan: Scan, base: str, errors: list[str]) -> list[pb.HugePages]:
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
