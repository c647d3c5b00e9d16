"""Faults around the inventory: its database restarting under load, its disk filling up."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.postgres import Postgres
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory.conftest import ServiceThread, enrol, register

Factory = Callable[..., ServiceThread]


def _code(fn: Callable[[], object]) -> grpc.StatusCode | None:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return None


def test_postgresql_restart_under_heartbeat_load(
    service_factory: Factory, own_postgres: Postgres, dgx_inventory: pb.HardwareInventory
) -> None:
    svc = service_factory(own_postgres.new_database(), liveness_flush_seconds=0.1)
    admin = svc.admin()
    nodes = [enrol(svc, admin, variant(dgx_inventory, 600 + i)) for i in range(4)]
    stop, beats, failures = threading.Event(), [0], [0]
    codes: set[grpc.StatusCode] = set()

    def load() -> None:
        while not stop.is_set():
            for node in nodes:
                try:
                    node.client.Heartbeat(
                        ipb.HeartbeatRequest(node_id=node.id, phase="DISCOVERED"), timeout=5
                    )
                    beats[0] += 1
                except grpc.RpcError as exc:  # checked below, in the test's own thread
                    codes.add(exc.code())
                    failures[0] += 1
            time.sleep(0.02)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        own_postgres.pg_ctl("stop", "-m", "fast")
        # what needs the database says UNAVAILABLE, clearly; nothing crashes
        with pytest.raises(grpc.RpcError) as err:
            admin.GetNode(ipb.GetNodeRequest(node_id=nodes[0].id))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in (err.value.details() or "")
        assert _code(lambda: admin.ListNodes(ipb.ListNodesRequest())) == grpc.StatusCode.UNAVAILABLE
        time.sleep(1)
        own_postgres.pg_ctl(
            "start",
            "-w",
            "-o",
            f"-p {own_postgres.port} -k {own_postgres.sock} -c listen_addresses=''",
        )
        # it recovers without a restart of the service
        wait_for(
            lambda: _code(lambda: admin.ListNodes(ipb.ListNodesRequest())) is None,
            30,
            "the service to use the database again",
        )
        before = beats[0]
        wait_for(lambda: beats[0] > before + 20, 20, "heartbeats to flow")
        seen = admin.GetNode(ipb.GetNodeRequest(node_id=nodes[0].id)).last_seen.ToSeconds()
        assert time.time() - seen < 10, "liveness writes resumed after the outage"
        assert enrol(svc, admin, variant(dgx_inventory, 699)).id
    finally:
        stop.set()
        worker.join(30)
    # heartbeats are answered from memory: an outage of the database may slow them, but
    # any refusal is UNAVAILABLE (retry later), never an internal error
    assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}, codes


def test_disk_full(
    service_factory: Factory, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    if os.geteuid() != 0:
        pytest.fail("mounting a small filesystem needs root (CI runs as root)")
    small = scratch / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        db = small / "inventory.db"
        svc = service_factory(f"sqlite:///{db}")
        admin = svc.admin()
        token = admin.CreateToken(ipb.CreateTokenRequest(max_uses=1000)).secret
        acked = [register(svc, token, variant(dgx_inventory, 700))[0].node_id]
        filler = small / "filler"
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 60 * 1024))
        codes = set()
        for n in range(701, 720):
            try:
                acked.append(register(svc, token, variant(dgx_inventory, n))[0].node_id)
            except grpc.RpcError as exc:
                codes.add(exc.code())
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert "full" in (exc.details() or ""), exc.details()
        assert codes == {grpc.StatusCode.UNAVAILABLE}, "the disk filled up and it said so"
        filler.unlink()
        acked.append(register(svc, token, variant(dgx_inventory, 799))[0].node_id)
        ids = {n.id for n in admin.ListNodes(ipb.ListNodesRequest(page_size=1000)).nodes}
        assert set(acked) <= ids, "every acknowledged registration survived"
        svc.stop()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
