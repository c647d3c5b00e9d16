"""Allow-lists for every profile value that reaches a file, a kernel command line or a shell.

Values are accepted by pattern (what a value may be), never by escaping (what it may not
be): a sysctl value that could end a line, a cmdline token that could close GRUB's quotes
or a module name that could become a second command is refused before it is written. The
JSON Schema reuses these patterns, so a bad profile is refused at load time with its line;
apply checks the resolved values again because profiles can also arrive over the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Characters a shell never treats specially outside quotes (shlex's safe set, minus '%').


@dataclass(frozen=True)
class Kind:
    name: str
    pattern: str
    max_len: int
    example: str

    def matches(self, value: str) -> bool:
        return len(value) <= self.max_len and re.fullmatch(self.pattern, value) is not None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("profile_name", r"[a-z0-9][a-z0-9-]*", 63, "hgx-h100"),
        # GRUB sources the drop-in inside double quotes and 10_linux pastes the result into
        # grub.cfg unquoted, where ';' ends a command: keep to plain shell words.
        Kind(
            "cmdline_token",
            r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=[A-Za-z0-9_.,:/+=@-]+)?",
            256,
            "iommu=pt",
        ),
        Kind("sysctl_key", r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+", 128, "vm.swappiness"),
        # several numbers are one value (net.ipv4.tcp_rmem = 4096 87380 6291456)
        Kind("sysctl_value", r"[A-Za-z0-9_.:,/-]+( [A-Za-z0-9_.:,/-]+)*", 128, "1"),
        Kind("module", r"[a-z0-9][a-z0-9_-]*", 56, "nvidia-peermem"),
        Kind("module_param", r"[a-z0-9_]+", 64, "uvm_disable_hmm"),
        Kind("module_value", r"[A-Za-z0-9_.,:/+-]+", 128, "1"),
        Kind("service", r"[A-Za-z0-9][A-Za-z0-9@_.:-]*", 128, "nvidia-persistenced"),
        Kind(
            "governor",
            r"performance|powersave|schedutil|ondemand|conservative|userspace",
            16,
            "performance",
        ),
        Kind("thp", r"always|madvise|never", 8, "madvise"),
        Kind("thp_defrag", r"always|defer|defer\+madvise|madvise|never", 16, "madvise"),
        Kind("memlock", r"unlimited|[1-9][0-9]{0,11}", 12, "unlimited"),
        Kind("md_device", r"md[0-9]{1,3}", 5, "md0"),
        Kind("filesystem", r"ext4|xfs", 4, "ext4"),
        Kind("mount_point", r"(/[a-z0-9][a-z0-9_]*)+", 128, "/raid"),
        Kind("aspm_policy", r"default|performance|powersave|powersupersave", 16, "performance"),
        Kind("wwid", r"[A-Za-z0-9][A-Za-z0-9._:-]*", 128, "eui.52bab0f431295702"),
        # matched against inventory strings only; still no control characters or quotes
        Kind("glob", r"[A-Za-z0-9 _.,:()+*?\[\]/#-]+", 128, "NVIDIA H100*"),
        # Redfish: DMTF names are [A-Za-z][A-Za-z0-9_]+; Supermicro adds '/()-' and '#hex'
        Kind("bios_attribute", r"[A-Za-z][A-Za-z0-9_/()-]*(#[0-9A-Fa-f]{1,8})?", 96, "ProcCStates"),
        Kind("bios_value", r"[A-Za-z0-9 _.,:()+/-]*", 128, "Disabled"),
        Kind("toggle", r"enabled|disabled", 8, "disabled"),
        Kind("performance_profile", r"maximum|balanced", 8, "maximum"),
        Kind(
            "apply_time",
            r"OnReset|Immediate|AtMaintenanceWindowStart|InMaintenanceWindowOnReset",
            32,
            "OnReset",
        ),
        # no user:password@ in the URL: credentials come from a file, never a URL or a log
        Kind(
            "bmc_url",
            r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?",
            256,
            "https://10.0.0.5",
        ),
        Kind("link_layer", r"infiniband|ethernet", 10, "infiniband"),
    )
}

# Top-level directories a RAID must never be mounted over.
_SYSTEM_DIRS = frozenset(
    {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc", "root"}
    | {"run", "sbin", "sys", "tmp", "usr", "var"}
)


class UnsafeValue(ValueError):
    """A value outside its allow-list; the message names the kind and the value."""


def is_valid(kind: str, value: str) -> bool:
    if not KINDS[kind].matches(value):
        return False
    if kind == "mount_point":
        return value.split("/")[1] not in _SYSTEM_DIRS
    return True


def check(kind: str, value: object) -> str:
    """Return `value` if it is a string of `kind`, else raise UnsafeValue."""
    if not isinstance(value, str) or not is_valid(kind, value):
        spec = KINDS[kind]
        raise UnsafeValue(
            f"{value!r} is not a valid {kind} (allowed: {spec.pattern!s}, "
            f"at most {spec.max_len} characters; e.g. {spec.example!r})"
        )
    return value


def service_unit(name: str) -> str:
    """`nvidia-persistenced` -> `nvidia-persistenced.service`; other unit types stay."""
    check("service", name)
    kinds = (".service", ".socket", ".timer", ".mount", ".path", ".target")
    return name if name.endswith(kinds) else f"{name}.service"


def mount_unit(mount_point: str) -> str:
    """systemd's unit name for a mount point (`/raid` -> `raid.mount`).

    The allow-list leaves only [a-z0-9_/] in a mount point, so systemd-escape's rules
    reduce to: drop the leading '/', '/' becomes '-'.
    """
    check("mount_point", mount_point)
    return mount_point.strip("/").replace("/", "-") + ".mount"


def module_file_name(module: str) -> str:
    """The kernel treats '-' and '_' in module names alike; /sys/module uses '_'."""
    return check("module", module).replace("-", "_")
