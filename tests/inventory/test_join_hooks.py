"""pre-join and post-join hooks (issue 15): a join job asks the node's agent to run them
through heartbeat replies and waits for the answer; a failing pre-join hook stops the
node's join with the hook's stderr in the job's record, and scale.yml never runs there.

Real parts throughout: the agent daemon on a modelled, installed root; the inventory on
loopback; the Kubespray stand-in over SSH to a host in a network namespace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.agent_process import AgentProcess
from testbed.cli import nodeagent as cli
from testbed.ready import make_ready
from testbed.wait import wait_for
from tests.inventory import sshhosts
from tests.inventory.conftest import ServiceThread
from tests.inventory.test_join import FAST, fresh, hosts, make_cluster
from tests.inventory.test_kubespray_export import credentials
from tests.rootcopy import root_copy

__all__ = ["fresh", "hosts", "root_copy"]  # fixtures
S = ipb.NodeState


def _hook(agent: AgentProcess, phase: str, script: str) -> None:
    directory = agent.workdir / "hooks.d" / f"{phase}.d"
    directory.mkdir(parents=True, exist_ok=True)
    for d in (agent.workdir / "hooks.d", directory):
        d.chmod(0o755)
    for old in directory.iterdir():
        old.unlink()
    hook = directory / "10-check"
    hook.write_text(f"#!/bin/sh\n{script}\n")
    hook.chmod(0o755)


def test_failing_pre_join_hook_stops_the_join_then_hooks_pass(
    service_factory: Callable[..., ServiceThread],
    root_copy: Callable[..., Path],
    scratch: Path,
    fresh: sshhosts.SshHosts,
) -> None:
    svc = service_factory(
        f"sqlite:///{scratch / 'inv.db'}",
        **FAST,
        report_poll_seconds=0.2,
        join_hook_timeout_seconds=60,
    )
    admin = svc.admin()
    make_cluster(admin, fresh, scratch)
    agent = AgentProcess(
        scratch / "agent", make_ready(root_copy("dgx-h100")), watch=svc.agent_settings(scratch)
    )
    _hook(agent, "pre-join", "echo 'burn-in not finished on this node' >&2; exit 4")
    marker = scratch / "post-join.env"
    _hook(agent, "post-join", f"env | grep ^NODEAGENT_ | sort > {marker}")
    agent.start()
    try:
        wait_for(lambda: agent.node_id() != "", 30, "the agent to enrol")
        nid = agent.node_id()
        wait_for(
            lambda: admin.GetNode(ipb.GetNodeRequest(node_id=nid)).state == S.READY, 30, "READY"
        )
        admin.SetNodeAddress(ipb.NodeAddress(node_id=nid, ip=fresh.addresses["gpu-00001"]))
        admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=nid, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
            )
        )
        env = credentials(svc, scratch, "operator")
        run = cli("admin", "join", "start", "--cluster", "prod", env=env)
        assert run.returncode == 3, run.stdout + run.stderr
        job = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs[0]
        (entry,) = job.nodes
        assert entry.state == ipb.JOB_NODE_FAILED and entry.failed_task == "pre-join"
        assert entry.message.startswith("pre-join hook failed: pre-join hook 10-check failed")
        assert "burn-in not finished on this node" in entry.message
        assert "scale.yml" not in run.stdout, "no playbook ran for a node whose hook failed"
        assert fresh.record("gpu-00001", "joined.json") == ""
        assert not marker.exists()
        node = admin.GetNode(ipb.GetNodeRequest(node_id=nid))
        assert node.state == S.FAILED and "burn-in not finished" in node.state_reason

        # the operator fixes what the hook checks; the agent sees its hooks again
        _hook(agent, "pre-join", "exit 0")
        with agent.channel() as ch:
            agent.stub(ch).GetInventory(agent_pb2.GetInventoryRequest(refresh=True), timeout=60)
        retry = cli("admin", "join", "retry", job.id, env=env)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert "scale.yml --limit=dgx-h100-01" in retry.stdout
        joined = admin.GetNode(ipb.GetNodeRequest(node_id=nid))
        assert joined.state in (S.JOINED, S.JOINING)
        hook_env = marker.read_text()
        assert "NODEAGENT_PHASE=post-join\n" in hook_env
        assert "NODEAGENT_HOSTNAME=dgx-h100-01\n" in hook_env
        jobs = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs
        newest = max(jobs, key=lambda j: j.created_at.ToNanoseconds())
        assert newest.id != job.id and f"NODEAGENT_JOB_ID={newest.id}\n" in hook_env
    finally:
        agent.stop()
        agent.close()
