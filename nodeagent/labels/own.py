"""Our own keys, under the configured domain (default nodeagent.io).

Presence rules, so a selector can rely on them: counts, `rdma.<d>/present`, the
topology levels, storage and CPU keys are always written; the other GPU keys only
when there is a GPU; the rail keys only when the node has compute rails; memory and
family only when known; pool, profile and tuning only when assigned.
"""

from __future__ import annotations

from collections import Counter

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.labels import gfd
from nodeagent.labels.inputs import LabelInputs
from nodeagent.topology.tiers import PLACEHOLDER

ALIGNED = ("PIX", "PXB")  # GPU and NIC share a PCIe switch: GPUDirect RDMA stays off the CPU


def labels(inp: LabelInputs, domain: str) -> dict[str, str]:
    inv = inp.inventory
    out = _gpu(inv, f"gpu.{domain}")
    out |= _rdma(inp, f"rdma.{domain}")
    t = inp.tiers
    topo = f"topology.{domain}"
    for key, value in (
        ("fabric", t.fabric),
        ("tier-2", t.tier_2),
        ("tier-1", t.tier_1),
        ("tier-0", t.tier_0),
    ):
        out[f"{topo}/{key}"] = value or PLACEHOLDER
    out |= _storage(inv, f"storage.{domain}")
    out[f"cpu.{domain}/sockets"] = str(inv.cpu.sockets)
    out[f"cpu.{domain}/numa-nodes"] = str(len(inv.numa_nodes))
    aligned = gpu_nic_aligned(inv)
    if aligned is not None:
        out[f"pcie.{domain}/gpu-nic-aligned"] = _bool(aligned)
    a = inp.assignment
    for key, value in (("pool", a.pool), ("profile", a.profile), ("tuning", a.tuning)):
        if value:
            out[f"{domain}/{key}"] = value
    return out


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _gpu(inv: pb.HardwareInventory, prefix: str) -> dict[str, str]:
    out = {f"{prefix}/count": str(len(inv.gpus))}
    if not inv.gpus:
        return out
    common = Counter((g.vendor, g.model) for g in inv.gpus).most_common(1)[0][0]
    g = min((g for g in inv.gpus if (g.vendor, g.model) == common), key=lambda g: g.index)
    out[f"{prefix}/vendor"] = g.vendor
    out[f"{prefix}/model"] = gfd.sanitise(g.model)
    if g.memory_bytes:
        out[f"{prefix}/memory-mib"] = str(g.memory_bytes // (1 << 20))
    major, _, minor = g.compute_capability.partition(".")
    family = g.architecture or (
        gfd.family(int(major), int(minor)) if major.isdigit() and minor.isdigit() else ""
    )
    if family:
        out[f"{prefix}/family"] = family
    out[f"{prefix}/nvswitch"] = _bool(bool(inv.nvswitches))
    return out


def _rdma(inp: LabelInputs, prefix: str) -> dict[str, str]:
    inv, t, rails = inp.inventory, inp.tiers, inp.observation.rails
    out = {f"{prefix}/present": _bool(bool(inv.rdma_devices))}
    if not (rails or t.rails_expected):
        return out
    layers = {r.link_layer for r in rails if r.link_layer}
    if layers:
        out[f"{prefix}/link-layer"] = layers.pop() if len(layers) == 1 else "mixed"
    out[f"{prefix}/rails"] = str(t.rails_expected)
    out[f"{prefix}/rails-active"] = str(t.rails_active)
    out[f"{prefix}/rate-gbps"] = f"{t.rate_gbps:g}"
    models = {d.name: d.model for d in inv.rdma_devices}
    counted = Counter(models[r.device] for r in rails if models.get(r.device))
    if counted:
        out[f"{prefix}/nic-model"] = gfd.sanitise(counted.most_common(1)[0][0])
    out[f"{prefix}/degraded"] = _bool(t.degraded)
    return out


def _storage(inv: pb.HardwareInventory, prefix: str) -> dict[str, str]:
    local = [c for c in inv.nvme_controllers if c.transport in ("", "pcie")]
    sizes = {ns.name: ns.size_bytes for c in local for ns in c.namespaces}
    return {
        f"{prefix}/nvme-count": str(len(local)),
        f"{prefix}/nvme-capacity-gb": str(sum(sizes.values()) // 10**9),
    }


def gpu_nic_aligned(inv: pb.HardwareInventory) -> bool | None:
    """Every GPU has an RDMA device on its PCIe switch (topo -m PIX or PXB); None when
    the node has no GPU or no RDMA device in the matrix."""
    matrix = inv.pcie_affinity
    kinds = [d.label.startswith("GPU") for d in matrix.devices]
    gpu_rows = [i for i, is_gpu in enumerate(kinds) if is_gpu]
    nic_cols = [j for j, is_gpu in enumerate(kinds) if not is_gpu]
    if not gpu_rows or not nic_cols:
        return None
    return all(any(matrix.rows[i].cells[j] in ALIGNED for j in nic_cols) for i in gpu_rows)
