"""Many machines from one: copies of a discovered inventory with their own hardware ids."""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb


def variant(inv: pb.HardwareInventory, n: int, *, uuid: str | None = None) -> pb.HardwareInventory:
    """Another machine of the same model: its own DMI ids, MACs, GUIDs and GPU serials."""
    out = pb.HardwareInventory()
    out.CopyFrom(inv)
    out.system.uuid = uuid if uuid is not None else f"4c4c4544-0000-1000-8000-{n:012x}"
    out.system.serial = f"SN{n:08d}"
    out.system.hostname = f"gpu-{n:05d}"
    for i, nic in enumerate(out.network_interfaces):
        if nic.mac and nic.kind == "ethernet":
            nic.mac = f"02:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:{i:02x}:01"
    for i, dev in enumerate(out.rdma_devices):
        dev.node_guid = f"{n:012x}{i:04x}"
    for i, gpu in enumerate(out.gpus):
        if gpu.serial:
            gpu.serial = f"{n:09d}{i:04d}"
    return out
