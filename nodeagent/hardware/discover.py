"""Discovery: run every collector and probe over a root and assemble the inventory.

Collectors (sysfs/procfs, one module per device class) and probes (NVML, ...)
never import each other; this module merges them by PCI address. Each runs on
its own: whatever it raises is recorded as its error and the others still report,
like node_exporter's per-collector success.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import (
    affinity,
    cpu,
    gpu,
    memory,
    network,
    numa,
    nvme,
    nvswitch,
    parse,
    pci,
    pci_ids,
    rdma,
    software,
    system,
)
from nodeagent.hardware.probes import nvml
from nodeagent.hardware.probes.recording import Recordings
from nodeagent.hardware.scan import Scan
from nodeagent.host import HostRoot

Collector = Callable[[Scan, pb.HardwareInventory, list[str]], None]

COLLECTORS: dict[str, Collector] = {
    "pci": pci.collect,
    "system": system.collect,
    "cpu": cpu.collect,
    "memory": memory.collect,
    "numa": numa.collect,
    "gpu": gpu.collect,
    "nvswitch": nvswitch.collect,
    "rdma": rdma.collect,
    "nvme": nvme.collect,
    "network": network.collect,
    "software": software.collect,
}


def discover(
    root: HostRoot,
    only: Iterable[str] | None = None,
    recordings: Recordings | None = None,
) -> pb.HardwareInventory:
    """The inventory of `root`.

    `only` limits the run to some collectors (re-discovery of one device class);
    `recordings`, when given, receives what each probe read, for snapshots.
    """
    inv = pb.HardwareInventory(source=root.label)
    scan = Scan(root)
    selected = set(only) if only is not None else set(COLLECTORS)
    for name, collect in COLLECTORS.items():
        if name in selected:
            _run(inv, name, lambda errors, c=collect: c(scan, inv, errors))  # type: ignore[misc]
    if "gpu" in selected:

        def nvml_step(errors: list[str]) -> None:
            merge_nvml(inv, nvml.PROBE.read(root, inv, recordings=recordings), errors)

        _run(inv, "probe:nvml", nvml_step)
        for g in inv.gpus:
            _settle_health(g)
    if "gpu" in selected or "rdma" in selected:
        _run(inv, "affinity", lambda errors: compute_affinity(scan, inv, errors))
    for dev in inv.rdma_devices:
        if dev.fw_version:
            inv.software.nic_firmware.add(
                device=dev.name, pci_address=dev.pci_address, version=dev.fw_version
            )
    return inv


def _run(inv: pb.HardwareInventory, name: str, body: Callable[[list[str]], None]) -> None:
    errors: list[str] = []
    start = time.perf_counter()
    try:
        body(errors)
    except Exception as exc:
        errors.append(
            f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ValueError | OSError)
            else str(exc)
        )
    inv.collectors.add(
        name=name,
        success=not errors,
        duration_seconds=time.perf_counter() - start,
        errors=errors,
    )


def merge_nvml(
    inv: pb.HardwareInventory, data: nvml.NvmlRecording | None, errors: list[str]
) -> None:
    """Refine GPUs with what NVML read, joined on the PCI address."""
    if not data or not data.get("available"):
        return
    sw = inv.software
    sw.nvidia_driver_version = str(data.get("driver_version") or sw.nvidia_driver_version)
    sw.cuda_driver_version = str(data.get("cuda_driver_version") or "")
    sw.nvml_version = str(data.get("nvml_version") or "")
    by_address = {g.pci_address: g for g in inv.gpus}
    by_index = {g.index: g for g in inv.gpus if g.vendor_id == pci_ids.NVIDIA}
    for dev in data.get("devices") or []:
        try:
            if "pci_bus_id" not in dev:  # lost before NVML could say where it is
                target = by_index.get(int(dev["index"]))
                if target is None:
                    errors.append(f"NVML GPU index {dev['index']} is lost and not in sysfs")
                    continue
                _apply_nvml_device(target, dev)
                continue
            address = parse.normalize_bdf(str(dev["pci_bus_id"]))
            target = by_address.get(address)
            if target is None:
                errors.append(f"NVML lists GPU {address}, which sysfs does not")
                continue
            _apply_nvml_device(target, dev)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            errors.append(f"NVML device record {str(dev)[:60]}: {type(exc).__name__}: {exc}")


def _apply_nvml_device(g: pb.Gpu, dev: nvml.NvmlDevice) -> None:
    if dev.get("lost"):
        g.health = pb.HEALTH_FAILED
        g.health_reasons.append("GPU is lost (NVML GpuIsLost): fell off the bus")
        return
    if dev.get("name"):
        g.model, g.model_source = str(dev["name"]), "nvml"
    for text in (
        "uuid",
        "serial",
        "board_part_number",
        "vbios_version",
        "architecture",
        "compute_capability",
        "fabric_state",
    ):
        if value := dev.get(text):
            setattr(g, text, str(value))
    for flag in ("persistence_mode", "mig_mode", "ecc_mode"):
        if (on := dev.get(flag)) is not None:
            setattr(g, flag, bool(on))
    if (memory := dev.get("memory_total_bytes")) is not None:
        g.memory_bytes = int(memory)
    if (module := dev.get("module_id")) is not None:
        g.module_id = int(module)
    if (temperature := dev.get("temperature_celsius")) is not None:
        g.temperature_celsius = float(temperature)
    if (draw := dev.get("power_draw_watts")) is not None:
        g.power_draw_watts = float(draw)
    if (limit := dev.get("power_limit_watts")) is not None:
        g.power_limit_watts = float(limit)
    if ecc := dev.get("ecc_errors"):
        g.ecc_errors.CopyFrom(pb.EccErrors(**{k: int(v) for k, v in ecc.items()}))
    rows = dev.get("remapped_rows")
    if rows:
        g.remapped_rows.CopyFrom(
            pb.RemappedRows(
                correctable=int(rows.get("correctable", 0)),
                uncorrectable=int(rows.get("uncorrectable", 0)),
                pending=bool(rows.get("pending")),
                failure=bool(rows.get("failure")),
            )
        )
    links = dev.get("nvlink_states") or []
    g.nvlinks_total, g.nvlinks_active = len(links), sum(1 for s in links if s)
    g.health = pb.HEALTH_OK  # NVML answered; problems below lower it


def _settle_health(g: pb.Gpu) -> None:
    """Turn the facts gathered about a GPU into its health and reasons."""
    if g.health == pb.HEALTH_FAILED:
        return
    reasons = []
    if g.remapped_rows.failure:
        reasons.append("row remapping failed")
    if g.remapped_rows.pending:
        reasons.append("row remapping pending: GPU reset needed")
    if g.ecc_errors.uncorrected_volatile:
        reasons.append(f"{g.ecc_errors.uncorrected_volatile} uncorrected ECC errors since boot")
    if g.nvlinks_total and g.nvlinks_active < g.nvlinks_total:
        reasons.append(f"NVLink {g.nvlinks_active} of {g.nvlinks_total} links active")
    g.health_reasons.extend(r for r in reasons if r not in g.health_reasons)
    if g.remapped_rows.failure:
        g.health = pb.HEALTH_FAILED
    elif g.health_reasons:
        g.health = pb.HEALTH_DEGRADED


def compute_affinity(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    """The topo -m matrix over GPUs then RDMA devices, and each GPU's nearest NICs."""
    members: list[tuple[pb.AffinityDevice, list[str]]] = []
    gpus = sorted(inv.gpus, key=lambda g: (g.vendor != "nvidia", g.vendor, g.index))
    for g in gpus:
        entry = pb.AffinityDevice(
            label=f"GPU{len(members)}",
            name=str(g.index),
            pci_address=g.pci_address,
            numa_node=g.numa_node,
            cpu_affinity=g.cpu_affinity,
        )
        members.append((entry, _chain(scan, g.pci_address, errors)))
    n_gpus = len(members)
    for dev in inv.rdma_devices:
        if dev.pci_address:
            entry = pb.AffinityDevice(
                label=f"NIC{len(members) - n_gpus}",
                name=dev.name,
                pci_address=dev.pci_address,
                numa_node=dev.numa_node,
            )
            members.append((entry, _chain(scan, dev.pci_address, errors)))
    if not members:
        return
    meshed = bool(inv.nvswitches) or any(g.fabric_state == "completed" for g in gpus)
    matrix = inv.pcie_affinity
    for i, (a, chain_a) in enumerate(members):
        row = matrix.rows.add()
        for j, (b, chain_b) in enumerate(members):
            if i == j:
                row.cells.append("X")
            elif (
                i < n_gpus
                and j < n_gpus
                and meshed
                and gpus[i].nvlinks_active
                and gpus[j].nvlinks_active
            ):
                row.cells.append(f"NV{min(gpus[i].nvlinks_active, gpus[j].nvlinks_active)}")
            elif not chain_a or not chain_b:
                row.cells.append("SYS" if a.numa_node != b.numa_node else "NODE")
            else:
                row.cells.append(affinity.pcie_level(chain_a, chain_b, a.numa_node, b.numa_node))
        matrix.devices.append(a)
    for i, g in enumerate(gpus):
        nics = list(matrix.rows[i].cells[n_gpus:])
        g.nearest_rdma_devices.extend(
            matrix.devices[n_gpus + k].name for k in affinity.nearest(nics)
        )


