"""A real inventory service on loopback, over SQLite and over a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.service import InventoryService
from testbed.postgres import PG_BIN, Postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | None]:
    if PG_BIN is None or os.geteuid() != 0 or not shutil.which("runuser"):
        yield None
        return
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of the test's own, for tests that stop and restart it."""
    if os.geteuid() != 0:
        pytest.fail("starting PostgreSQL as the postgres user needs root (CI runs as root)")
    pg = Postgres().start()
    yield pg
    with contextlib.suppress(Exception):
        pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, postgres: Postgres | None, scratch: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{scratch / 'inventory.db'}"
    if postgres is None:
        pytest.fail(
            "PostgreSQL is needed: run as root with Debian's postgresql installed "
            "(make test installs it)"
        )
    return postgres.new_database()


class ServiceThread:
    """The real service on its own event loop in a thread; tests use sync gRPC clients."""

    def __init__(self, config: InventoryConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.svc: InventoryService = self._do(self._start())
        self.address = f"127.0.0.1:{self.svc.port}"
        self.bootstrap = f"127.0.0.1:{self.svc.bootstrap_port}"
        self.ca_pem = self.svc.ca.pem

    async def _start(self) -> InventoryService:
        svc = InventoryService(self.config)
        await svc.start()
        return svc

    def _do(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return  # already stopped
        self._do(self.svc.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def admin(self, role: str = "admin", name: str = "alice") -> Client:
        cert, key = self.svc.ca.issue_client(name, role)
        return Client(channels.secure_channel(self.address, self.ca_pem, cert, key))

    def bootstrap_client(self) -> Client:
        return Client(channels.secure_channel(self.bootstrap, self.ca_pem))

    def agent_settings(self, scratch: Path, heartbeat: float = 0.3) -> str:
        """The [watch] tail and [inventory] table of an agent that enrols here: a fresh
        bootstrap token in `scratch`, the pin, a fast heartbeat."""
        token = scratch / "token"
        token.write_text(self.admin().CreateToken(ipb.CreateTokenRequest()).secret)
        token.chmod(0o600)
        return (
            f'rdma_poll_seconds = 5\n[inventory]\naddress = "{self.address}"\n'
            f'bootstrap_address = "{self.bootstrap}"\nca_hash = "{self.svc.ca.pin}"\n'
            f'token_file = "{token}"\nheartbeat_seconds = {heartbeat}\n'
        )


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)
        return lambda request, timeout=10: method(request, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


class EnrolledNode:
    def __init__(self, service: ServiceThread, node_id: str, key: bytes, cert: bytes) -> None:
        self.id, self.key, self.cert = node_id, key, cert
        self.client = Client(channels.secure_channel(service.address, service.ca_pem, cert, key))


def register(
    service: ServiceThread,
    token: str,
    inv: pb.HardwareInventory,
) -> tuple[ipb.RegisterResponse, bytes]:
    key = tlsutil.new_key()
    boot = service.bootstrap_client()
    try:
        resp = boot.Register(
            ipb.RegisterRequest(
                token=token, inventory=inv, csr_pem=tlsutil.make_csr(key, "n").decode()
            )
        )
    finally:
        boot.close()
    return resp, tlsutil.key_pem(key)


def enrol(service: ServiceThread, admin: Client, inv: pb.HardwareInventory) -> EnrolledNode:
    secret = admin.CreateToken(ipb.CreateTokenRequest()).secret
    resp, key = register(service, secret, inv)
    return EnrolledNode(service, resp.node_id, key, resp.certificate_pem.encode())


@pytest.fixture
def service_factory(scratch: Path) -> Iterator[Callable[..., ServiceThread]]:
    started: list[ServiceThread] = []

    def make(database: str, **overrides: Any) -> ServiceThread:
        cfg = InventoryConfig(
            listen="127.0.0.1:0",
            data_dir=str(scratch / "inv"),
            database=database,
            **{"metrics_listen": "", **overrides},  # not 9746: tests run side by side
        )
        svc = ServiceThread(cfg)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        with contextlib.suppress(Exception):  # already stopped by the test
            svc.stop()


@pytest.fixture(scope="session")
def dgx_inventory(machine_root: Callable[..., Path]) -> pb.HardwareInventory:
    return discover(HostRoot(machine_root("dgx-h100")))


@pytest.fixture(scope="session")
def fleet_inventories(machine_root: Callable[..., Path]) -> dict[str, pb.HardwareInventory]:
    return {
        name: discover(HostRoot(machine_root(name)))
        for name in ("dgx-h100", "oci-bm-gpu-h100-8", "cpu-node")
    }
