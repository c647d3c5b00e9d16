"""Shared fixtures: modelled machine roots, built once per session (read-only by convention)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.inventory import discover
from nodeagent.host import HostRoot
from nodeagent.testbed.machines import build_machine

SHARED_FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def machine_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once) and return the root of a modelled machine."""
    cache: dict[tuple[str, bool, bool], Path] = {}

    def get(name: str, *, nvml: bool = True, driver: bool = True) -> Path:
        key = (name, nvml, driver)
        if key not in cache:
            dest = tmp_path_factory.mktemp(f"{name}-nvml{int(nvml)}-drv{int(driver)}")
            cache[key] = build_machine(name, dest / "root", nvml=nvml, driver=driver)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def inventory_of(machine_root: Callable[..., Path]) -> Callable[..., pb.HardwareInventory]:
    cache: dict[tuple[str, bool, bool], pb.HardwareInventory] = {}

    def get(name: str, *, nvml: bool = True, driver: bool = True) -> pb.HardwareInventory:
        key = (name, nvml, driver)
        if key not in cache:
            cache[key] = discover(HostRoot(machine_root(name, nvml=nvml, driver=driver)))
        return cache[key]

    return get
