"""Convert `nvidia-smi -q` text into an NVML probe recording.

`nvidia-smi -q` prints one indented tree per GPU (`Key : Value` lines, section headers
without a colon, `N/A` for what the driver does not support). The recording is what the NVML
probe would have stored on that machine (`<root>/.nodeagent/probes/nvml.json`), so published
`-q` outputs of real machines can stand in for NVML in tests.

Fields nvidia-smi shows as `N/A` are left out of the device dict, as the probe leaves out a
field NVML answers with NotSupported. `-q` prints neither the NVML version nor NVLink states:
`nvml_version` is empty and `nvlink_states` is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Tree = dict[str, "str | Tree"]

_GPU_HEADER = re.compile(r"^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$")
_ABSENT = {"", "N/A", "[N/A]", "Not Available", "[Not Supported]", "Not Supported"}

# (architecture, product-name fragment, compute capability). Drivers of these recordings do
# not print the capability, and an architecture alone does not settle it (GA100 8.0 but GA10x
# 8.6, B200 10.0 but GB202 12.0); a GPU matching no row gets none.
_COMPUTE_CAPABILITY = (
    ("ampere", "A100", "8.0"),
    ("ampere", "A30", "8.0"),
    ("ada", "", "8.9"),
    ("hopper", "", "9.0"),
    ("blackwell", "B200", "10.0"),
    ("blackwell", "B300", "10.3"),
    ("blackwell", "RTX PRO", "12.0"),
)
_ARCHITECTURES = {"ada lovelace": "ada"}
_FABRIC_STATES = {"not started": "not_started", "in progress": "in_progress"}


def normalise_pci_bus_id(bus_id: str) -> str:
    """`00000000:18:00.0` (NVML, nvidia-smi) -> `0000:18:00.0` (sysfs)."""
    domain, _, rest = bus_id.strip().partition(":")
    return f"{int(domain, 16):04x}:{rest.lower()}"


def parse_smi_q(text: str) -> dict[str, Any]:
    """The NVML probe recording equivalent to one `nvidia-smi -q` output."""
    header, gpus = _parse_tree(text)
    return {
        "probe": "nvml",
        "version": 1,
        "available": True,
        "error": "",
        "driver_version": _text(header, "Driver Version") or "",
        "cuda_driver_version": _text(header, "CUDA Version") or "",
        "nvml_version": "",
        "devices": [_device(i, bus_id, tree) for i, (bus_id, tree) in enumerate(gpus)],
    }


def _parse_tree(text: str) -> tuple[Tree, list[tuple[str, Tree]]]:
    """Top-level keys, and (bus id, tree) per `GPU <bus id>` block, in printed order."""
    header: Tree = {}
    gpus: list[tuple[str, Tree]] = []
    stack: list[tuple[int, Tree]] = [(-1, header)]
    for line in text.splitlines():
        if not line.strip() or line.startswith("="):
            continue
        indent = len(line) - len(line.lstrip(" "))
        gpu = _GPU_HEADER.match(line)
        if gpu:
            tree: Tree = {}
            gpus.append((gpu.group(1), tree))
            stack = [(-1, header), (0, tree)]
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        key, colon, value = line.partition(":")
        if colon:
            parent.setdefault(key.strip(), value.strip())
        else:
            section: Tree = {}
            parent[key.strip()] = section
            stack.append((indent, section))
    return header, gpus


def _get(tree: Tree, *path: str) -> str | Tree | None:
    node: str | Tree | None = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _text(tree: Tree, *path: str) -> str | None:
    value = _get(tree, *path)
    if not isinstance(value, str) or value in _ABSENT:
        return None
    return value


def _number(tree: Tree, *path: str) -> float | None:
    """Leading number of a value such as `100.89 W`, `30 C`, `16x`, `81559 MiB`."""
    value = _text(tree, *path)
    match = re.match(r"-?\d+(\.\d+)?", value or "")
    return float(match.group()) if match else None


def _integer(tree: Tree, *path: str) -> int | None:
    return _as_int(_number(tree, *path))


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _flag(tree: Tree, *path: str) -> bool | None:
    value = _text(tree, *path)
    if value in ("Enabled", "Yes"):
        return True
    if value in ("Disabled", "No"):
        return False
    return None


def _first(tree: Tree, *paths: tuple[str, ...]) -> float | None:
    for path in paths:
        value = _number(tree, *path)
        if value is not None:
            return value
    return None


def _device(index: int, bus_id: str, g: Tree) -> dict[str, Any]:
    architecture = _text(g, "Product Architecture")
    arch = _ARCHITECTURES.get(architecture.lower(), architecture.lower()) if architecture else None
    name = _text(g, "Product Name")
    memory_mib = _integer(g, "FB Memory Usage", "Total")
    fabric = _text(g, "Fabric", "State")
    power = ("GPU Power Readings",), ("Power Readings",)
    device: dict[str, Any] = {
        "index": index,
        "pci_bus_id": normalise_pci_bus_id(_text(g, "PCI", "Bus Id") or bus_id),
        "name": name,
        "uuid": _text(g, "GPU UUID"),
        "serial": _text(g, "Serial Number"),
        "board_part_number": _text(g, "Board Part Number"),
        "vbios_version": _text(g, "VBIOS Version"),
        "architecture": arch,
        "compute_capability": _text(g, "Compute Capability") or _capability(arch, name),
        "memory_total_bytes": None if memory_mib is None else memory_mib * 1048576,
        "persistence_mode": _flag(g, "Persistence Mode"),
        "mig_mode": _flag(g, "MIG Mode", "Current"),
        "ecc_mode": _flag(g, "ECC Mode", "Current"),
        "ecc_errors": _ecc_errors(g),
        "remapped_rows": _remapped_rows(g),
        "temperature_celsius": _number(g, "Temperature", "GPU Current Temp"),
        "power_draw_watts": _first(g, *((*p, "Power Draw") for p in power)),
        "power_limit_watts": _first(
            g, *((*p, k) for p in power for k in ("Current Power Limit", "Enforced Power Limit"))
        ),
        "pcie": _pcie(g),
        "module_id": _as_int(_first(g, ("Platform Info", "Module Id"), ("Module ID",))),
        "fabric_state": _FABRIC_STATES.get(fabric.lower(), fabric.lower()) if fabric else None,
        "lost": False,
    }
    return {key: value for key, value in device.items() if value is not None}


def _capability(arch: str | None, name: str | None) -> str | None:
    for row_arch, fragment, capability in _COMPUTE_CAPABILITY:
        if arch == row_arch and fragment in (name or ""):
            return capability
    return None


def _ecc_errors(g: Tree) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for scope in ("Volatile", "Aggregate"):
        section = _get(g, "ECC Errors", scope)
        if not isinstance(section, dict):
            continue
        if "Single Bit" in section:  # drivers before r470: Single/Double Bit, each with a Total
            corrected = _integer(section, "Single Bit", "Total")
            uncorrected = _integer(section, "Double Bit", "Total")
        else:  # SRAM/DRAM Correctable and Uncorrectable counters
            corrected = _sum(section, lambda key: "Uncorrectable" not in key)
            uncorrected = _sum(section, lambda key: "Uncorrectable" in key)
        if corrected is not None and uncorrected is not None:
            counts[f"corrected_{scope.lower()}"] = corrected
            counts[f"uncorrected_{scope.lower()}"] = uncorrected
    return counts or None


def _sum(section: Tree, wanted: Callable[[str], bool]) -> int | None:
    values = [
        _integer(section, key)
        for key, value in section.items()
        if isinstance(value, str) and "orrectable" in key and wanted(key)
    ]
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _remapped_rows(g: Tree) -> dict[str, Any] | None:
    rows = {
        "correctable": _integer(g, "Remapped Rows", "Correctable Error"),
        "uncorrectable": _integer(g, "Remapped Rows", "Uncorrectable Error"),
        "pending": _flag(g, "Remapped Rows", "Pending"),
        "failure": _flag(g, "Remapped Rows", "Remapping Failure Occurred"),
    }
    present = {key: value for key, value in rows.items() if value is not None}
    return present or None


def _pcie(g: Tree) -> dict[str, int] | None:
    link = ("PCI", "GPU Link Info")
    values = {
        "current_generation": _integer(g, *link, "PCIe Generation", "Current"),
        "max_generation": _integer(g, *link, "PCIe Generation", "Max"),
        "current_width": _integer(g, *link, "Link Width", "Current"),
        "max_width": _integer(g, *link, "Link Width", "Max"),
    }
    present = {key: value for key, value in values.items() if value is not None}
    return present or None
