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


@dataclass(frozen=True)
class Kind:
    name: str
    pattern: str
    max_len: int
    example: str

    def matches(self, value: str) -> bool:
        return len(value) <= self.max_len and re.fullmatch(self.pattern, value) is not None


# What a value of each kind may be, matched whole. The patterns get a table of their own
# because the longest fill a line by themselves; _LIMITS holds the rest of each Kind.
_PATTERNS: dict[str, str] = {
    "profile_name": r"[a-z0-9][a-z0-9-]*",
    # GRUB sources the drop-in inside double quotes and 10_linux pastes the result into
    # grub.cfg unquoted, where ';' ends a command: keep to plain shell words.
    "cmdline_token": r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=[A-Za-z0-9_.,:/+=@-]+)?",
    "sysctl_key": r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+",
    # several numbers are one value (net.ipv4.tcp_rmem = 4096 87380 6291456)
    "sysctl_value": r"[A-Za-z0-9_.:,/-]+( [A-Za-z0-9_.:,/-]+)*",
    "module": r"[a-z0-9][a-z0-9_-]*",
    "module_param": r"[a-z0-9_]+",
    "module_value": r"[A-Za-z0-9_.,:/+-]+",
    "service": r"[A-Za-z0-9][A-Za-z0-9@_.:-]*",
    "governor": r"performance|powersave|schedutil|ondemand|conservative|userspace",
    "thp": r"always|madvise|never",
    "thp_defrag": r"always|defer|defer\+madvise|madvise|never",
    "memlock": r"unlimited|[1-9][0-9]{0,11}",
    "md_device": r"md[0-9]{1,3}",
    "filesystem": r"ext4|xfs",
    "mount_point": r"(/[a-z0-9][a-z0-9_]*)+",
    "aspm_policy": r"default|performance|powersave|powersupersave",
    "wwid": r"[A-Za-z0-9][A-Za-z0-9._:-]*",
    # matched against inventory strings only; still no control characters or quotes
    "glob": r"[A-Za-z0-9 _.,:()+*?\[\]/#-]+",
    # Redfish: DMTF names are [A-Za-z][A-Za-z0-9_]+; Supermicro adds '/()-' and '#hex'
    "bios_attribute": r"[A-Za-z][A-Za-z0-9_/()-]*(#[0-9A-Fa-f]{1,8})?",
    "bios_value": r"[A-Za-z0-9 _.,:()+/-]*",
    "toggle": r"enabled|disabled",
    "performance_profile": r"maximum|balanced",
    "apply_time": r"OnReset|Immediate|AtMaintenanceWindowStart|InMaintenanceWindowOnReset",
    # no user:password@ in the URL: credentials come from a file, never a URL or a log
    "bmc_url": r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?",
    "link_layer": r"infiniband|ethernet",
    # a profile setting as `tune diff` and `deviations:` name it: os.transparent_hugepages
    "setting_path": r"[a-z_]+(\.[A-Za-z0-9_.-]+)*",
}

# (max_len, example) of each kind: the length cap, and the value an error message shows.
_LIMITS: dict[str, tuple[int, str]] = {
    "profile_name": (63, "hgx-h100"),
    "cmdline_token": (256, "iommu=pt"),
    "sysctl_key": (128, "vm.swappiness"),
    "sysctl_value": (128, "1"),
    "module": (56, "nvidia-peermem"),
    "module_param": (64, "uvm_disable_hmm"),
    "module_value": (128, "1"),
    "service": (128, "nvidia-persistenced"),
    "governor": (16, "performance"),
    "thp": (8, "madvise"),
    "thp_defrag": (16, "madvise"),
    "memlock": (12, "unlimited"),
    "md_device": (5, "md0"),
    "filesystem": (4, "ext4"),
    "mount_point": (128, "/raid"),
    "aspm_policy": (16, "performance"),
    "wwid": (128, "eui.52bab0f431295702"),
    "glob": (128, "NVIDIA H100*"),
    "bios_attribute": (96, "ProcCStates"),
    "bios_value": (128, "Disabled"),
    "toggle": (8, "disabled"),
    "performance_profile": (8, "maximum"),
    "apply_time": (32, "OnReset"),
    "bmc_url": (256, "https://10.0.0.5"),
    "link_layer": (10, "infiniband"),
    "setting_path": (160, "os.transparent_hugepages"),
}

if _PATTERNS.keys() != _LIMITS.keys():  # a kind in one table only: fail at import, not at use
    raise ImportError(f"validators: kinds differ: {sorted(_PATTERNS.keys() ^ _LIMITS.keys())}")

KINDS: dict[str, Kind] = {
    name: Kind(name, pattern, *_LIMITS[name]) for name, pattern in _PATTERNS.items()
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
