"""CPU: model, sockets, cores and threads, from sysfs topology and /proc/cpuinfo."""

from __future__ import annotations

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

CPU_DIR = "sys/devices/system/cpu"
# Flags that change where work should run; the full list is hundreds of words.
PLACEMENT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "sha_ni",
    "vaes",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)
# aarch64 cpuinfo has no model name; name the server parts that carry GPUs.
ARM_PARTS = {
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd0c"): "ARM Neoverse-N1",
}


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
    cpu = inv.cpu
    online_text = root.attr(f"{CPU_DIR}/online")
    if online_text:
        online = parse.parse_cpulist(online_text, f"{CPU_DIR}/online")
    else:
        online = sorted(
            int(n[3:]) for n in root.listdir(CPU_DIR) if n.startswith("cpu") and n[3:].isdigit()
        )
    if not online:
        raise ValueError(f"{CPU_DIR}: no CPUs listed")
    cpu.online = parse.format_cpulist(online)
    cpu.logical_cpus = len(online)

    packages: set[int] = set()
    cores: set[tuple[int, int]] = set()
    for n in online:
        topo = f"{CPU_DIR}/cpu{n}/topology"
        pkg_text = root.attr(f"{topo}/physical_package_id")
        core_text = root.attr(f"{topo}/core_id")
        if not pkg_text or not core_text:
            errors.append(f"{topo}: physical_package_id/core_id unreadable")
            continue
        pkg = parse.parse_int(pkg_text, f"{topo}/physical_package_id")
        packages.add(pkg)
        cores.add((pkg, parse.parse_int(core_text, f"{topo}/core_id")))
    if packages and cores:
        cpu.sockets = len(packages)
        cpu.cores_per_socket = len(cores) // len(packages)
        cpu.threads_per_core = max(1, len(online) // len(cores))

    first = _first_cpuinfo_block(root.read_text("proc/cpuinfo"))
    cpu.vendor = first.get("vendor_id") or first.get("CPU implementer", "")
    cpu.model_name = first.get("model name") or ARM_PARTS.get(
        (first.get("CPU implementer", ""), first.get("CPU part", "")), ""
    )
    flags = set((first.get("flags") or first.get("Features", "")).split())
    cpu.flags.extend(f for f in PLACEMENT_FLAGS if f in flags)

    freq = f"{CPU_DIR}/cpu{online[0]}/cpufreq"
    cpu.scaling_driver = root.attr(f"{freq}/scaling_driver")
    max_khz = root.attr(f"{freq}/cpuinfo_max_freq")
    if max_khz:
        cpu.max_frequency_mhz = parse.parse_int(max_khz, f"{freq}/cpuinfo_max_freq") // 1000


def _first_cpuinfo_block(text: str) -> dict[str, str]:
    """Keys of the first processor block (all blocks agree on model and vendor)."""
    block, _, _ = text.partition("\n\n")
    return {k: v for k, v in parse.parse_key_values(block).items() if k}
