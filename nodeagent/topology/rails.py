"""Compute rails: the RDMA ports (or netdevs) that carry GPU-to-GPU traffic.

Storage and management ports must not count: a down storage port is not a missing
rail, and a storage leaf is not part of the compute leaf group. Configuration names
the rails by PCI address, netdev or device pattern; without it the RDMA devices a GPU
is nearest to (nvidia-smi topo's NIC affinity) are the compute rails, and on a
GPU-less node every ACTIVE RDMA port is.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.topology.config import RailSelector

ACTIVE = "ACTIVE"


def select(inv: pb.HardwareInventory, selector: RailSelector) -> list[fpb.Rail]:
    """The compute rails of `inv`, in device order."""
    if selector.configured:
        return _configured(inv, selector)
    nearest = {name for g in inv.gpus for name in g.nearest_rdma_devices}
    rails = []
    for dev in inv.rdma_devices:
        for port in dev.ports:
            if (dev.name in nearest) if nearest else port.state == ACTIVE:
                rails.append(_rdma_rail(dev, port))
    return rails


def _configured(inv: pb.HardwareInventory, sel: RailSelector) -> list[fpb.Rail]:
    def matches(netdev: str, device: str, address: str) -> bool:
        return (
            address in sel.pci_addresses
            or any(fnmatchcase(netdev, p) for p in sel.netdevs if netdev)
            or any(fnmatchcase(device, p) for p in sel.devices if device)
        )

    rails = [
        _rdma_rail(dev, port)
        for dev in inv.rdma_devices
        for port in dev.ports
        if matches(port.netdev, dev.name, dev.pci_address)
    ]
    taken = {r.netdev for r in rails}
    for nic in inv.network_interfaces:
        if nic.rdma_device or nic.kind == "loopback" or nic.name in taken:
            continue
        if matches(nic.name, "", nic.pci_address):
            rails.append(_netdev_rail(nic))
    return rails


def _rdma_rail(dev: pb.RdmaDevice, port: pb.RdmaPort) -> fpb.Rail:
    return fpb.Rail(
        name=f"{dev.name}/{port.port}",
        device=dev.name,
        port=port.port,
        netdev=port.netdev,
        pci_address=dev.pci_address,
        link_layer=port.link_layer,
        active=port.state == ACTIVE,
        rate_gbps=port.rate_gbps,
    )


def _netdev_rail(nic: pb.NetworkInterface) -> fpb.Rail:
    rate = nic.speed_mbps / 1000 if nic.HasField("speed_mbps") else 0.0
    return fpb.Rail(
        name=nic.name,
        netdev=nic.name,
        pci_address=nic.pci_address,
        link_layer="infiniband" if nic.kind == "infiniband" else "ethernet",
        active=nic.operstate == "up",
        rate_gbps=rate,
    )
