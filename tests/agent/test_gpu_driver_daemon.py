"""The real agent on a GPU root with no driver loaded (issue 15): in host mode it stays
DISCOVERED and the inventory shows why; told the GPU Operator owns the driver, it reaches
READY."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.agent_process import AgentProcess
from testbed.wait import wait_for
from tests.agent.test_gpu_driver_preflight import no_driver_root
from tests.inventory.conftest import ServiceThread

S = ipb.NodeState


def test_no_driver_root_is_ready_in_operator_mode_only(
    service_factory: Callable[..., ServiceThread],
    machine_root: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    token = scratch / "token"
    token.write_text(admin.CreateToken(ipb.CreateTokenRequest()).secret)
    token.chmod(0o600)
    root = no_driver_root(machine_root, scratch / "rtx", "rtx-pro-6000")
    inventory = (
        f'[inventory]\naddress = "{svc.address}"\nbootstrap_address = "{svc.bootstrap}"\n'
        f'ca_hash = "{svc.svc.ca.pin}"\ntoken_file = "{token}"\nheartbeat_seconds = 0.3\n'
    )
    agent = AgentProcess(
        scratch / "agent", root, watch=f"rdma_poll_seconds = 5\n{inventory}[tuning]\n"
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
        assert list(shown.blocking) == [
            "nvidia-driver: 8 NVIDIA GPU(s), no driver loaded (fix: install the driver of the "
            "node's golden profile (nodeagent tune apply) and reboot)"
        ]
        assert status().phase == "DISCOVERED"

        config = agent.config_path.read_text()
        agent.config_path.write_text(
            config.replace("[tuning]\n", '[tuning]\ngpu_driver = "operator"\n')
        )
        agent.send(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in agent.log(), 10, "the reload")
        with agent.channel() as ch:
            agent.stub(ch).GetInventory(agent_pb2.GetInventoryRequest(refresh=True), timeout=60)
        wait_for(lambda: node().state == S.READY, 20, f"READY ({list(node().blocking)})")
        assert list(node().blocking) == []
        assert status().phase == "READY"
        assert status().config["tuning.gpu_driver"] == "operator"
    finally:
        agent.stop()
        agent.close()
