"""The system commands apply runs, as argv lists: real ones on a node, stand-ins in tests.

The playbook never names a command itself; it takes each from this map (extravars
`nodeagent.commands`). Production uses the defaults below. Tests point every entry at
scripts inside a throwaway root (testbed.fakehost), so nothing reaches this
machine's boot loader, kernel or services. Overrides are argv lists of plain words: no
shell ever parses them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_COMMANDS: dict[str, list[str]] = {
    "update_grub": ["update-grub"],
    "grubby": ["grubby"],
    "sysctl": ["sysctl"],
    "systemd_tmpfiles": ["systemd-tmpfiles", "--create"],
    "modprobe": ["modprobe"],
    "systemctl": ["systemctl"],
    "mdadm": ["mdadm"],
    # no -F/-f: mkfs refuses a device that already holds a filesystem
    "mkfs_ext4": ["mkfs.ext4", "-q"],
    "mkfs_xfs": ["mkfs.xfs", "-q"],
    # a minute's notice: the agent reports "rebooting" before the node goes down
    "reboot": ["shutdown", "-r", "+1", "nodeagent-golden-image-tuning"],
}
_ARG = re.compile(r"[A-Za-z0-9_@+=:,./+-]+")


class CommandsError(ValueError):
    """A commands map that is not a map of known names to argv lists of plain words."""


def check(commands: Mapping[str, object]) -> dict[str, list[str]]:
    """Validated full map: unknown names refused, missing ones taken from the defaults."""
    unknown = set(commands) - set(DEFAULT_COMMANDS)
    if unknown:
        raise CommandsError(
            f"unknown commands {sorted(unknown)}; known: {sorted(DEFAULT_COMMANDS)}"
        )
    out = dict(DEFAULT_COMMANDS)
    for name, argv in commands.items():
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise CommandsError(f"command {name!r} must be a non-empty list of strings")
        bad = [a for a in argv if not _ARG.fullmatch(a)]
        if bad:
            raise CommandsError(f"command {name!r}: {bad[0]!r} is not a plain word")
        out[name] = list(argv)
    return out


def load(path: str | Path | None) -> dict[str, list[str]]:
    """The defaults, overridden by a JSON file `{"sysctl": ["/path/to/sysctl"], ...}`."""
    if not path:
        return dict(DEFAULT_COMMANDS)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CommandsError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise CommandsError(f"{path}: expected a JSON object of command name -> argv list")
    return check(data)
