"""NUMA nodes: CPUs, memory, distances and huge pages per node.

Its own collector so that a broken /proc/meminfo does not hide the topology.
"""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.memory import hugepage_pools, kb_to_bytes
from nodeagent.hardware.scan import Scan

NODE_DIR = "sys/devices/system/node"


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
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
            node.memory_total_bytes = kb_to_bytes(total, f"{base}/meminfo MemTotal") if total else 0
            distance = root.attr(f"{base}/distance")
            node.distances.extend(parse.parse_int(d, f"{base}/distance") for d in distance.split())
        except (OSError, ValueError) as exc:
            errors.append(str(exc))
        node.hugepages.extend(hugepage_pools(scan, f"{base}/hugepages", errors))
    inv.numa_nodes.sort(key=lambda n: n.id)
