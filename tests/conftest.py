"""Shared fixtures: modelled machine roots, built once per session (read-only by convention)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from testbed.machines import build_machine

SHARED_FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _fast_tmp() -> str | None:
    """tmpfs when there is one: a modelled server is thousands of small files."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A throwaway directory on tmpfs (or the default temp dir) for root copies."""
    path = Path(tempfile.mkdtemp(prefix="nodeagent-test-", dir=_fast_tmp()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def machine_root() -> Iterator[Callable[..., Path]]:
    """Build (once) and return the root of a modelled machine."""
    cache: dict[tuple[str, bool, bool], Path] = {}
    base = Path(tempfile.mkdtemp(prefix="nodeagent-roots-", dir=_fast_tmp()))

    def get(name: str, *, nvml: bool = True, driver: bool = True) -> Path:
        key = (name, nvml, driver)
        if key not in cache:
            dest = base / f"{name}-nvml{int(nvml)}-drv{int(driver)}"
            cache[key] = build_machine(name, dest, nvml=nvml, driver=driver)
        return cache[key]

    yield get
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def inventory_of(machine_root: Callable[..., Path]) -> Callable[..., pb.HardwareInventory]:
    cache: dict[tuple[str, bool, bool], pb.HardwareInventory] = {}

    def get(name: str, *, nvml: bool = True, driver: bool = True) -> pb.HardwareInventory:
        key = (name, nvml, driver)
        if key not in cache:
            cache[key] = discover(HostRoot(machine_root(name, nvml=nvml, driver=driver)))
        return cache[key]

    return get
