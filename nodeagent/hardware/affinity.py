"""PCIe affinity: the `nvidia-smi topo -m` levels computed from sysfs paths.

Mirrors NCCL's reading of sysfs (`ncclTopoGetXmlFromSys`): the host bridge is
the first component of a device's path below /sys/devices, a PCIe switch is an
upstream/downstream port pair, so the switch nodes on a path are the root port
and every second bridge after it. Two devices under one switch are PIX, under
nested switches PXB, on one host bridge PHB, on two host bridges of one NUMA
node NODE, otherwise SYS.
"""

from __future__ import annotations

LEVELS = ("X", "PIX", "PXB", "PHB", "NODE", "SYS")
RANK = {level: i for i, level in enumerate(LEVELS)}


def switch_nodes(chain: list[str]) -> list[str]:
    """Switch nodes on a path `[host_bridge, root_port, ..., device]`."""
    bridges = chain[1:-1]
    return [b for i, b in enumerate(bridges) if i == 0 or i % 2 == 1]


def pcie_level(a: list[str], b: list[str], numa_a: int, numa_b: int) -> str:
    if a == b:
        return "X"
    if a[0] != b[0]:
        return "NODE" if numa_a == numa_b and numa_a >= 0 else "SYS"
    sa, sb = switch_nodes(a), switch_nodes(b)
    common = 0
    for x, y in zip(sa, sb, strict=False):
        if x != y:
            break
        common += 1
    if common == 0:
        return "PHB"
    hops = (len(sa) - common) + (len(sb) - common) + 1
    return "PIX" if hops == 1 else "PXB"


def nearest(levels: list[str]) -> list[int]:
    """Indices at the lowest level short of crossing sockets (NCCL's GPU/NIC pairing)."""
    candidates = [(RANK[level], i) for i, level in enumerate(levels) if level not in ("X", "SYS")]
    if not candidates:
        return []
    best = min(rank for rank, _ in candidates)
    return [i for rank, i in candidates if rank == best]
