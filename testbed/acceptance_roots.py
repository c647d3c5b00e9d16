"""Modelled roots for the acceptance checks: a built machine root (testbed.machines), copied,
then changed the way a failing part shows itself: a GPU link trained narrow, a rail at half
rate, error counters that grow while the run reads them, EDAC errors, and NVMe device nodes
for fio to read.

Every change replaces a file (unlink, then write) so a hard-linked copy of a shared root
never writes through to it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nodeagent.host import HostRoot


def _replace(root: Path, rel: str, text: str) -> None:
    host = HostRoot(root)
    path = Path(host.host_path(host.resolve(rel)))
    path.unlink()
    path.write_text(text)


def _nvml(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / ".nodeagent/probes/nvml.json").read_text())
    return data


def _save_nvml(root: Path, data: dict[str, object]) -> None:
    path = root / ".nodeagent/probes/nvml.json"
    path.unlink()
    path.write_text(json.dumps(data, indent=2))


def degrade_gpu_link(root: Path, index: int, width: int = 8, generation: int = 5) -> str:
    """GPU `index`'s PCIe link trained at x`width` gen `generation`; returns its bus id."""
    data = _nvml(root)
    devices = data["devices"]
    assert isinstance(devices, list)
    dev = devices[index]
    dev["pcie"] = dict(dev["pcie"], current_width=width, current_generation=generation)
    _save_nvml(root, data)
    return str(dev["pci_bus_id"])


def set_gpu_field(root: Path, index: int, key: str, value: object) -> str:
    """Set one field of GPU `index` in the NVML recording; returns its bus id."""
    data = _nvml(root)
    devices = data["devices"]
    assert isinstance(devices, list)
    devices[index][key] = value
    _save_nvml(root, data)
    return str(devices[index]["pci_bus_id"])


def rail_rate(root: Path, device: str, gbps: int, name: str) -> None:
    """`device` port 1 trained at `gbps` (`name` as the kernel says it, e.g. '4X HDR')."""
    _replace(root, f"sys/class/infiniband/{device}/ports/1/rate", f"{gbps} Gb/sec ({name})\n")


def add_edac(root: Path, controllers: int = 2, *, ce: int = 0, ue: int = 0, ue_mc: int = 0) -> None:
    """EDAC memory controllers with one DIMM each; `ue` uncorrected errors on `ue_mc`."""
    for mc in range(controllers):
        base = root / "sys/devices/system/edac/mc" / f"mc{mc}"
        (base / "dimm0").mkdir(parents=True, exist_ok=True)
        errors = ue if mc == ue_mc else 0
        files = {
            "ce_count": ce,
            "ue_count": errors,
            "ce_noinfo_count": 0,
            "ue_noinfo_count": 0,
            "dimm0/dimm_ce_count": ce,
            "dimm0/dimm_ue_count": errors,
            "dimm0/dimm_label": f"CPU_SrcID#{mc}_MC#0_Chan#0_DIMM#0",
        }
        for rel, value in files.items():
            (base / rel).write_text(f"{value}\n")


def nvme_devices(root: Path, names: Sequence[str], size: int = 8 << 20) -> list[Path]:
    """Regular files at `dev/<name>` holding `size` bytes, for fio's read-only jobs."""
    out = []
    (root / "dev").mkdir(exist_ok=True)
    block = os.urandom(1 << 20)
    for name in names:
        path = root / "dev" / name
        with open(path, "wb") as fh:
            for _ in range(size >> 20):
                fh.write(block)
        out.append(path)
    return out


@contextmanager
def growing_counter(root: Path, rel: str, values: Sequence[int]) -> Iterator[None]:
    """Turn the sysfs file `rel` into a FIFO that answers `values` to successive reads (the
    last one from then on): a counter that changes between the run's two reads."""
    host = HostRoot(root)
    path = Path(host.host_path(host.resolve(rel)))
    path.unlink()
    os.mkfifo(path)
    stop = threading.Event()

    def serve() -> None:
        i = 0
        while not stop.is_set():
            try:
                with open(path, "w") as fh:  # blocks until a reader opens it
                    if stop.is_set():
                        return
                    fh.write(f"{values[min(i, len(values) - 1)]}\n")
            except BrokenPipeError:  # the reader left before the write: offer the value again
                continue
            i += 1
            # let the reader see EOF and close before the next open, or both values would
            # reach the same reader
            time.sleep(0.05)

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        try:  # unblock the writer waiting for a reader
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        worker.join(2.0)
