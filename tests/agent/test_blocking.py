"""Why a node stays DISCOVERED (issue 14): a real agent whose preflight fails reports the
failing checks in its heartbeats, the inventory shows them on the node, and they clear
once the cause is fixed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.agent_process import AgentProcess
from testbed.ready import make_ready, rewrite
from testbed.wait import wait_for
from tests.inventory.conftest import ServiceThread

S = ipb.NodeState


def test_blocking_preflight_checks_reach_the_inventory_and_clear(
    service_factory: Callable[..., ServiceThread],
    root_copy: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    root = make_ready(root_copy("cpu-node"))
    rewrite(root, "proc/sys/net/ipv4/ip_forward", "0\n")  # the kubelet's node is not ready
    agent = AgentProcess(
        scratch / "agent",
        root,
        watch=svc.agent_settings(scratch),
    )
    agent.start()
    try:

        def status() -> agent_pb2.AgentStatus:
            with agent.channel() as ch:
                got: agent_pb2.AgentStatus = agent.stub(ch).GetStatus(
                    agent_pb2.GetStatusRequest(), timeout=5
                )
            return got

        wait_for(lambda: status().node_id != "", 30, "the agent to enrol")
        node_id = status().node_id

        def node() -> ipb.Node:
            got: ipb.Node = admin.GetNode(ipb.GetNodeRequest(node_id=node_id, events=100))
            return got

        wait_for(lambda: len(node().blocking) > 0, 20, "the blocking checks to arrive")
        shown = node()
        assert shown.state == S.DISCOVERED
        assert [b.split(":")[0] for b in shown.blocking] == ["sysctl"], shown.blocking
        assert shown.blocking[0].startswith(
            "sysctl: net.ipv4.ip_forward=0 (want 1) (fix: sysctl -w"
        )
        listed = admin.ListNodes(ipb.ListNodesRequest()).nodes
        assert [list(n.blocking) for n in listed] == [list(shown.blocking)]
        assert "blocked by preflight: sysctl" in [e.reason for e in shown.events]

        rewrite(root, "proc/sys/net/ipv4/ip_forward", "1\n")  # fixed; the agent looks again
        with agent.channel() as ch:
            agent.stub(ch).GetInventory(agent_pb2.GetInventoryRequest(refresh=True), timeout=60)
        wait_for(lambda: not node().blocking, 20, "the blocking checks to clear")
        shown = node()
        assert list(shown.blocking) == []
        wait_for(lambda: node().state == S.READY, 20, "the node to become READY")
        assert "preflight passes: nothing blocks the node" in [e.reason for e in node().events]
        assert not admin.ListNodes(ipb.ListNodesRequest()).nodes[0].blocking
    finally:
        agent.stop()
        agent.close()
