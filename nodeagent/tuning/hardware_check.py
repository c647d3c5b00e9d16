"""Expected hardware: what the profile says the node has, against what discovery found.

Mismatches are not drift (no apply fixes a missing GPU); the inventory service turns them
into QUARANTINED with the reason, so each reason is one line a person can act on.
"""

from __future__ import annotations

import fnmatch

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb


def _mismatch(item: str, expected: object, actual: object, reason: str) -> tpb.HardwareMismatch:
    return tpb.HardwareMismatch(
        item=item, expected=str(expected), actual=str(actual), reason=reason
    )


def compute_rails(inv: pb.HardwareInventory) -> list[pb.RdmaDevice]:
    """RDMA devices nearest to a GPU: the compute fabric's rails (storage NICs are not)."""
    names = {n for g in inv.gpus for n in g.nearest_rdma_devices}
    return [d for d in inv.rdma_devices if d.name in names]


def switch_local_rails(inv: pb.HardwareInventory) -> dict[int, list[str]]:
    """GPU index -> RDMA devices on its PCIe switch (PIX/PXB in the affinity matrix): the
    rails of a PCIe design (2-8-5-200), where an adapter one host bridge away is not one."""
    devices, rows = inv.pcie_affinity.devices, inv.pcie_affinity.rows
    n_gpus = sum(1 for d in devices if d.label.startswith("GPU"))
    out: dict[int, list[str]] = {}
    for i, dev in enumerate(devices[:n_gpus]):
        if not dev.name.isdigit() or i >= len(rows):
            continue
        cells = rows[i].cells
        out[int(dev.name)] = [
            devices[k].name
            for k in range(n_gpus, min(len(devices), len(cells)))
            if cells[k] in ("PIX", "PXB")
        ]
    return out


def expected_hardware(
    exp: tpb.ExpectedHardware, inv: pb.HardwareInventory
) -> list[tpb.HardwareMismatch]:
    out: list[tpb.HardwareMismatch] = []
    if exp.HasField("gpu_count") and len(inv.gpus) != exp.gpu_count:
        out.append(
            _mismatch(
                "gpu_count",
                exp.gpu_count,
                len(inv.gpus),
                f"{len(inv.gpus)} of {exp.gpu_count} GPUs",
            )
        )
    if exp.gpu_model:
        wrong = [g for g in inv.gpus if not fnmatch.fnmatchcase(g.model, exp.gpu_model)]
        for g in wrong:
            out.append(
                _mismatch(
                    f"gpu {g.index}",
                    exp.gpu_model,
                    g.model,
                    f"GPU {g.index} is {g.model or 'unidentified'}",
                )
            )
    if exp.HasField("gpus_per_rail"):
        local = {n for names in switch_local_rails(inv).values() for n in names}
        rails = [d for d in inv.rdma_devices if d.name in local]
    else:
        rails = compute_rails(inv)
    if exp.HasField("compute_rails") and len(rails) != exp.compute_rails:
        out.append(
            _mismatch(
                "compute_rails",
                exp.compute_rails,
                len(rails),
                f"{len(rails)} of {exp.compute_rails} compute rails",
            )
        )
    for dev in rails:
        for port in dev.ports:
            rail = f"rail {dev.name}/{port.port}"
            if exp.rail_link_layer and port.link_layer != exp.rail_link_layer:
                out.append(
                    _mismatch(
                        rail,
                        exp.rail_link_layer,
                        port.link_layer,
                        f"{rail} runs {port.link_layer or 'no link layer'}",
                    )
                )
            if exp.rail_rate_gbps and port.rate_gbps < exp.rail_rate_gbps:
                out.append(
                    _mismatch(
                        rail,
                        f"{exp.rail_rate_gbps:g} Gb/s",
                        f"{port.rate_gbps:g} Gb/s",
                        f"{rail} at {port.rate_gbps:g} Gb/s",
                    )
                )
            if exp.rail_rate_gbps and port.state and port.state != "ACTIVE":
                out.append(_mismatch(rail, "ACTIVE", port.state, f"{rail} is {port.state}"))
    out.extend(_design(exp, inv, rails))
    if exp.HasField("nvme_count") and len(inv.nvme_controllers) != exp.nvme_count:
        n = len(inv.nvme_controllers)
        out.append(_mismatch("nvme_count", exp.nvme_count, n, f"{n} of {exp.nvme_count} NVMe"))
    return out


