"""System identity: DMI, hostname, architecture, boot mode."""

from __future__ import annotations

import os

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.scan import Scan

DMI = "sys/class/dmi/id"
_DMI_FIELDS = {
    "vendor": "sys_vendor",
    "product": "product_name",
    "serial": "product_serial",
    "board_vendor": "board_vendor",
    "board_name": "board_name",
    "board_serial": "board_serial",
    "bios_vendor": "bios_vendor",
    "bios_version": "bios_version",
    "bios_date": "bios_date",
    "chassis_type": "chassis_type",
}


def collect(scan: Scan, inv: pb.HardwareInventory, errors: list[str]) -> None:
    root = scan.root
    system = inv.system
    if not root.is_dir(DMI):
        errors.append(f"{DMI}: missing (no SMBIOS tables, or not captured)")
    else:
        for field_name, attr in _DMI_FIELDS.items():
            setattr(system, field_name, _printable(root.attr(f"{DMI}/{attr}")))
        system.uuid = _printable(root.attr(f"{DMI}/product_uuid")).lower()
    system.hostname = _printable(root.attr("proc/sys/kernel/hostname") or root.attr("etc/hostname"))
    arch = root.attr("proc/sys/kernel/arch")
    if not arch and root.is_live:
        arch = os.uname().machine
    system.architecture = arch
    system.boot_mode = "uefi" if root.is_dir("sys/firmware/efi") else "bios"


def _printable(text: str) -> str:
    """DMI strings come from firmware; keep them printable and bounded."""
    return "".join(ch for ch in text if ch.isprintable())[:256].strip()
