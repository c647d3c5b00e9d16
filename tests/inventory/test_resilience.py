"""The inventory as a process: kill -9 during an enrolment burst, restarts under a running
agent, and two replicas over one PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import agent_pb2, fleet_pb2, inventory_pb2_grpc
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.agent_process import AgentProcess
from testbed.inventory_process import InventoryProcess
from testbed.postgres import Postgres
from testbed.variants import variant
from testbed.wait import wait_for


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_during_enrolment_burst_loses_nothing_acknowledged(
    backend: str, postgres: Postgres | None, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    if backend == "postgresql":
        assert postgres is not None, "PostgreSQL is needed (make test installs it)"
        database = postgres.new_database()
    else:
        database = f"sqlite:///{scratch / 'inv.db'}"
    inv = InventoryProcess(scratch, database).start()
    secret = inv.admin().CreateToken(ipb.CreateTokenRequest(max_uses=10000), timeout=10).secret
    ca = inv.ca().pem
    acked: list[str] = []
    stop = threading.Event()

    def worker(offset: int) -> None:
        with channels.secure_channel(inv.bootstrap, ca) as ch:
            stub = inventory_pb2_grpc.InventoryServiceStub(ch)
            n = offset
            while not stop.is_set():
                key = tlsutil.new_key()
                try:
                    resp = stub.Register(
                        ipb.RegisterRequest(
                            token=secret,
                            csr_pem=tlsutil.make_csr(key, "n").decode(),
                            inventory=variant(dgx_inventory, n),
                        ),
                        timeout=5,
                    )
                except grpc.RpcError:
                    return  # the service died under us: that one was not acknowledged
                acked.append(resp.node_id)
                n += 8

    threads = [threading.Thread(target=worker, args=(1000 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 40, 60, "registrations to flow")
    inv.kill(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    inv.start()
    listed = inv.admin().ListNodes(ipb.ListNodesRequest(page_size=1000), timeout=30)
    ids = [n.id for n in listed.nodes]
    assert len(ids) == len(set(ids)), "no node duplicated"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged registrations lost"
    inv.kill(signal.SIGTERM)


def test_agent_enrols_heartbeats_and_survives_inventory_restart(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    inv = InventoryProcess(
        scratch / "inv", f"sqlite:///{scratch / 'inv.db'}", extra="heartbeat_interval_seconds = 1\n"
    )
    inv.start()
    admin = inv.admin()
    token = scratch / "token"
    token.write_text(admin.CreateToken(ipb.CreateTokenRequest(), timeout=10).secret)
    token.chmod(0o600)
    agent = AgentProcess(
        scratch / "agent",
        machine_root("cpu-node"),
        extra_config="",
        watch=f'rdma_poll_seconds = 5\n[inventory]\naddress = "{inv.address}"\n'
        f'bootstrap_address = "{inv.bootstrap}"\n'
        f'ca_hash = "{inv.ca().pin}"\ntoken_file = "{token}"\n',
    )

    def status() -> agent_pb2.AgentStatus:
        with agent.channel() as ch:
            return agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)

    agent.start()
    try:
        wait_for(lambda: status().inventory_state == "connected", 30, "the agent to enrol")
        node_id = status().node_id
        assert node_id
        nodes = admin.ListNodes(ipb.ListNodesRequest(), timeout=10).nodes
        assert [n.id for n in nodes] == [node_id] and nodes[0].hostname == "cpu-node-01"
        key = scratch / "agent" / "state" / "identity" / "node.key"
        assert os.stat(key).st_mode & 0o777 == 0o600
        # the assignment made in the inventory reaches the node (tuning reads it from there)
        admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=node_id,
                assignment=ipb.Assignment(profile="cpu-node", pool="services"),
                fields=["profile", "pool"],
            ),
            timeout=10,
        )
        state_file = scratch / "agent" / "state" / "state.json"
        wait_for(
            lambda: json.loads(state_file.read_text()).get("assigned_profile") == "cpu-node",
            20,
            "the assignment to reach the agent",
        )
        # and its fabric observation reached the fleet view
        topo = inv.fleet().ExportTopology(
            fleet_pb2.ExportTopologyRequest(format="json"), timeout=10
        )
        assert "cpu-node-01" in topo.topology.nodes
        inv.kill(signal.SIGKILL)
        wait_for(
            lambda: status().inventory_state.startswith("unreachable"),
            30,
            "the agent to notice the outage",
        )
        assert status().phase == "DISCOVERED", "the local API keeps serving"
        if agent.metrics_port:  # and so do its metrics
            with urllib.request.urlopen(
                f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5
            ) as resp:
                assert b"nodeagent_phase" in resp.read()
        inv.start()
        wait_for(
            lambda: status().inventory_state == "connected", 60, "the agent to reconnect by itself"
        )
        assert status().node_id == node_id, "no second enrolment"
        before = admin_last_seen(inv, node_id)
        wait_for(lambda: admin_last_seen(inv, node_id) > before, 20, "heartbeats to resume")
    finally:
        agent.close()
        inv.kill(signal.SIGTERM)


def admin_last_seen(inv: InventoryProcess, node_id: str) -> int:
    node = inv.admin().GetNode(ipb.GetNodeRequest(node_id=node_id), timeout=10)
    return int(node.last_seen.ToNanoseconds())


def test_two_replicas_over_one_postgresql(
    postgres: Postgres | None, scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    assert postgres is not None, "PostgreSQL is needed (make test installs it)"
    database = postgres.new_database()
    a = InventoryProcess(scratch / "a", database).start()
    b = InventoryProcess(scratch / "b", database, share_ca_of=a).start()
    try:
        token = a.admin().CreateToken(ipb.CreateTokenRequest(), timeout=10).secret
        key = tlsutil.new_key()
        with channels.secure_channel(b.bootstrap, a.ca().pem) as ch:
            resp = inventory_pb2_grpc.InventoryServiceStub(ch).Register(
                ipb.RegisterRequest(
                    token=token,
                    csr_pem=tlsutil.make_csr(key, "n").decode(),
                    inventory=variant(dgx_inventory, 5),
                ),
                timeout=10,
            )
        with channels.secure_channel(
            a.address, a.ca().pem, resp.certificate_pem.encode(), tlsutil.key_pem(key)
        ) as ch:
            hb = inventory_pb2_grpc.InventoryServiceStub(ch).Heartbeat(
                ipb.HeartbeatRequest(node_id=resp.node_id, phase="READY"), timeout=10
            )
        assert hb.state == ipb.READY
        assert (
            b.admin().GetNode(ipb.GetNodeRequest(node_id=resp.node_id), timeout=10).state
            == ipb.READY
        )
        # the token was used on replica b: replica a refuses it too
        with (
            channels.secure_channel(a.bootstrap, a.ca().pem) as ch,
            pytest.raises(grpc.RpcError) as err,
        ):
            inventory_pb2_grpc.InventoryServiceStub(ch).Register(
                ipb.RegisterRequest(
                    token=token,
                    csr_pem=tlsutil.make_csr(key, "n").decode(),
                    inventory=variant(dgx_inventory, 6),
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a node retired on replica b is refused by replica a within its refresh (2 s)
        b.admin().RetireNode(ipb.NodeActionRequest(node_id=resp.node_id), timeout=10)
        with channels.secure_channel(
            a.address, a.ca().pem, resp.certificate_pem.encode(), tlsutil.key_pem(key)
        ) as ch:
            node = inventory_pb2_grpc.InventoryServiceStub(ch)

            def refused() -> bool:
                try:
                    node.Heartbeat(ipb.HeartbeatRequest(node_id=resp.node_id), timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc.details()
                    return True
                return False

            started = time.monotonic()
            wait_for(refused, 10, "replica a to refuse the retired node's certificate")
            assert time.monotonic() - started < 5
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)
