"""Faults under heartbeat streams: PostgreSQL restarted under a few hundred streams, and a
replica killed while the streams carry 10,000 simulated nodes plus one real agent.
Nothing acknowledged is lost, no node is marked unreachable for a closed stream, and a
dead replica's nodes are on the other within two intervals."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from testbed.agent_process import AgentProcess
from testbed.inventory_process import InventoryProcess
from testbed.postgres import Postgres
from testbed.stream_fleet import SimNode, StreamProcesses, StreamStats, enrol_nodes, stream_fleet
from testbed.wait import wait_for

SIMULATED = 200  # nodes on streams while PostgreSQL restarts
INTERVAL = 3  # seconds, that test's heartbeat interval
FLEET = 10_000  # nodes on streams when a replica is killed
# seconds: 667 beats/s over both replicas, and room for 5,000 handshakes after the kill,
# on a 2-core machine that also runs PostgreSQL and the 10,000 simulated agents
FLEET_INTERVAL = 15


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
    """Every node, a page of 1,000 at a time."""
    admin, token = inv.admin(), ""
    out: dict[str, ipb.Node] = {}
    while True:
        resp = admin.ListNodes(ipb.ListNodesRequest(page_size=1000, page_token=token), timeout=30)
        out |= {n.id: n for n in resp.nodes}
        if not (token := resp.next_page_token):
            return out


def check_nothing_acknowledged_lost(
    inv: InventoryProcess, stats: StreamStats, expected: int
) -> None:
    """Every phase a node had acknowledged is its state; every last_seen is as new as its
    last acknowledged beat (the liveness batch of the replica that acknowledged it, or a
    later beat's on the other)."""
    time.sleep(0.5)  # the survivor's liveness batch (flushed every 0.2 s)
    nodes = listed(inv)
    assert len(stats.acked_phase) == expected and set(stats.acked_phase.values()) == {"READY"}
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
        assert stats.reconnects > 0, "the outage ended some streams"
        check_nothing_acknowledged_lost(inv, stats, SIMULATED)
        assert all(n.reachable for n in listed(inv).values())
    finally:
        inv.kill(signal.SIGTERM)


def unreachable(inv: InventoryProcess) -> float:
    """The survivor's own count of unreachable nodes, as an operator's Prometheus reads it
    (the gauge is refreshed every second here: metrics_refresh_seconds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{inv.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(r"^nodeagent_inventory_nodes_unreachable\{[^}]*\} (\S+)$", text, re.M)
    assert found, "the survivor exports its unreachable gauge"
    return sum(float(v) for v in found)


def test_a_replica_killed_while_its_streams_carry_10000_nodes(
    postgres: Postgres | None,
    scratch: Path,
    machine_root: Callable[..., Path],
) -> None:
    """10,000 simulated nodes on streams over two replicas (from two processes of their
    own), plus one real agent; the replica carrying the agent is killed (SIGKILL)."""
    assert postgres is not None, "PostgreSQL is needed (make test installs it)"
    database = postgres.new_database()
    extra = (
        f"heartbeat_interval_seconds = {FLEET_INTERVAL}\nreport_poll_seconds = 0.5\n"
        "metrics_refresh_seconds = 1\n"
    )
    a = InventoryProcess(scratch / "a", database, extra=extra, metrics=True).start()
    b = InventoryProcess(scratch / "b", database, extra=extra, share_ca_of=a, metrics=True)
    b.start()
    replicas = {a.address: a, b.address: b}
    agent: AgentProcess | None = None
    fleet: StreamProcesses | None = None
    try:
        admin = a.admin()
        token = admin.CreateToken(ipb.CreateTokenRequest(max_uses=FLEET + 1), timeout=10).secret
        small = discover(HostRoot(machine_root("cpu-node")))
        half = FLEET // 2

        async def enrol_through_both() -> list[SimNode]:
            ca = a.ca().pem
            firsts, seconds = await asyncio.gather(
                enrol_nodes(a.bootstrap, ca, token, small, half),
                enrol_nodes(b.bootstrap, ca, token, small, FLEET - half, first=half),
            )
            return firsts + seconds

        nodes = asyncio.run(enrol_through_both())
        assert len({n.node_id for n in nodes}) == FLEET
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

        wait_for(lambda: agent_replica() != "", 60, "the agent to connect")
        with agent.channel() as ch:
            agent_node = agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5).node_id
        fleet = StreamProcesses(
            nodes, [a.address, b.address], a.ca().pem, FLEET_INTERVAL, FLEET_INTERVAL * 6
        )
        fleet.wait_open(240)
        time.sleep(FLEET_INTERVAL * 1.2)  # a beat from every node on its stream
        fleet.set_ready()  # acknowledged from here on: must survive the kill
        time.sleep(FLEET_INTERVAL * 1.5)
        doomed = replicas[agent_replica()]
        survivor = b if doomed is a else a
        killed = time.time()
        doomed.kill(signal.SIGKILL)
        # the real agent moves within two intervals
        wait_for(
            lambda: agent_replica() == survivor.address,
            FLEET_INTERVAL * 2 + 1,
            "the agent to move",
        )
        # no node is ever marked unreachable for a dead replica or a closed stream
        while time.time() - killed < FLEET_INTERVAL * 3:
            assert unreachable(survivor) == 0
            time.sleep(1)
        stats = fleet.join(FLEET_INTERVAL * 6)
        before = stats.replica_before
        # every node had its stream before the kill, each replica a share of them
        assert len(before) == FLEET
        shares = Counter(before.values())
        assert len(shares) == 2 and min(shares.values()) > FLEET // 4
        on_doomed = {n for n, r in before.items() if [a, b][r] is doomed}
        moved = {n: stats.moved_at.get(n, 0) - killed for n in on_doomed}
        assert {stats.replica[n] for n in on_doomed} == {[a, b].index(survivor)}
        slow = {n: round(s, 1) for n, s in moved.items() if not 0 < s <= FLEET_INTERVAL * 2}
        assert slow == {}
        check_nothing_acknowledged_lost(survivor, stats, FLEET)
        mine = survivor.admin().GetNode(ipb.GetNodeRequest(node_id=agent_node), timeout=10)
        assert mine.reachable and mine.last_seen.ToNanoseconds() / 1e9 > killed
    finally:
        if fleet is not None:
            fleet.kill()
        if agent is not None:
            agent.close()
        for inv in (a, b):
            if inv.proc is not None and inv.proc.poll() is None:
                inv.kill(signal.SIGTERM)
