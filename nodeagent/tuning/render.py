"""A profile as the files and kernel command line that carry it on a node.

Rendered here, in one place, so apply writes exactly what verify expects to find: the
playbook receives the finished contents and only places them (atomically, with backups).
Every value is checked against its allow-list again on the way out, because a profile may
come over the API rather than through the YAML loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import validators as v

GRUB_DROPIN = "/etc/default/grub.d/90-nodeagent.cfg"
SYSCTL_FILE = "/etc/sysctl.d/90-nodeagent.conf"
MODULES_LOAD_FILE = "/etc/modules-load.d/nodeagent.conf"
MODPROBE_FILE = "/etc/modprobe.d/nodeagent.conf"
LIMITS_FILE = "/etc/security/limits.d/90-nodeagent-memlock.conf"
SYSTEMD_LIMITS_FILE = "/etc/systemd/system.conf.d/90-nodeagent-memlock.conf"
TMPFILES_FILE = "/etc/tmpfiles.d/nodeagent.conf"
ACS_UNIT = "nodeagent-acs-disable.service"
ACS_SCRIPT = "/usr/local/libexec/nodeagent/acs-disable"
UNIT_DIR = "/etc/systemd/system"
HUGE_1G = 1048576

_HEADER = "# Written by nodeagent (profile {name}); `nodeagent tune apply` rewrites this file.\n"


@dataclass(frozen=True)
class GoldenFile:
    path: str  # absolute on the node; the playbook prefixes target_root
    content: str
    mode: str = "0644"
    tag: str = ""  # what must happen when it changes: grub, sysctl, tmpfiles, units, ...


def cmdline_tokens(os_: tpb.OsSettings) -> list[str]:
    """The tokens the profile puts on the kernel command line, explicit ones first."""
    tokens = [v.check("cmdline_token", t) for t in os_.kernel_cmdline]
    if os_.pcie_aspm_policy:
        tokens.append(f"pcie_aspm.policy={v.check('aspm_policy', os_.pcie_aspm_policy)}")
    if os_.HasField("max_cstate"):
        tokens += [
            f"intel_idle.max_cstate={os_.max_cstate}",
            f"processor.max_cstate={os_.max_cstate}",
        ]
    if os_.hugepages.size_kib == HUGE_1G and os_.hugepages.count:
        tokens += ["default_hugepagesz=1G", "hugepagesz=1G", f"hugepages={os_.hugepages.count}"]
    return tokens


def sysctl_settings(os_: tpb.OsSettings) -> dict[str, str]:
    out = {
        v.check("sysctl_key", k): v.check("sysctl_value", val)
        for k, val in sorted(os_.sysctl.items())
    }
    if os_.HasField("numa_balancing"):
        out["kernel.numa_balancing"] = "1" if os_.numa_balancing else "0"
    return out


def sysfs_settings(os_: tpb.OsSettings) -> list[tuple[str, str]]:
    """(path glob, value) pairs applied at runtime and at every boot by systemd-tmpfiles."""
    out: list[tuple[str, str]] = []
    if os_.cpu_governor:
        gov = v.check("governor", os_.cpu_governor)
        out.append(("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor", gov))
    thp = "/sys/kernel/mm/transparent_hugepage"
    if os_.transparent_hugepages:
        out.append((f"{thp}/enabled", v.check("thp", os_.transparent_hugepages)))
    if os_.transparent_hugepages_defrag:
        out.append((f"{thp}/defrag", v.check("thp_defrag", os_.transparent_hugepages_defrag)))
    pages = os_.hugepages
    if pages.size_kib and pages.size_kib != HUGE_1G:  # 1 GiB pages are reserved at boot
        path = f"/sys/kernel/mm/hugepages/hugepages-{pages.size_kib}kB/nr_hugepages"
        out.append((path, str(pages.count)))
    return out


def module_options(os_: tpb.OsSettings) -> dict[str, dict[str, str]]:
    return {
        v.module_file_name(m): {
            v.check("module_param", k): v.check("module_value", val)
            for k, val in sorted(o.options.items())
        }
        for m, o in sorted(os_.module_options.items())
    }


def services(os_: tpb.OsSettings) -> list[str]:
    units = [v.service_unit(s) for s in os_.services]
    return units + ([ACS_UNIT] if os_.disable_pcie_acs else [])


def _acs_unit() -> str:
    return (
        "[Unit]\nDescription=Disable PCIe ACS on bridges so GPU<->NIC P2P is not redirected"
        " (nodeagent)\nAfter=systemd-udev-settle.service\n\n[Service]\nType=oneshot\n"
        f"RemainAfterExit=yes\nExecStart={ACS_SCRIPT}\n\n[Install]\nWantedBy=multi-user.target\n"
    )


# NCCL's troubleshooting script, made to verify: every device whose ACS control register
# can be read is set to 0000 and read back; devices without ACS fail the read and are skipped.
_ACS_SCRIPT = r"""#!/bin/sh
# Written by nodeagent: clear PCIe ACS control on every device that has it (NCCL guidance).
set -u
failed=0
for bdf in $(lspci -D | awk '{print $1}'); do
    if ! setpci -s "$bdf" ECAP_ACS+0x6.w >/dev/null 2>&1; then continue; fi
    setpci -s "$bdf" ECAP_ACS+0x6.w=0000
    if [ "$(setpci -s "$bdf" ECAP_ACS+0x6.w)" != "0000" ]; then
        echo "ACS still on at $bdf" >&2; failed=1
    fi
