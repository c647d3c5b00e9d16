"""A live fleet for the dashboard's browser tests: the inventory service and the three
agents on modelled machines that `make demo` starts, one more node registered with a
hostile hostname, the dashboard as a real process, and headless Chromium."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc
from testbed.dashboard import CHROMEDRIVER, CHROMIUM, DashboardProcess, browser
from testbed.fleet import Fleet
from testbed.variants import variant
from testbed.wait import wait_for

HOSTILE = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"


@dataclass
class Live:
    fleet: Fleet
    dashboard: DashboardProcess
    hostile_id: str

    def nodes(self) -> list[dict[str, Any]]:
        out = self.fleet.run("admin", "-o", "json", "nodes", "list")
        return list(json.loads(out)["nodes"])

    def node_id(self, hostname: str) -> str:
        return str(next(n["id"] for n in self.nodes() if n["hostname"] == hostname))


def _register_hostile(fleet: Fleet, inv: pb.HardwareInventory) -> str:
    """A machine whose hostname is markup: its owner controls that string."""
    token = fleet.run("admin", "tokens", "create").strip()
    key = tlsutil.new_key()
    machine = variant(inv, 424242)
    machine.system.hostname = HOSTILE
    with channels.secure_channel(f"127.0.0.1:{fleet.boot_port}", fleet.ca().pem) as channel:
        resp = inventory_pb2_grpc.InventoryServiceStub(channel).Register(
            ipb.RegisterRequest(
                token=token, csr_pem=tlsutil.make_csr(key, "n").decode(), inventory=machine
            ),
            timeout=30,
        )
    return str(resp.node_id)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $NODEAGENT_TEST_ARTIFACTS/dashboard, else pytest's tmp dir."""
    base = os.environ.get("NODEAGENT_TEST_ARTIFACTS")
    if base:
        path = Path(base) / "dashboard"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture(scope="session")
def live(inventory_of: Callable[..., pb.HardwareInventory]) -> Iterator[Live]:
    fleet = Fleet()
    dashboard: DashboardProcess | None = None
    try:
        fleet.start_inventory()
        fleet.start_agents()
        fleet.wait_enrolled()
        wait_for(
            lambda: (
                {
                    n["state"]
                    for n in json.loads(fleet.run("admin", "-o", "json", "nodes", "list"))["nodes"]
                }
                == {"READY"}
            ),
            60,
            "every node READY",
        )
        hostile = _register_hostile(fleet, inventory_of("cpu-node"))
        dashboard = DashboardProcess(fleet.env, refresh=1.0).start()
        status = dashboard.url + "status.json"
        wait_for(
            lambda: json.loads(urllib.request.urlopen(status).read())["nodes"] == 4,
            30,
            "the dashboard to read the fleet",
        )
        yield Live(fleet, dashboard, hostile)
    finally:
        if dashboard is not None:
            dashboard.stop()
        fleet.close()


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"the dashboard tests need Debian's chromium and chromedriver ({CHROMIUM})")
    drv = browser()
    try:
        yield drv
    finally:
        drv.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Browser console entries at SEVERE since the last call (the log is drained)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
