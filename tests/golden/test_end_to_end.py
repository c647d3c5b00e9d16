"""The demo's flow, end to end and asserted: an inventory service, three agents on modelled
servers (network namespaces as root), enrolment, an agent killed mid-enrolment, an inventory
restart, and everything converging without an operator."""

from __future__ import annotations

import json
import signal
import time

import yaml

from nodeagent.topology.export import kueue_topology
from testbed.fleet import Fleet
from testbed.wait import wait_for


def test_fleet_converges_through_restarts() -> None:
    fleet = Fleet()
    try:
        fleet.start_inventory()
        fleet.start_agents()
        # an agent killed halfway (before or during enrolment) and started again
        first = fleet.agents[0]
        time.sleep(0.3)
        fleet.stop_agent(first, signal.SIGKILL)
        fleet.start_agent(first)
        fleet.wait_enrolled()
        nodes = json.loads(fleet.run("admin", "-o", "json", "nodes", "list"))["nodes"]
        assert sorted(n["hostname"] for n in nodes) == [
            "cpu-node-01",
            "dgx-h100-01",
            "gpu-h100-0017",
        ]
        # discovered, enrolled, preflight passed on the node: READY to join
        wait_for(
            lambda: (
                {
                    n["state"]
                    for n in json.loads(fleet.run("admin", "-o", "json", "nodes", "list"))["nodes"]
                }
                == {"READY"}
            ),
            30,
            "every node READY",
        )
        pools = {n["hostname"]: n["assignment"]["pool"] for n in nodes}
        assert pools == {
            "dgx-h100-01": "training",
            "gpu-h100-0017": "training",
            "cpu-node-01": "services",
        }
        ids = {n["id"] for n in nodes}

        # the inventory dies and comes back; the agents reconnect by themselves
        fleet.stop_inventory(signal.SIGKILL)
        fleet.start_inventory()
        fleet.wait_enrolled(timeout=90)
        nodes = json.loads(fleet.run("admin", "-o", "json", "nodes", "list"))["nodes"]
        assert {n["id"] for n in nodes} == ids, "same nodes, none enrolled twice"
        assert all(n["reachable"] for n in nodes)

        # each node's labels, as the agent would publish them
        dgx = json.loads(
            fleet.run("labels", "--root", str(first.root), "--pool", "training", "-o", "json")
        )
        assert dgx["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert dgx["gpu.nodeagent.io/count"] == "8" and dgx["nodeagent.io/pool"] == "training"
        assert all(
            k in dgx
            for k in (
                "topology.nodeagent.io/tier-0",
                "topology.nodeagent.io/tier-1",
                "topology.nodeagent.io/tier-2",
            )
        )
        cpu = json.loads(fleet.run("labels", "--root", str(fleet.agents[2].root), "-o", "json"))
        assert "nvidia.com/gpu.product" not in cpu
        levels = [lv["nodeLabel"] for lv in kueue_topology()["spec"]["levels"]]
        assert levels[-1] == "kubernetes.io/hostname"
        assert all(level in dgx for level in levels[:-1]), "every Kueue level is on the node"
        assert yaml.safe_dump(kueue_topology())

        # a network partition (namespaces only): unreachable after the missed heartbeats,
        # back to where it was when the link returns; its lifecycle state never changes
        if fleet.namespaces:
            cut = fleet.agents[2]
            node = next(n for n in nodes if n["hostname"] == "cpu-node-01")

            def reachable() -> bool:
                shown = json.loads(fleet.run("admin", "-o", "json", "nodes", "show", node["id"]))
                return bool(shown.get("reachable"))

            fleet.partition(cut, connected=False)
            deadline = time.monotonic() + 30
            while reachable() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not reachable(), "marked unreachable after the missed intervals"
            shown = json.loads(fleet.run("admin", "-o", "json", "nodes", "show", node["id"]))
            assert shown["state"] == "READY"
            fleet.partition(cut, connected=True)
            deadline = time.monotonic() + 60
            while not reachable() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert reachable(), "reachable again once the link is back"

        # no secret ever reached a log: bootstrap tokens, private keys
        secrets = [(a.workdir / "token").read_text().strip() for a in fleet.agents]
        logs = "".join(p.read_text(errors="replace") for p in fleet.base.rglob("log"))
        assert logs, "the services wrote logs"
        for secret in secrets:
            assert secret.split(".")[1] not in logs
        assert "PRIVATE KEY" not in logs
    finally:
        fleet.close()
