"""A modelled two-level InfiniBand fat tree and the infiniband-diags text it would print.

Rail-optimised scalable units (SUs) of DGX-like nodes: rail r of every node in SU s is
cabled to leaf (s, r); every leaf has one uplink to each spine. Switches are 64-port
Quantum-2 (QM9700, NDR, DevId 0xd2f2); node HCAs carry `<hostname> <device>` node
descriptions (what rdma-core's rdma-ndd sets).

The text follows infiniband-diags' printf formats (rdma-core: smpquery.c node_desc,
libibmad dump.c for NodeInfo, iblinkinfo.c print_port in line mode) and the examples
in smpquery(8) / iblinkinfo(8). tests/fixtures/infiniband/ holds outputs rendered by
this module for one port, reviewed line by line; a test keeps the two identical, so
every output generated here is as realistic as those files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NUM_PORTS = 64
NODE_PORTS = 32  # leaf ports 1..32 face nodes, 33.. face spines
LEAF_GUID = 0xFC6A1C0300E5A000
SPINE_GUID = 0xFC6A1C0300F0B000
HCA_GUID = 0x946DAE0300D10000
NDR = ("4X", "106.25 Gbps")


@dataclass
class FatTree:
    sus: int = 2
    rails: int = 8
    nodes_per_su: int = 4
    spines: int = 4
    down: set[tuple[str, int]] = field(default_factory=set)  # (node, rail) cables pulled

    def node(self, su: int, i: int) -> str:
        return f"dgx-su{su + 1}-{i + 1:02d}"

    def leaf_guid(self, su: int, rail: int) -> int:
        return LEAF_GUID + 0x100 * su + rail

    def leaf_desc(self, su: int, rail: int) -> str:
        return f"MF0;su{su + 1}-ibleaf-r{rail}:MQM9700/U1"

    def leaf_lid(self, su: int, rail: int) -> int:
        return 1 + su * self.rails + rail

    def spine_guid(self, k: int) -> int:
        return SPINE_GUID + k

    def spine_desc(self, k: int) -> str:
        return f"MF0;ibspine-{k + 1:02d}:MQM9700/U1"

    def spine_lid(self, k: int) -> int:
        return 1 + self.sus * self.rails + k

    def hca_guid(self, su: int, i: int, rail: int) -> int:
        return HCA_GUID + 0x1000 * (su * self.nodes_per_su + i) + 0x10 * rail

    def hca_lid(self, su: int, i: int, rail: int) -> int:
        return 100 + (su * self.nodes_per_su + i) * self.rails + rail


def _link(state: str, width: str = "", speed: str = "", phys: str = "") -> str:
    if state == "Down":
        return f"(              {'Down':>6s}/{phys or 'Polling':>8s})"
    return f"({width:>3s} {speed:>18s} {state:>6s}/{phys or 'LinkUp':>8s})"


def _line(guid: int, desc: str, lid: int, port: int, link: str, remote: str) -> str:
    return f'0x{guid:016x} "{desc:>30s}" {lid:6d} {port:4d}[  ] =={link}==>  {remote}'


def _remote(guid: int, lid: int, port: int, desc: str) -> str:
    return f'0x{guid:016x} {lid:6d} {port:4d}[  ] "{desc}" ( )'


DOWN_REMOTE = '           [  ] "" ( )'
NOT_AVAILABLE = '    "Port not available"'


def leaf_lines(t: FatTree, su: int, rail: int) -> list[str]:
    guid, desc, lid = t.leaf_guid(su, rail), t.leaf_desc(su, rail), t.leaf_lid(su, rail)
    lines = []
    for port in range(1, NUM_PORTS + 1):
        i, k = port - 1, port - 1 - NODE_PORTS
        if i < t.nodes_per_su and (t.node(su, i), rail) not in t.down:
            remote = _remote(
                t.hca_guid(su, i, rail), t.hca_lid(su, i, rail), 1, f"{t.node(su, i)} mlx5_{rail}"
            )
            lines.append(_line(guid, desc, lid, port, _link("Active", *NDR), remote))
        elif 0 <= k < t.spines:
            spine_port = 1 + su * t.rails + rail
            remote = _remote(t.spine_guid(k), t.spine_lid(k), spine_port, t.spine_desc(k))
            lines.append(_line(guid, desc, lid, port, _link("Active", *NDR), remote))
        else:
            lines.append(_line(guid, desc, lid, port, _link("Down"), DOWN_REMOTE))
    return lines


def spine_lines(t: FatTree, k: int, su: int, rail: int) -> list[str]:
    """Spine k as a one-hop scan from leaf (su, rail) prints it: only that leaf is linked."""
    guid, desc, lid = t.spine_guid(k), t.spine_desc(k), t.spine_lid(k)
    lines = []
    for port in range(1, NUM_PORTS + 1):
        j = port - 1
        if j < t.sus * t.rails:
            if (j // t.rails, j % t.rails) == (su, rail):
                remote = _remote(
                    t.leaf_guid(su, rail),
                    t.leaf_lid(su, rail),
                    NODE_PORTS + 1 + k,
                    t.leaf_desc(su, rail),
                )
            else:
                remote = NOT_AVAILABLE
            lines.append(_line(guid, desc, lid, port, _link("Active", *NDR), remote))
        else:
            lines.append(_line(guid, desc, lid, port, _link("Down"), DOWN_REMOTE))
    return lines


def iblinkinfo(t: FatTree, su: int, rail: int) -> str:
    """`iblinkinfo -C mlx5_<rail> -P 1 -D 0,1 -a --switches-only -l` from any node on the leaf."""
    lines = leaf_lines(t, su, rail)
    for k in range(t.spines):
        lines += spine_lines(t, k, su, rail)
    return "\n".join(lines) + "\n"


def _field(name: str, value: str) -> str:
    return f"{name}:".ljust(33, ".") + value


def nodeinfo(t: FatTree, su: int, rail: int, local_port: int) -> str:
    guid = f"0x{t.leaf_guid(su, rail):016x}"
    fields = [
        ("BaseVers", "1"),
        ("ClassVers", "1"),
        ("NodeType", "Switch"),
        ("NumPorts", str(NUM_PORTS)),
        ("SystemGuid", guid),
        ("Guid", guid),
        ("PortGuid", guid),
        ("PartCap", "8"),
        ("DevId", "0xd2f2"),
        ("Revision", "0x000000a0"),
        ("LocalPort", str(local_port)),
        ("VendorId", "0x0002c9"),
    ]
    head = "# Node info: DR path slid 65535; dlid 65535; 0,1"
    return "\n".join([head, *(_field(n, v) for n, v in fields)]) + "\n"


def nodedesc(t: FatTree, su: int, rail: int) -> str:
    desc = t.leaf_desc(su, rail)
    dots = "." * (32 - len(desc)) if len(desc) < 32 else "."
    return f"Node Description:{dots}{desc}\n"


def recording(t: FatTree, su: int, i: int, devices: list[str]) -> dict[str, Any]:
    """The infiniband probe recording of node i of SU `su`; devices[r] carries rail r."""
    ports = []
    for rail, device in enumerate(devices):
        if (t.node(su, i), rail) in t.down:
            continue  # the probe asks only ACTIVE ports
        ports.append(
            {
                "device": device,
                "port": 1,
                "errors": [],
                "nodeinfo": nodeinfo(t, su, rail, i + 1),
                "nodedesc": nodedesc(t, su, rail),
                "iblinkinfo": iblinkinfo(t, su, rail),
            }
        )
    return {"probe": "infiniband", "version": 1, "available": True, "error": "", "ports": ports}
