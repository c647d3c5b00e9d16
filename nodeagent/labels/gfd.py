"""GFD keys (nvidia.com/*), with NVIDIA GPU Feature Discovery's formulas.

From NVIDIA/k8s-device-plugin `internal/lm`: the product is the NVML name with
characters outside `[A-Za-z0-9-_. ]` dropped and whitespace runs joined by `-`; the
memory is NVML's total in MiB; the family follows the CUDA compute capability; the
machine is the sanitised DMI product name. Only what is known is written: without
NVML (no driver) there is no memory and no CUDA version, and GFD would write none
either. Sharing, MIG and timestamp keys depend on GFD's own configuration and are
left to GFD.
"""

from __future__ import annotations

import re

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import pci_ids

PREFIX = "nvidia.com"
_DROP = re.compile(r"[^A-Za-z0-9\-_. ]")
_FAMILIES = {
    1: "tesla",
    2: "fermi",
    3: "kepler",
    5: "maxwell",
    6: "pascal",
    9: "hopper",
    10: "blackwell",
    12: "blackwell",
    13: "rubin",
}


def sanitise(text: str) -> str:
    """GFD's `sanitise`: drop odd characters, whitespace runs become one `-`."""
    return "-".join(_DROP.sub("", text).split())


def family(major: int, minor: int) -> str:
    """GFD's getArchFamily, extended as its current table is (10/12 blackwell, 13 rubin)."""
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ada-lovelace" if minor == 9 else "ampere"
    return _FAMILIES.get(major, "undefined")


def _compute_capability(text: str) -> tuple[int, int] | None:
    major, _, minor = text.partition(".")
    if major.isdigit() and minor.isdigit():
        return int(major), int(minor)
    return None


def _mode(gpus: list[pb.Gpu]) -> str:
    classes = {g.pci_class[:4] for g in gpus}
    if classes == {"0300"}:
        return "graphics"
    return "compute" if classes == {"0302"} else "unknown"


def labels(inv: pb.HardwareInventory) -> dict[str, str]:
    gpus = sorted((g for g in inv.gpus if g.vendor_id == pci_ids.NVIDIA), key=lambda g: g.index)
    if not gpus:
        return {}
    first = gpus[0]
    out = {f"{PREFIX}/gpu.count": str(len(gpus)), f"{PREFIX}/gpu.mode": _mode(gpus)}
    if first.model:
        out[f"{PREFIX}/gpu.product"] = sanitise(first.model)
    if first.memory_bytes:
        out[f"{PREFIX}/gpu.memory"] = str(first.memory_bytes // (1 << 20))
    cc = _compute_capability(first.compute_capability)
    if cc and cc[0]:
        out[f"{PREFIX}/gpu.family"] = family(*cc)
        out[f"{PREFIX}/gpu.compute.major"] = str(cc[0])
        out[f"{PREFIX}/gpu.compute.minor"] = str(cc[1])
    out[f"{PREFIX}/gpu.machine"] = sanitise(inv.system.product) or "unknown"
    out |= _driver(inv.software.nvidia_driver_version)
    out |= _runtime(inv.software.cuda_driver_version)
    return out


def _driver(version: str) -> dict[str, str]:
    parts = version.split(".")
    if not 2 <= len(parts) <= 3 or not all(parts[:2]):
        return {}
    major, minor, rev = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    return {
        f"{PREFIX}/cuda.driver-version.major": major,
        f"{PREFIX}/cuda.driver-version.minor": minor,
        f"{PREFIX}/cuda.driver-version.revision": rev,
        f"{PREFIX}/cuda.driver-version.full": version,
        f"{PREFIX}/cuda.driver.major": major,  # deprecated names GFD still writes
        f"{PREFIX}/cuda.driver.minor": minor,
        f"{PREFIX}/cuda.driver.rev": rev,
    }


def _runtime(version: str) -> dict[str, str]:
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return {}
    major, minor = str(int(major)), str(int(minor))  # GFD formats the integers NVML returns
    return {
        f"{PREFIX}/cuda.runtime-version.major": major,
        f"{PREFIX}/cuda.runtime-version.minor": minor,
        f"{PREFIX}/cuda.runtime-version.full": f"{major}.{minor}",
        f"{PREFIX}/cuda.runtime.major": major,
        f"{PREFIX}/cuda.runtime.minor": minor,
    }
