"""The extravars of one apply run: rendered files, commands, and which actions are due.

Actions come from a verification done just before the run: a runtime value that drifted
(a governor someone changed by hand, a module unloaded) gets its command run again even
when no file changed, and nothing runs when nothing drifted, which keeps a re-run at
zero changed tasks. The RAID is only ever created when it is absent and every member is
idle; an existing array, whatever it looks like, is reported and left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.host import HostRoot
from nodeagent.tuning import readback as rb
from nodeagent.tuning import render
from nodeagent.tuning import validators as v
from nodeagent.tuning.verify import DRIFT, raid_members

RHEL_LIKE = {"ol", "rhel", "rocky", "almalinux", "centos", "fedora"}
_SYSFS_SETTINGS = ("cpu_governor", "transparent_hugepages", "transparent_hugepages_defrag")


def boot_loader(inv: pb.HardwareInventory) -> str:
    """Debian and Ubuntu read /etc/default/grub.d; the EL family keeps BLS entries (grubby)."""
    return "grubby" if inv.software.os_id in RHEL_LIKE else "grub.d"


def _drifted(report: tpb.TuningReport, prefix: str) -> list[tpb.SettingResult]:
    return [s for s in report.settings if s.status == DRIFT and s.setting.startswith(prefix)]


def raid_action(
    profile: tpb.TuningProfile, inv: pb.HardwareInventory, root: HostRoot, report: tpb.TuningReport
) -> tuple[dict[str, Any] | None, str]:
    """(what mdadm gets, why not): create only an absent array from idle, whole drives."""
    if not profile.os.HasField("nvme_raid"):
        return None, ""
    raid = profile.os.nvme_raid
    state = next((s for s in report.settings if s.setting == f"nvme_raid:{raid.device}"), None)
    if state is None or state.status != DRIFT:
        return None, ""
    if state.actual != "absent":
        return None, f"{raid.device} exists as {state.actual}; an existing array is never rebuilt"
    members = raid_members(raid, inv)
    if len(members) != raid.members:
        return None, (
            f"{len(members)} drives match {raid.member_model!r}, the profile wants "
            f"{raid.members}; not creating {raid.device}"
        )
    sources = " ".join(src for src, _ in rb.mounts(root).values())
    busy = {m for a in rb.mdstat(root) for m in a.members}
    for ns in members:
        partitions = [p for p in root.listdir(f"sys/block/{ns.name}") if p.startswith(ns.name)]
        if ns.name in busy or f"/dev/{ns.name}" in sources or partitions:
            return None, f"{ns.name} is in use (mounted, partitioned or in an array)"
        if not ns.wwid:
            return None, f"{ns.name} has no WWID to name it by; refusing to use nvmeXnY names"
    return {
        "device": v.check("md_device", raid.device),
        "level": raid.level,
        "chunk_kib": raid.chunk_kib or 512,
        "filesystem": v.check("filesystem", raid.filesystem),
        "members": [f"/dev/disk/by-id/nvme-{v.check('wwid', ns.wwid)}" for ns in members],
        "mount_unit": v.mount_unit(raid.mount_point),
    }, ""


def build(
    profile: tpb.TuningProfile,
    inv: pb.HardwareInventory,
    root: HostRoot,
    report: tpb.TuningReport,
    commands: dict[str, list[str]],
    target_root: str,
) -> tuple[dict[str, Any], list[str]]:
    """(extravars, notes): notes are things apply will not do, said out loud."""
    loader = boot_loader(inv)
    files = render.golden_files(profile, grub_dropin=loader == "grub.d")
    raid, raid_note = raid_action(profile, inv, root, report)
    mount = _drifted(report, "mount:")
    services = [s.setting.split(":", 1)[1] for s in _drifted(report, "service:")]
    if any(s.setting == "pcie_acs" for s in _drifted(report, "pcie_acs")):
        services.append(render.ACS_UNIT)
    sysfs = [
        s
        for s in report.settings
        if s.status == DRIFT and (s.setting in _SYSFS_SETTINGS or s.setting == "hugepages:2048kB")
    ]
    extravars = {
        "nodeagent": {
            "profile": profile.name,
            "target_root": target_root.rstrip("/"),
            "boot_loader": loader,
            "cmdline": render.cmdline_tokens(profile.os),
            "files": [
                {"path": f.path, "content": f.content, "mode": f.mode, "tag": f.tag} for f in files
            ],
            "paths": {"sysctl": render.SYSCTL_FILE, "tmpfiles": render.TMPFILES_FILE},
            "commands": commands,
            "actions": {
                "boot_loader": bool(_drifted(report, "kernel_cmdline:")),
                "sysctl": bool(_drifted(report, "sysctl:")),
                "tmpfiles": bool(sysfs),
                "modprobe": [s.setting.split(":", 1)[1] for s in _drifted(report, "module:")],
                "enable": services,
                "raid": raid,
                "mount": bool(mount)
                and raid is None
                and not raid_note
                and not _drifted(report, "nvme_raid:"),
                "mount_unit": v.mount_unit(profile.os.nvme_raid.mount_point)
                if profile.os.HasField("nvme_raid")
                else "",
            },
        }
    }
    notes = [raid_note] if raid_note else []
    return extravars, notes


def write_private_dir(base: Path, extravars: dict[str, Any], python: str) -> None:
    """ansible-runner's input layout: env/extravars and inventory/hosts."""
    import json

    (base / "env").mkdir(parents=True, exist_ok=True)
    (base / "inventory").mkdir(exist_ok=True)
    (base / "env" / "extravars").write_text(json.dumps(extravars, indent=1))
    (base / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={python}\n"
    )