def _slot(pci_address: str) -> str:
    """An adapter is a PCI device: the functions (ports) of a dual-port card are one."""
    return pci_address.rsplit(".", 1)[0]


def _design(
    exp: tpb.ExpectedHardware, inv: pb.HardwareInventory, rails: list[pb.RdmaDevice]
) -> list[tpb.HardwareMismatch]:
    """The reference design's shape: rails per GPU, bandwidth per GPU, north-south adapters,
    NUMA alignment. A rail count alone misses a server whose rails run at half rate, and
    `3 of 4 rails` does not say which GPUs lost theirs; these checks do."""
    out: list[tpb.HardwareMismatch] = []
    if exp.HasField("gpus_per_rail"):
        local = switch_local_rails(inv)
        serving: dict[str, list[int]] = {}
        for g in inv.gpus:
            for n in local.get(g.index, []):
                serving.setdefault(n, []).append(g.index)
            if not local.get(g.index):
                out.append(
                    _mismatch(
                        f"gpu {g.index}",
                        "a compute rail on its PCIe switch",
                        "none",
                        f"rail missing for GPU {g.index} ({g.pci_address}): no RDMA adapter "
                        "on its PCIe switch",
                    )
                )
        for name, gpus in sorted(serving.items()):
            if len(gpus) > exp.gpus_per_rail:
                out.append(
                    _mismatch(
                        f"rail {name}",
                        f"{exp.gpus_per_rail} GPUs per rail",
                        f"{len(gpus)} GPUs",
                        f"rail {name} serves GPUs {', '.join(map(str, gpus))}; the design "
                        f"gives it {exp.gpus_per_rail}",
                    )
                )
    if exp.gbps_per_gpu:
        total = sum(
            p.rate_gbps for d in rails for p in d.ports if not p.state or p.state == "ACTIVE"
        )
        n_gpus = max(len(inv.gpus), exp.gpu_count if exp.HasField("gpu_count") else 0)
        have = total / n_gpus if n_gpus else 0.0
        if have < exp.gbps_per_gpu:
            out.append(
                _mismatch(
                    "gbps_per_gpu",
                    f"{exp.gbps_per_gpu:g} Gb/s",
                    f"{have:g} Gb/s",
                    f"{have:g} Gb/s of compute bandwidth per GPU ({total:g} Gb/s over {n_gpus} "
                    f"GPUs), the design gives {exp.gbps_per_gpu:g}",
                )
            )
    if exp.HasField("north_south_adapters"):
        east_west = {_slot(d.pci_address) for d in rails}
        north = sorted({_slot(d.pci_address) for d in inv.rdma_devices} - east_west)
        if len(north) != exp.north_south_adapters:
            out.append(
                _mismatch(
                    "north_south_adapters",
                    exp.north_south_adapters,
                    len(north),
                    f"{len(north)} of {exp.north_south_adapters} north-south adapters "
                    f"({', '.join(north) or 'none found'})",
                )
            )
    if exp.gpu_numa_affinity:
        for g in inv.gpus:
            if g.numa_node < 0:
                out.append(
                    _mismatch(
                        f"gpu {g.index}",
                        "its socket's NUMA node",
                        "none (-1)",
                        f"GPU {g.index} ({g.pci_address}) reports no NUMA node: firmware gives "
                        "no PCIe proximity, so nothing can place work on its socket",
                    )
                )
    return out
