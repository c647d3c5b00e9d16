"""A real inventory service on loopback, over SQLite and over a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
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
from nodeagent.hardware.inventory import discover
from nodeagent.host import HostRoot
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.service import InventoryService

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class Postgres:
    """initdb + pg_ctl as the postgres system user, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nodeagent-pg-"))
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        self.sock.mkdir()
        shutil.chown(self.dir, "postgres")
        shutil.chown(self.sock, "postgres")
        self.port = 20000 + os.getpid() % 20000
        self._db = itertools.count()

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                              text=True, check=check, timeout=120)  # fmt: skip

    def start(self) -> Postgres:
        assert PG_BIN is not None
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")  # fmt: skip
        self.pg_ctl(
            "start", "-w", "-o", f"-p {self.port} -k {self.sock} -c listen_addresses='' -c fsync=on"
        )
        return self

    def pg_ctl(self, *args: str) -> None:
        assert PG_BIN is not None
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.dir / "log"), *args)  # fmt: skip

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.sock}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = f"inv{next(self._db)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | None]:
    if PG_BIN is None or os.geteuid() != 0 or not shutil.which("runuser"):
        yield None
        return
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, postgres: Postgres | None, scratch: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{scratch / 'inventory.db'}"
    if postgres is None:
        pytest.fail("PostgreSQL is needed: run as root with Debian's postgresql installed "
                    "(make test installs it)")  # fmt: skip
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


def register(service: ServiceThread, token: str, inv: pb.HardwareInventory,
             ) -> tuple[ipb.RegisterResponse, bytes]:  # fmt: skip
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
        cfg = InventoryConfig(listen="127.0.0.1:0", data_dir=str(scratch / "inv"),
                              database=database, **overrides)  # fmt: skip
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
    return {name: discover(HostRoot(machine_root(name)))
            for name in ("dgx-h100", "oci-bm-gpu-h100-8", "cpu-node")}  # fmt: skip


def variant(inv: pb.HardwareInventory, n: int, *, uuid: str | None = None) -> pb.HardwareInventory:
    """Another machine of the same model: its own DMI ids, MACs, GUIDs and GPU serials."""
    out = pb.HardwareInventory()
    out.CopyFrom(inv)
    out.system.uuid = uuid if uuid is not None else f"4c4c4544-0000-1000-8000-{n:012x}"
    out.system.serial = f"SN{n:08d}"
    out.system.hostname = f"gpu-{n:05d}"
    for i, nic in enumerate(out.network_interfaces):
        if nic.mac and nic.kind == "ethernet":
            nic.mac = f"02:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:{i:02x}:01"
    for i, dev in enumerate(out.rdma_devices):
        dev.node_guid = f"{n:012x}{i:04x}"
    for i, gpu in enumerate(out.gpus):
        if gpu.serial:
            gpu.serial = f"{n:09d}{i:04d}"
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
