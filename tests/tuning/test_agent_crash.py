"""kill -9 of the agent in the middle of a tuning apply: after the restart it reports the
run as interrupted (FAILED, with how to retry) and never claims a success it did not see."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import profiles
from testbed.agent_process import AgentProcess
from tests.tuning.conftest import make_host


def test_kill9_during_apply_is_reported_as_interrupted(scratch: Path) -> None:
    host = make_host("cpu-node", scratch / "root")
    config = (
        f'[tuning]\ncommands_file = "{host.path}/.nodeagent/commands.json"\n'
        f'profiles_dir = "{profiles.SHIPPED}"\n'
    )
    # the killed run cannot remove its run folder: it goes to scratch, not to /tmp
    (scratch / "tmp").mkdir()
    env = {"TMPDIR": str(scratch / "tmp")}
    proc = AgentProcess(scratch / "agent", host.path, config, env).start()
    try:
        with proc.channel() as channel:
            stream = proc.stub(channel).ApplyTuning(
                tpb.ApplyTuningRequest(profile="cpu-node"), timeout=120
            )
            for event in stream:
                if event.HasField("task") and event.task.status == tpb.TASK_STARTED:
                    break  # the run is under way
            proc.stop(signal.SIGKILL)
        state = json.loads((scratch / "agent" / "state" / "state.json").read_text())
        assert state["tuning"]["outcome"] == "running", "the run was on record before it began"
        proc.close()
        again = AgentProcess(scratch / "agent", host.path, config, env).start()
        try:
            with again.channel() as channel:
                status = again.stub(channel).GetStatus(agent_pb2.GetStatusRequest(), timeout=10)
            assert status.phase == "FAILED"
            assert "interrupted" in status.last_error and "run it again" in status.last_error
            state = json.loads((scratch / "agent" / "state" / "state.json").read_text())
            assert state["tuning"]["outcome"] == "interrupted"
        finally:
            again.close()
    finally:
        proc.close()