done
exit $failed
"""


def _raid_mount_unit(raid: tpb.NvmeRaid, profile: str) -> GoldenFile:
    where = v.check("mount_point", raid.mount_point)
    what = f"/dev/md/{v.check('md_device', raid.device)}"
    body = (
        f"[Unit]\nDescription=Local NVMe RAID 0 scratch (nodeagent profile {profile})\n\n"
        f"[Mount]\nWhat={what}\nWhere={where}\nType={v.check('filesystem', raid.filesystem)}\n"
        "Options=defaults,noatime,nofail\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    return GoldenFile(f"{UNIT_DIR}/{v.mount_unit(where)}", body, tag="units")


def golden_files(profile: tpb.TuningProfile, *, grub_dropin: bool = True) -> list[GoldenFile]:
    """Every file the profile owns, with its content; empty sections write no file."""
    os_ = profile.os
    header = _HEADER.format(name=v.check("profile_name", profile.name))
    files: list[GoldenFile] = []
    tokens = cmdline_tokens(os_)
    if tokens and grub_dropin:
        line = 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX ' + " ".join(tokens) + '"\n'
        files.append(GoldenFile(GRUB_DROPIN, header + line, tag="grub"))
    sysctls = sysctl_settings(os_)
    if sysctls:
        body = "".join(f"{k} = {val}\n" for k, val in sysctls.items())
        files.append(GoldenFile(SYSCTL_FILE, header + body, tag="sysctl"))
    if os_.modules:
        body = "".join(f"{v.check('module', m)}\n" for m in os_.modules)
        files.append(GoldenFile(MODULES_LOAD_FILE, header + body, tag="modules"))
    options = module_options(os_)
    if options:
        body = "".join(
            f"options {m} " + " ".join(f"{k}={val}" for k, val in o.items()) + "\n"
            for m, o in options.items()
        )
        files.append(GoldenFile(MODPROBE_FILE, header + body, tag="modprobe"))
    if os_.memlock:
        limit = v.check("memlock", os_.memlock)
        body = f"* soft memlock {limit}\n* hard memlock {limit}\n"
        files.append(GoldenFile(LIMITS_FILE, header + body, tag="limits"))
        systemd = "infinity" if limit == "unlimited" else str(int(limit) * 1024)
        files.append(
            GoldenFile(
                SYSTEMD_LIMITS_FILE,
                header + f"[Manager]\nDefaultLimitMEMLOCK={systemd}\n",
                tag="limits",
            )
        )
    sysfs = sysfs_settings(os_)
    if sysfs:
        body = "".join(f"w {path} - - - - {val}\n" for path, val in sysfs)
        files.append(GoldenFile(TMPFILES_FILE, header + body, tag="tmpfiles"))
    if os_.disable_pcie_acs:
        files.append(GoldenFile(ACS_SCRIPT, _ACS_SCRIPT, mode="0755", tag="units"))
        files.append(GoldenFile(f"{UNIT_DIR}/{ACS_UNIT}", _acs_unit(), tag="units"))
    if os_.HasField("nvme_raid"):
        files.append(_raid_mount_unit(os_.nvme_raid, profile.name))
    return files
