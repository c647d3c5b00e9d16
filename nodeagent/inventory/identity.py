"""A machine's identity, so re-registration of the same hardware gets the same node id.

DMI UUIDs and serials are the natural key, but firmware often leaves
placeholders ("To Be Filled By O.E.M.", all zeros, the famous
03000200-0400-0500-0006-000700080009) or duplicates them across a batch. Those
fall back to identifiers that are unique to the hardware: the physical NICs'
MAC addresses and the GPUs' serials.
"""

from __future__ import annotations

import hashlib
import re

from nodeagent.api.v1 import hardware_pb2 as pb

PLACEHOLDER_UUIDS = {
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
}
_PLACEHOLDER_RE = re.compile(
    r"^(|0+|f+|x+|none|null|n/?a|default string|system serial number|not specified|"
    r"to be filled by o\.?e\.?m\.?|0123456789|123456789|chassis serial number|serial)$",
    re.IGNORECASE,
)


def is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return v in PLACEHOLDER_UUIDS or bool(_PLACEHOLDER_RE.match(v.replace("-", "") or v))


def hardware_ids(inv: pb.HardwareInventory) -> list[str]:
    """Stable per-device identifiers: physical NIC MACs and GPU serials."""
    ids = {
        f"mac:{n.permanent_mac or n.mac}"
        for n in inv.network_interfaces
        if n.physical and n.kind == "ethernet" and (n.permanent_mac or n.mac)
    }
    ids |= {f"gpu:{g.serial}" for g in inv.gpus if g.serial and not is_placeholder(g.serial)}
    ids |= {f"ib:{d.node_guid}" for d in inv.rdma_devices if d.node_guid}
    return sorted(ids)


def dmi_key(inv: pb.HardwareInventory) -> str:
    """`dmi:<uuid>` (with the serial when usable), or '' when firmware gave placeholders."""
    s = inv.system
    if s.uuid and not is_placeholder(s.uuid):
        serial = "" if is_placeholder(s.serial) else s.serial
        return f"dmi:{s.uuid.lower()}:{serial}"
    if s.serial and not is_placeholder(s.serial) and s.vendor:
        return f"dmi-serial:{s.vendor}:{s.serial}"
    return ""


def fallback_key(inv: pb.HardwareInventory) -> str:
    ids = hardware_ids(inv)
    if not ids:
        return ""
    return "hw:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