def _chain(scan: Scan, address: str, errors: list[str]) -> list[str]:
    try:
        return scan.pci_chain(address)
    except (OSError, ValueError) as exc:
        errors.append(f"{address}: {exc}")
        return []


# Inventory fields each collector fills (hotplug re-discovery replaces just these).
COLLECTOR_FIELDS: dict[str, tuple[str, ...]] = {
    "pci": (),
    "system": ("system",),
    "cpu": ("cpu",),
    "memory": ("memory",),
    "numa": ("numa_nodes",),
    "gpu": ("gpus",),
    "nvswitch": ("nvswitches",),
    "rdma": ("rdma_devices",),
    "nvme": ("nvme_controllers",),
    "network": ("network_interfaces",),
    "software": ("software",),
}


def rediscover(root: HostRoot, base: pb.HardwareInventory, only: Iterable[str]) -> None:
    """Re-run some collectors and replace their part of `base` in place.

    GPUs and RDMA devices always go together: the affinity matrix and each GPU's
    nearest NICs depend on both.
    """
    selected = set(only) | {"pci"}
    if selected & {"gpu", "rdma"}:
        selected |= {"gpu", "rdma"}
    fresh = discover(root, only=selected)
    for name in selected:
        for field in COLLECTOR_FIELDS[name]:
            base.ClearField(field)
            if field in ("system", "cpu", "memory", "software"):
                getattr(base, field).CopyFrom(getattr(fresh, field))
            else:
                getattr(base, field).extend(getattr(fresh, field))
    if "rdma" in selected:
        base.pcie_affinity.CopyFrom(fresh.pcie_affinity)
        base.software.ClearField("nic_firmware")
        base.software.nic_firmware.extend(fresh.software.nic_firmware)
    kept = [c for c in base.collectors if c.name not in {c.name for c in fresh.collectors}]
    base.ClearField("collectors")
    base.collectors.extend(kept + list(fresh.collectors))
