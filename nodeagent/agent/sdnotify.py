"""systemd notification protocol (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...).

Twelve lines over a datagram socket; the python-systemd bindings need libsystemd
headers to build, which a slim image does not have, so the protocol is spoken
directly (it is a stable, documented interface: sd_notify(3)).
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send to $NOTIFY_SOCKET; False when not run by systemd (or the send failed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, in seconds, when systemd asked for pings for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
