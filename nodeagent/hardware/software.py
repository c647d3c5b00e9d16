"""Software that defines what the hardware can do: kernel, OS, NVIDIA driver."""

from __future__ import annotations

import re

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.scan import Scan
from nodeagent.host import HostRoot

NVIDIA_VERSION = "proc/driver/nvidia/version"
MLX5_VERSION = "sys/module/mlx5_core/version"
OFED_INFO = ("usr/bin/ofed_info", "usr/sbin/ofed_info")
# the version ofed_info prints (`ofed_info -s`): MLNX_OFED_LINUX-24.10-1.1.4.0, and DOCA-OFED's
# OFED-internal-25.01-0.6.0
_OFED_RE = re.compile(r"(?:MLNX_OFED_LINUX|OFED-internal)-(\d[\w.-]*\w)")
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
    sw.rdma_stack, sw.ofed_version = rdma_stack(root)


def rdma_stack(root: HostRoot) -> tuple[str, str]:
    """(inbox | ofed | "", OFED version). An in-tree mlx5_core has no `version` attribute (the
    kernel dropped MODULE_VERSION from in-tree drivers) and comes without mlx_compat; MLNX_OFED
    and DOCA-OFED build mlx5_core out of tree with both, and install ofed_info, whose text
    holds the release. "" when mlx5_core is not loaded: no stack to speak of."""
    try:
        loaded = {line.split()[0] for line in root.read_text("proc/modules").splitlines() if line}
    except OSError:
        loaded = set()
    if "mlx5_core" not in loaded and not root.exists("sys/module/mlx5_core"):
        return "", ""
    module_version = root.attr(MLX5_VERSION)
    if not module_version and "mlx_compat" not in loaded:
        return "inbox", ""
    for rel in OFED_INFO:
        m = _OFED_RE.search(root.attr(rel))
        if m:
            return "ofed", m.group(1)
    return "ofed", module_version
