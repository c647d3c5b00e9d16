"""The real daemon on a throwaway root: ApplyTuning streams a run, VerifyTuning feeds drift."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import profiles
from testbed.agent_process import AgentProcess
from tests.tuning.conftest import Host, make_host


@pytest.fixture
def agent(scratch: Path) -> Iterator[tuple[AgentProcess, Host]]:
    host = make_host("cpu-node", scratch / "root")
    config = (
        f'[tuning]\ncommands_file = "{host.path}/.nodeagent/commands.json"\n'
        f'profiles_dir = "{profiles.SHIPPED}"\n'
    )
    (scratch / "agent").mkdir()
    proc = AgentProcess(scratch / "agent", host.path, config).start()
    try:
        yield proc, host
    finally:
        proc.stop()
        proc.close()


def _metrics(proc: AgentProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_apply_tuning_streams_and_reports_drift(agent: tuple[AgentProcess, Host]) -> None:
    proc, host = agent
    with proc.channel() as channel:
        stub = proc.stub(channel)
        report = stub.VerifyTuning(tpb.VerifyTuningRequest(), timeout=30)
        assert report.profile == "cpu-node" and report.drift
        assert 'nodeagent_tuning_drift{setting="sysctl:vm.swappiness"} 1.0' in _metrics(proc)

        plan = list(stub.ApplyTuning(tpb.ApplyTuningRequest(check=True), timeout=120))
        assert plan[-1].result.outcome == "checked" and host.log() == []
        assert any(
            e.task.task == "Write the golden configuration files" and e.task.diff
            for e in plan
            if e.HasField("task")
        )

        events = list(stub.ApplyTuning(tpb.ApplyTuningRequest(profile="cpu-node"), timeout=120))
        tasks = [e.task for e in events if e.HasField("task")]
        result = events[-1].result
        assert [t.status for t in tasks[:2]] == [tpb.TASK_STARTED, tpb.TASK_OK]
        assert any(t.status == tpb.TASK_CHANGED for t in tasks)
        assert result.outcome == "reboot-required", result.error
        assert "kernel_cmdline:iommu" in result.reboot_reasons
        status = stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=10)
        assert status.phase == "REBOOT_REQUIRED"
        metrics = _metrics(proc)
        assert 'nodeagent_tuning_drift{setting="sysctl:vm.swappiness"} 0.0' in metrics
        assert 'nodeagent_tuning_drift{setting="kernel_cmdline:iommu"} 1.0' in metrics

        with pytest.raises(grpc.RpcError) as info:
            list(stub.ApplyTuning(tpb.ApplyTuningRequest(reboot_policy="sometimes"), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_failed_task_sets_phase_failed(agent: tuple[AgentProcess, Host]) -> None:
    proc, host = agent
    (host.path / ".nodeagent/fail").mkdir()
    (host.path / ".nodeagent/fail/systemctl").touch()
    with proc.channel() as channel:
        stub = proc.stub(channel)
        result = list(stub.ApplyTuning(tpb.ApplyTuningRequest(), timeout=120))[-1].result
        assert result.outcome == "failed" and result.failed_task == "Reload systemd units"
        status = stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=10)
        assert status.phase == "FAILED"
        assert status.last_error.startswith("tuning task 'Reload systemd units' failed")
