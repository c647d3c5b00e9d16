"""READY waits for acceptance (issue 17), end to end: real agent daemons on modelled roots,
enrolled with a live inventory. A node whose quick level fails never becomes READY and is
quarantined with the failing check; a healthy one becomes READY with its passed report
stored; an operator's remote run (`nodeagent admin nodes validate`) travels in heartbeats;
a run the agent died during is reported as interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from nodeagent.acceptance import store as astore
from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.host import HostRoot
from nodeagent.inventory import acceptance
from testbed import acceptance_roots as ar
from testbed.agent_process import AgentProcess
from testbed.cli import nodeagent
from testbed.ready import make_ready, rewrite
from testbed.wait import wait_for
from tests.inventory.conftest import Client, ServiceThread

S = ipb.NodeState
EDAC = "memory-edac: mc1 (CPU_SrcID#1_MC#0_Chan#0_DIMM#0): 2 uncorrected memory errors"


def _token(svc: ServiceThread, scratch: Path) -> Path:
    token = scratch / "token"
    token.write_text(svc.admin().CreateToken(ipb.CreateTokenRequest(max_uses=10)).secret)
    token.chmod(0o600)
    return token


@contextmanager
def _agent(svc: ServiceThread, token: Path, workdir: Path, root: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(
        workdir,
        root,
        watch=f'rdma_poll_seconds = 5\n[inventory]\naddress = "{svc.address}"\n'
        f'bootstrap_address = "{svc.bootstrap}"\nca_hash = "{svc.svc.ca.pin}"\n'
        f'token_file = "{token}"\nheartbeat_seconds = 0.3\n',
    )
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        agent.close()


def _status(agent: AgentProcess) -> agent_pb2.AgentStatus:
    with agent.channel() as ch:
        got: agent_pb2.AgentStatus = agent.stub(ch).GetStatus(
            agent_pb2.GetStatusRequest(), timeout=5
        )
    return got


def _node(admin: Client, node_id: str) -> ipb.Node:
    got: ipb.Node = admin.GetNode(ipb.GetNodeRequest(node_id=node_id, events=200))
    return got


def _enrolled(agent: AgentProcess) -> str:
    wait_for(lambda: _status(agent).node_id != "", 30, "the agent to enrol")
    return _status(agent).node_id


def _admin_env(svc: ServiceThread, scratch: Path) -> dict[str, str]:
    cert, key = svc.svc.ca.issue_client("olga", "operator")
    files = {"crt": cert, "key": key, "ca": svc.ca_pem}
    for suffix, pem in files.items():
        (scratch / f"operator.{suffix}").write_bytes(pem)
    return {
        "NODEAGENT_INVENTORY": svc.address,
        "NODEAGENT_ADMIN_CERT": str(scratch / "operator.crt"),
        "NODEAGENT_ADMIN_KEY": str(scratch / "operator.key"),
        "NODEAGENT_ADMIN_CA": str(scratch / "operator.ca"),
    }


def test_failing_quick_level_never_ready_and_a_remote_run_releases_it(
    service_factory: Callable[..., ServiceThread],
    root_copy: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin, token = svc.admin(), _token(svc, scratch)
    bad = make_ready(root_copy("cpu-node"))
    ar.add_edac(bad, ue=2, ue_mc=1)
    good = make_ready(root_copy("cpu-node"))
    ar.add_edac(good)
    for name in ("product_serial", "product_uuid"):  # another machine of the same model
        rewrite(good, f"sys/class/dmi/id/{name}", "ACC-GOOD-0001\n")
    with (
        _agent(svc, token, scratch / "bad", bad) as bad_agent,
        _agent(svc, token, scratch / "good", good) as good_agent,
    ):
        bad_id, good_id = _enrolled(bad_agent), _enrolled(good_agent)
        wait_for(lambda: _node(admin, good_id).state == S.READY, 30, "the healthy node READY")
        healthy = _node(admin, good_id)
        assert healthy.acceptance.outcome == vpb.RUN_PASSED
        assert healthy.acceptance.level == "quick"
        assert [c.name for c in healthy.acceptance.checks] == [
            "gpu-state",
            "nvme-health",
            "rdma-link",
            "memory-edac",
        ]
        assert list(healthy.blocking) == []

        wait_for(lambda: _node(admin, bad_id).state == S.QUARANTINED, 30, "the quarantine")
        node = _node(admin, bad_id)
        assert node.state_reason == f"acceptance: {EDAC}"
        assert list(node.blocking) == [f"acceptance: {EDAC}"]
        assert node.acceptance.outcome == vpb.RUN_FAILED
        assert node.acceptance.reason == EDAC
        assert _status(bad_agent).phase == "DISCOVERED"
        stored = acceptance.reports(svc.svc.store, bad_id)
        assert [(r.run_id, r.outcome) for r in stored] == [(node.acceptance.run_id, vpb.RUN_FAILED)]
        moves = [
            (e.actor, e.to_state, e.reason) for e in node.events if e.to_state == S.QUARANTINED
        ]
        assert moves == [("system:acceptance", S.QUARANTINED, f"acceptance: {EDAC}")]
        # the agent keeps saying DISCOVERED; the quarantine holds through heartbeats that
        # re-read the node (an expired cache entry)
        svc.svc.nodes.pop(bad_id, None)
        wait_for(lambda: svc.svc.nodes.get(bad_id) is not None, 10, "a heartbeat")
        assert _node(admin, bad_id).state == S.QUARANTINED

        # fixed; an operator runs the level again from afar and the node goes on to READY
        ar.add_edac(bad)
        env = _admin_env(svc, scratch)
        done = nodeagent(
            "admin", "nodes", "validate", bad_id, "--level", "quick", "--poll", "0.2", env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == (
            f"asked node {bad_id} to run acceptance (quick); waiting for its next heartbeat"
        )
        assert lines[1].startswith("run ") and lines[1].endswith(" started")
        assert lines[2:6] == [
            "  gpu-state: skip (no NVIDIA GPU on this node and none expected)",
            "  nvme-health: pass",
            "  rdma-link: pass",
            "  memory-edac: pass",
        ], done.stdout
        assert lines[6] == "acceptance quick: passed"
        run_id = lines[1].split()[1]
        assert lines[7] == f"node {bad_id} is DISCOVERED  acceptance passed at quick (run {run_id})"
        wait_for(lambda: _node(admin, bad_id).state == S.READY, 30, "READY after the pass")
        node = _node(admin, bad_id)
        assert node.validation.state == "done"
        assert node.validation.run_id == node.acceptance.run_id != stored[0].run_id
        released = [e for e in node.events if e.from_state == S.QUARANTINED != e.to_state]
        assert [(e.actor, e.to_state) for e in released] == [("system:acceptance", S.DISCOVERED)]
        assert released[0].reason == f"acceptance passed at quick (run {node.acceptance.run_id})"
        runs = acceptance.reports(svc.svc.store, bad_id)
        assert [r.outcome for r in runs] == [vpb.RUN_PASSED, vpb.RUN_FAILED]
        assert list(node.blocking) == []
    # READY only after the passing run released it, never before
    moves = [(e.from_state, e.to_state) for e in _node(admin, bad_id).events]
    assert [m for m in moves if m[0] != m[1]][-4:] == [
        (S.ENROLLED, S.DISCOVERED),
        (S.DISCOVERED, S.QUARANTINED),
        (S.QUARANTINED, S.DISCOVERED),
        (S.DISCOVERED, S.READY),
    ]
    assert [m for m in moves if m[1] == S.READY] == [(S.DISCOVERED, S.READY)]


def test_a_run_the_agent_died_during_is_reported_interrupted(
    service_factory: Callable[..., ServiceThread],
    root_copy: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin, token = svc.admin(), _token(svc, scratch)
    root = make_ready(root_copy("cpu-node"))
    # what a killed agent leaves: the marker of a run in progress, nobody holding the lock
    marker = vpb.ValidationReport(run_id="deadbeef0001", level="quick", outcome=vpb.RUN_RUNNING)
    astore._write(astore._dir(scratch / "agent" / "state") / "running.json", marker)
    with _agent(svc, token, scratch / "agent", root) as agent:
        node_id = _enrolled(agent)
        wait_for(lambda: _node(admin, node_id).HasField("acceptance"), 30, "the report")
        node = _node(admin, node_id)
        why = "interrupted: the agent stopped during the run; run it again"
        assert (node.acceptance.run_id, node.acceptance.outcome) == (
            "deadbeef0001",
            vpb.RUN_INTERRUPTED,
        )
        assert node.acceptance.reason == why
        assert list(node.blocking) == [f"acceptance: {why}"]
        assert node.state == S.DISCOVERED  # not passed, and not a failed check either
        assert _status(agent).phase == "DISCOVERED"
        last = json.loads((scratch / "agent/state/acceptance/last.json").read_text())
        assert last["outcome"] == "RUN_INTERRUPTED"


def test_validate_node_streams_progress_and_refuses_a_second_run(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = make_ready(root_copy("cpu-node"))
    ar.add_edac(root)
    agent = AgentProcess(scratch / "agent", root, watch="rdma_poll_seconds = 5\n").start()
    try:
        wait_for(lambda: _status(agent).phase == "READY", 30, "the agent READY")
        # a counter nobody writes yet: the run blocks reading its baseline, holding the lock
        counter = Path(HostRoot(root).host_path("sys/devices/system/edac/mc/mc0/ce_count"))
        counter.unlink()
        os.mkfifo(counter)
        events: list[vpb.ValidationEvent] = []
        request = vpb.ValidateNodeRequest(level="quick", only=["memory-edac"])

        def first() -> None:
            with agent.channel() as ch:
                events.extend(agent.stub(ch).ValidateNode(request, timeout=60))

        worker = threading.Thread(target=first)
        worker.start()
        running = scratch / "agent/state/acceptance/running.json"
        wait_for(running.exists, 20, "the first run to start")
        with agent.channel() as ch, pytest.raises(grpc.RpcError) as refused:
            list(agent.stub(ch).ValidateNode(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert refused.value.details() == "another acceptance run is in progress on this node"
        while worker.is_alive():  # answer the baseline and the check's reading
            with contextlib.suppress(OSError):
                fd = os.open(counter, os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"0\n")
                os.close(fd)
            time.sleep(0.1)
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["started", "check", "report"]
        assert (events[0].started.name, events[0].started.index, events[0].started.total) == (
            "memory-edac",
            1,
            1,
        )
        assert (events[1].check.name, events[1].check.verdict) == ("memory-edac", vpb.VERDICT_PASS)
        assert events[2].report.outcome == vpb.RUN_PASSED
        assert list(events[2].report.only) == ["memory-edac"]
    finally:
        agent.stop()
        agent.close()
