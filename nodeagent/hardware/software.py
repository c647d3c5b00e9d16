"""Software that defines what the hardware can do: kernel, OS, NVIDIA driver."""

from __future__ import annotations

import re

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan

NVIDIA_VERSION = "proc/driver/nvidia/version"
_NVRM_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
    sw = inv.software
    sw.kernel_release = root.attr("proc/sys/kernel/osrelease")
    sw.kernel_version = root.attr("proc/sys/kernel/version")
    os_release = root.attr("etc/os-release") or root.attr("usr/lib/os-release")
    if os_release:
        fields = parse.parse_os_release(os_release)
        sw.os_id = fields.get("ID", "")
        sw.os_version_id = fields.get("VERSION_ID", "")
        sw.os_pretty_name = fields.get("PRETTY_NAME", "")
    else:
        errors.append("etc/os-release: missing")
    nvrm = root.attr(NVIDIA_VERSION)
    if nvrm:
        m = _NVRM_RE.search(nvrm)
        if not m:
            raise ValueError(f"{NVIDIA_VERSION}: no driver version in {nvrm[:60]!r}")
        sw.nvidia_driver_version = m.group(1)
        sw.nvidia_kernel_module = "open" if "Open Kernel Module" in nvrm else "proprietary"
