"""Read tuning state back from a HostRoot: small parsers for the kernel's and tools' formats.

Formats are those in os_tuning.md §2: sysfs selections (`always [madvise] never`),
/proc/modules, /proc/mdstat, /proc/mounts, modprobe.d `options` lines, pam_limits files,
systemd drop-ins, and what the boot loader will pass at the next boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from nodeagent.host import HostReadError, HostRoot


def selection(text: str) -> str:
    """The active choice of a sysfs selection file: `always [madvise] never` -> `madvise`."""
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def cmdline(text: str) -> list[str]:
    return text.split()


def loaded_modules(root: HostRoot) -> set[str]:
    return {line.split()[0] for line in root.read_text("proc/modules").splitlines() if line}


def sysctl_path(key: str) -> str:
    return "proc/sys/" + key.replace(".", "/")


def normalise_param(value: str) -> str:
    """Module parameters: bools read back as Y/N but are written as 1/0 or y/n."""
    low = value.strip().lower()
    return {"1": "Y", "y": "Y", "true": "Y", "0": "N", "n": "N", "false": "N"}.get(low, value)


def modprobe_options(root: HostRoot) -> dict[str, dict[str, str]]:
    """`options <module> k=v ...` from lib/ and etc/ modprobe.d; etc wins, later files win."""
    out: dict[str, dict[str, str]] = {}
    for d in ("lib/modprobe.d", "usr/lib/modprobe.d", "etc/modprobe.d"):
        for name in root.listdir(d):
            if not name.endswith(".conf"):
                continue
            for line in root.read_text(f"{d}/{name}").splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "options":
                    opts = out.setdefault(parts[1].replace("-", "_"), {})
                    for kv in parts[2:]:
                        k, _, val = kv.partition("=")
                        opts[k] = val
    return out


def _config_lines(root: HostRoot, main: str, dropins: str) -> Iterator[str]:
    """Lines of `main` then of each `dropins/*.conf`, in the order a "later wins" reader needs.

    pam_limits and systemd both read a file and then its drop-in directory. A file that
    cannot be read is skipped, so the others still give the effective value.
    """
    files = [main]
    files += [f"{dropins}/{n}" for n in root.listdir(dropins) if n.endswith(".conf")]
    for rel in files:
        try:
            text = root.read_text(rel)
        except HostReadError:
            continue
        yield from text.splitlines()


def memlock_limits(root: HostRoot) -> dict[str, str]:
    """Effective `*` memlock limits from limits.conf then limits.d/*.conf (later wins)."""
    out: dict[str, str] = {}
    for line in _config_lines(root, "etc/security/limits.conf", "etc/security/limits.d"):
        parts = line.split("#", 1)[0].split()
        if len(parts) == 4 and parts[0] == "*" and parts[2] == "memlock":
            kinds = ("soft", "hard") if parts[1] == "-" else (parts[1],)
            for kind in kinds:
                out[kind] = parts[3]
    return out


def systemd_default(root: HostRoot, key: str) -> str:
    """A [Manager] setting from system.conf and its drop-ins (later wins); '' if unset."""
    value = ""
    for line in _config_lines(root, "etc/systemd/system.conf", "etc/systemd/system.conf.d"):
        k, sep, val = line.strip().partition("=")
        if sep and k.strip() == key:
            value = val.strip()
    return value


_WANTS = ("multi-user.target.wants", "graphical.target.wants", "sysinit.target.wants")


def unit_enabled(root: HostRoot, unit: str) -> bool:
    """`systemctl enable` leaves a symlink in a .wants directory (the target may be elsewhere)."""
    return any(
        root.readlink_name(f"{base}/{w}/{unit}")
        for base in ("etc/systemd/system", "lib/systemd/system")
        for w in _WANTS
    )


def unit_active(root: HostRoot, unit: str) -> bool:
    """systemd links /run/systemd/units/invocation:<unit> while a unit is started."""
    return bool(root.readlink_name(f"run/systemd/units/invocation:{unit}"))


@dataclass(frozen=True)
class MdArray:
    name: str
    state: str
    level: str
    members: tuple[str, ...]


def mdstat(root: HostRoot) -> list[MdArray]:
    """`md1 : active raid0 nvme9n1[7] nvme8n1[6] ...` lines of /proc/mdstat."""
    try:
        text = root.read_text("proc/mdstat")
    except HostReadError:
        return []
    arrays = []
    for line in text.splitlines():
        m = re.match(r"(md\w+)\s*:\s*(\S+)\s+(?:\(\S+\)\s+)?(raid\d+|linear)?\s*(.*)", line)
        if not m:
            continue
        members = tuple(re.sub(r"\[\d+\].*", "", p) for p in m.group(4).split())
        arrays.append(MdArray(m.group(1), m.group(2), m.group(3) or "", members))
    return arrays


def mounts(root: HostRoot) -> dict[str, tuple[str, str]]:
    """Mount point -> (source, fstype) from /proc/mounts (the last mount on a point wins)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        text = root.read_text("proc/mounts")
    except HostReadError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out[parts[1].replace("\\040", " ")] = (parts[0], parts[2])
    return out


def next_boot_cmdline(root: HostRoot, kernel_release: str) -> list[str] | None:
    """What the boot loader will pass next time: the default grub.cfg entry, or the BLS
    entry of this kernel; None when neither can be read (then only the drop-in tells)."""
    for rel in ("boot/grub/grub.cfg", "boot/grub2/grub.cfg"):
        try:
            text = root.read_text(rel)
        except HostReadError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "linux" and "$" not in line:
                return parts[2:]
    entries = sorted(n for n in root.listdir("boot/loader/entries") if n.endswith(".conf"))
    mine = [n for n in entries if kernel_release and kernel_release in n] or entries
    for name in mine:
        for line in root.read_text(f"boot/loader/entries/{name}").splitlines():
            if line.startswith("options "):
                return line.split()[1:]
    return None
