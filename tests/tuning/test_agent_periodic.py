"""The daemon's own verify (`[tuning] verify_seconds`) and the tuning hook phases, on the
real daemon over a throwaway root whose commands are stand-ins."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.labels import sinks
from nodeagent.tuning import profiles
from testbed.agent_process import AgentProcess
from testbed.wait import wait_for
from tests.tuning.conftest import Host, make_host

SWAPPINESS_DRIFT = 'nodeagent_tuning_drift{setting="sysctl:vm.swappiness"} 1.0'
SWAPPINESS_OK = 'nodeagent_tuning_drift{setting="sysctl:vm.swappiness"} 0.0'


def _metrics(proc: AgentProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _agent(scratch: Path, host: Host, tuning: str = "", top: str = "") -> AgentProcess:
    config = (
        f'{top}[tuning]\ncommands_file = "{host.path}/.nodeagent/commands.json"\n'
        f'profiles_dir = "{scratch / "profiles"}"\n{tuning}'
    )
    (scratch / "profiles").mkdir(exist_ok=True)
    (scratch / "agent").mkdir(exist_ok=True)
    return AgentProcess(scratch / "agent", host.path, config)


def _healing_profile(scratch: Path) -> None:
    """cpu-node as shipped, but `on_drift: apply`."""
    text = (profiles.SHIPPED / "cpu-node.yaml").read_text()
    text = text.replace("name: cpu-node\n", "name: cpu-node-heal\non_drift: apply\n")
    (scratch / "profiles").mkdir(exist_ok=True)
    (scratch / "profiles" / "cpu-node-heal.yaml").write_text(text)


def _hook(agent: AgentProcess, phase: str, script: str) -> None:
    directory = agent.workdir / "hooks.d" / f"{phase}.d"
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    for d in (agent.workdir / "hooks.d", directory):
        d.chmod(0o755)
    hook = directory / "10-check"
    hook.write_text(f"#!/bin/sh\n{script}\n")
    hook.chmod(0o755)


def test_periodic_verify_reports_drift_without_applying(scratch: Path) -> None:
    host = make_host("cpu-node", scratch / "root")
    proc = _agent(scratch, host, 'profile = "cpu-node"\nverify_seconds = 1\n').start()
    try:
        wait_for(lambda: SWAPPINESS_DRIFT in _metrics(proc), 30, "drift found by the daemon")
        labels = lambda: sinks.parse_feature_file(proc.feature_file.read_text())  # noqa: E731
        wait_for(lambda: labels().get("nodeagent.io/tuning") == "drift", 20, "the drift label")
        assert host.log() == [], "on_drift report: nothing applied"
        assert "periodic verify: drift in" in (proc.workdir / "agent.log").read_text()
    finally:
        proc.close()


def test_periodic_verify_applies_again_where_the_profile_says(scratch: Path) -> None:
    host = make_host("cpu-node", scratch / "root")
    _healing_profile(scratch)
    proc = _agent(scratch, host, 'profile = "cpu-node-heal"\nverify_seconds = 1\n').start()
    try:
        wait_for(lambda: SWAPPINESS_OK in _metrics(proc), 90, "the drift applied away")
        with proc.channel() as ch:
            status = proc.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=10)
        # the kernel command line needs a reboot: reported, never done by a periodic run
        assert status.phase == "REBOOT_REQUIRED"
        assert not any(line.startswith("reboot") for line in host.log()), host.log()
        assert "applied again: reboot-required" in (proc.workdir / "agent.log").read_text()
    finally:
        proc.close()


def test_periodic_apply_never_on_a_joined_node(scratch: Path) -> None:
    host = make_host("cpu-node", scratch / "root")
    _healing_profile(scratch)
    proc = _agent(scratch, host, 'profile = "cpu-node-heal"\nverify_seconds = 1\n')
    state = proc.workdir / "state"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"phase": "JOINED"}))
    proc.start()
    try:
        log = proc.workdir / "agent.log"
        wait_for(lambda: "not applied again: the node is JOINED" in log.read_text(), 30, "refusal")
        assert host.log() == []
        assert SWAPPINESS_DRIFT in _metrics(proc)
    finally:
        proc.close()


def test_failing_pre_tuning_hook_stops_the_apply(scratch: Path) -> None:
    host = make_host("cpu-node", scratch / "root")
    proc = _agent(scratch, host, 'profile = "cpu-node"\nverify_seconds = 0\n')
    _hook(proc, "pre-tuning", "echo 'no maintenance window until 02:00' >&2; exit 3")
    proc.start()
    try:
        with proc.channel() as ch, pytest.raises(grpc.RpcError) as info:
            list(proc.stub(ch).ApplyTuning(tpb.ApplyTuningRequest(), timeout=60))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = info.value.details() or ""
        assert details.startswith("refusing to apply: pre-tuning hook failed:")
        assert "no maintenance window until 02:00" in details
        assert host.log() == [], "nothing ran after the failed pre-tuning hook"
    finally:
        proc.close()


@pytest.mark.parametrize("policy", ["fail", "warn"])
def test_failing_post_tuning_hook_as_configured(scratch: Path, policy: str) -> None:
    host = make_host("cpu-node", scratch / "root")
    proc = _agent(
        scratch,
        host,
        'profile = "cpu-node"\nverify_seconds = 0\n',
        top=f'post_hook_failure = "{policy}"\n',
    )
    _hook(proc, "post-tuning", "echo 'burn-in scheduler unreachable' >&2; exit 1")
    proc.start()
    try:
        with proc.channel() as ch:
            stub = proc.stub(ch)
            result = list(stub.ApplyTuning(tpb.ApplyTuningRequest(), timeout=120))[-1].result
            assert result.outcome == "reboot-required"
            status = stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=10)
        if policy == "fail":
            assert status.phase == "FAILED"
            assert status.last_error.startswith("post-tuning hook failed:")
            assert "burn-in scheduler unreachable" in status.last_error
        else:
            assert status.phase == "REBOOT_REQUIRED" and status.last_error == ""
            assert "burn-in scheduler unreachable" in (proc.workdir / "agent.log").read_text()
    finally:
        proc.close()
