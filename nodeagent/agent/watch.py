"""Hardware watchers: udev hotplug, NVML XID events, RDMA port polling.

Each blocking source runs in its own thread and hands events to the asyncio loop
through `loop.call_soon_threadsafe`; none of them ever blocks the gRPC server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# udev subsystem -> the collectors to re-run when a device of it comes or goes
HOTPLUG_CLASSES: dict[str, set[str]] = {
    "pci": {"pci", "gpu", "nvswitch", "rdma", "nvme", "network"},
    "nvme": {"nvme"},
    "infiniband": {"rdma"},
    "net": {"network"},
}
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError


class UdevWatcher:
    """pyudev netlink monitor for PCI, NVMe, InfiniBand and net add/remove."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_event: Callable[[str, str, str], None]
    ) -> None:
        self.loop = loop
        self.on_event = on_event  # (subsystem, action, device name)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            import pyudev
        except ImportError as exc:  # libudev missing: the agent still runs, without hotplug
            log.warning("hotplug watch off: %s", exc)
            return False
        # udevd delivers events after rules ran (stable names); without it, read the kernel's.
        source = "udev" if os.path.exists("/run/udev/control") else "kernel"
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
            for subsystem in HOTPLUG_CLASSES:
                monitor.filter_by(subsystem)
            monitor.start()
        except (OSError, ValueError) as exc:
            log.warning("hotplug watch off: %s", exc)
            return False
        self._thread = threading.Thread(target=self._run, args=(monitor,), name="udev", daemon=True)
        self._thread.start()
        log.info("hotplug watch on (%s events)", source)
        return True

    def _run(self, monitor: Any) -> None:
        # Block on the monitor and a wake-up pipe: no periodic wake-ups while idle.
        with selectors.DefaultSelector() as sel:
            sel.register(monitor.fileno(), selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                sel.select()
                if self._stop.is_set():
                    break
                try:
                    device = monitor.poll(timeout=0)
                except OSError as exc:
                    log.warning("udev monitor: %s", exc)
                    continue
                if device is not None:
                    self._deliver(device)
        os.close(self._wake_r)

    def _deliver(self, device: Any) -> None:
        if device.action in ("add", "remove", "change"):
            self.loop.call_soon_threadsafe(
                self.on_event, str(device.subsystem), str(device.action), str(device.sys_name)
            )

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        os.close(self._wake_w)


class XidWatcher:
    """NVML event loop for XID critical errors, in its own thread (the wait blocks)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_xid: Callable[[str, int], None], nvml: Any = None
    ) -> None:
        self.loop = loop
        self.on_xid = on_xid  # (pci address, xid)
        self.nvml = nvml
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            if self.nvml is None:
                import pynvml

                self.nvml = pynvml
            self.nvml.nvmlInit()
        except Exception as exc:  # no driver: no XID watch, not an error
            log.info("XID watch off: %s", exc)
            return False
        self._thread = threading.Thread(target=self._run, name="nvml-xid", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        nvml = self.nvml
        event_set = nvml.nvmlEventSetCreate()
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    supported = nvml.nvmlDeviceGetSupportedEventTypes(handle)
                    nvml.nvmlDeviceRegisterEvents(handle, supported & XID_EVENT, event_set)
                except nvml.NVMLError as exc:
                    log.info("GPU %d: no XID events (%s)", i, exc)
            while not self._stop.is_set():
                try:
                    data = nvml.nvmlEventSetWait_v2(event_set, 2000)
                except nvml.NVMLError_Timeout:
                    continue
                except nvml.NVMLError as exc:
                    log.warning("XID wait: %s", exc)
                    continue
                if data.eventType & XID_EVENT:
                    bus = nvml.nvmlDeviceGetPciInfo(data.device).busId
                    bus = bus.decode() if isinstance(bus, bytes) else str(bus)
                    domain, _, rest = bus.partition(":")
                    address = f"{int(domain, 16):04x}:{rest.lower()}"
                    self.loop.call_soon_threadsafe(self.on_xid, address, int(data.eventData))
        finally:
            nvml.nvmlEventSetFree(event_set)
            nvml.nvmlShutdown()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
