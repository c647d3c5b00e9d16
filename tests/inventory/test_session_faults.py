"""Faults under heartbeat streams: PostgreSQL restarted, and a replica killed while its streams
carry nodes (a few hundred simulated stream clients plus one real agent; bench/fleet.py
carries the 10,000). Nothing acknowledged is lost, no node is marked unreachable for a
closed stream, and a dead replica's nodes are on the other within two intervals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.agent_process import AgentProcess
from testbed.inventory_process import InventoryProcess
from testbed.postgres import Postgres
from testbed.stream_fleet import SimNode, StreamStats, enrol_nodes, stream_fleet
from testbed.wait import wait_for

SIMULATED = 200
INTERVAL = 3  # seconds, the inventories' heartbeat interval


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    if os.geteuid() != 0:
        pytest.fail("starting PostgreSQL as the postgres user needs root (CI runs as root)")
    pg = Postgres().start()
    yield pg
    with contextlib.suppress(Exception):
        pg.stop()


class Streams:
    """Simulated nodes on their streams, on an event loop in a thread, for `seconds`."""

    def __init__(self, nodes: list[SimNode], targets: list[str], ca: bytes, seconds: float):
        self.stats = StreamStats()
        self.thread = threading.Thread(
            target=asyncio.run,
            args=(stream_fleet(nodes, targets, ca, INTERVAL, seconds, self.stats),),
            daemon=True,
        )
        self.thread.start()

    def join(self) -> StreamStats:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.stats


def listed(inv: InventoryProcess) -> dict[str, ipb.Node]:
    resp = inv.admin().ListNodes(ipb.ListNodesRequest(page_size=1000), timeout=10)
    return {n.id: n for n in resp.nodes}


def check_nothing_acknowledged_lost(inv: InventoryProcess, stats: StreamStats) -> None:
    """Every phase a node had acknowledged is its state; every last_seen is as new as its
    last acknowledged beat (the liveness batch of the replica that acknowledged it, or a
    later beat's on the other)."""
    time.sleep(0.5)  # the survivor's liveness batch (flushed every 0.2 s)
    nodes = listed(inv)
    assert stats.acked_phase and set(stats.acked_phase.values()) == {"READY"}
    assert {n: nodes[n].state for n in stats.acked_phase} == {
        n: ipb.READY for n in stats.acked_phase
    }
    late = {
        n: (nodes[n].last_seen.ToNanoseconds() / 1e9, at)
        for n, at in stats.acked_at.items()
        if nodes[n].last_seen.ToNanoseconds() / 1e9 < at - 1.0  # clocks: one host, 1 s slack
    }
    assert late == {}


def test_postgresql_restarted_under_streams(
    own_postgres: Postgres, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    inv = InventoryProcess(
        scratch / "inv",
        own_postgres.new_database(),
        extra=f"heartbeat_interval_seconds = {INTERVAL}\nreport_poll_seconds = 0.5\n",
    ).start()
    try:
        token = inv.admin().CreateToken(ipb.CreateTokenRequest(max_uses=1000), timeout=10).secret
        nodes = asyncio.run(
            enrol_nodes(inv.bootstrap, inv.ca().pem, token, dgx_inventory, SIMULATED)
        )
        streams = Streams(nodes, [inv.address], inv.ca().pem, 22)
        time.sleep(INTERVAL * 1.5)  # every node on its stream
        own_postgres.pg_ctl("stop", "-m", "fast")
        # READY needs a transaction: beats fail (the stream ends, the node backs off and
        # sends it again) until PostgreSQL is back; the DISCOVERED beats before it were
        # answered from memory
        streams.stats.phase = "READY"
        time.sleep(2)
        own_postgres.pg_ctl(
            "start",
            "-w",
            "-o",
            f"-p {own_postgres.port} -k {own_postgres.sock} -c listen_addresses='' -c fsync=on",
        )
        stats = streams.join()
        assert len(stats.acked_phase) == SIMULATED
        assert stats.reconnects > 0, "the outage ended some streams"
        check_nothing_acknowledged_lost(inv, stats)
        assert all(n.reachable for n in listed(inv).values())
    finally:
        inv.kill(signal.SIGTERM)


def test_a_replica_killed_while_its_streams_carry_nodes(
    postgres: Postgres | None,
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
    machine_root: Callable[..., Path],
) -> None:
    assert postgres is not None, "PostgreSQL is needed (make test installs it)"
    database = postgres.new_database()
    extra = f"heartbeat_interval_seconds = {INTERVAL}\nreport_poll_seconds = 0.5\n"
    a = InventoryProcess(scratch / "a", database, extra=extra).start()
    b = InventoryProcess(scratch / "b", database, extra=extra, share_ca_of=a).start()
    replicas = {a.address: a, b.address: b}
    agent: AgentProcess | None = None
    try:
        admin = a.admin()
        token = admin.CreateToken(ipb.CreateTokenRequest(max_uses=1000), timeout=10).secret
        nodes = asyncio.run(enrol_nodes(a.bootstrap, a.ca().pem, token, dgx_inventory, SIMULATED))
        (scratch / "token").write_text(token)
        (scratch / "token").chmod(0o600)
        agent = AgentProcess(
            scratch / "agent",
            machine_root("cpu-node"),
            watch=f'rdma_poll_seconds = 5\n[inventory]\naddress = "{a.address}"\n'
            f'addresses = ["{a.address}", "{b.address}"]\n'
            f'bootstrap_address = "{a.bootstrap}"\n'
            f'ca_hash = "{a.ca().pin}"\ntoken_file = "{scratch / "token"}"\n',
        )
        agent.start()

        def agent_replica() -> str:
            found = re.findall(r"inventory connected \(([^)]+)\)", agent.log_path.read_text())
            return found[-1] if found else ""

        wait_for(lambda: agent_replica() != "", 30, "the agent to connect")
        with agent.channel() as ch:
            agent_node = agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5).node_id
        streams = Streams(nodes, [a.address, b.address], a.ca().pem, 30)
        time.sleep(INTERVAL * 2)
        stats = streams.stats
        # spread: each replica carries a share of the fleet
        shares = stats.per_replica()
        assert len(stats.replica) == SIMULATED and min(shares.values()) > SIMULATED // 4
        stats.phase = "READY"  # acknowledged from here on: must survive the kill
        time.sleep(INTERVAL * 1.5)
        doomed_address = agent_replica()
        doomed = replicas[doomed_address]
        survivor = b if doomed is a else a
        on_doomed = {n for n, r in stats.replica.items() if [a, b][r] is doomed}
        killed = time.time()
        doomed.kill(signal.SIGKILL)
        # the real agent moves within two intervals
        wait_for(lambda: agent_replica() == survivor.address, INTERVAL * 2 + 1, "the agent to move")
        # no node is ever marked unreachable for a dead replica or a closed stream
        while time.time() - killed < INTERVAL * 3:
            down = [n.id for n in listed(survivor).values() if not n.reachable]
            assert down == []
            time.sleep(0.5)
        stats = streams.join()
        moved = {n: stats.moved_at.get(n, 0) - killed for n in on_doomed}
        assert set(stats.replica[n] for n in on_doomed) == {[a, b].index(survivor)}
        slow = {n: round(s, 1) for n, s in moved.items() if not 0 < s <= INTERVAL * 2}
        assert slow == {}
        check_nothing_acknowledged_lost(survivor, stats)
        mine = survivor.admin().GetNode(ipb.GetNodeRequest(node_id=agent_node), timeout=10)
        assert mine.reachable and mine.last_seen.ToNanoseconds() / 1e9 > killed
    finally:
        if agent is not None:
            agent.close()
        for inv in (a, b):
            if inv.proc is not None and inv.proc.poll() is None:
                inv.kill(signal.SIGTERM)
