"""The daemon owns the NFD feature file: written at start, rewritten when an input
changes (a rail goes down), when it is edited by hand and before it expires; the same
map as `nodeagent labels`; a directory it cannot write is an event, not a stop."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import agent_pb2
from nodeagent.labels import sinks
from testbed.agent_process import AgentProcess
from testbed.cli import nodeagent as cli
from testbed.wait import wait_for
from tests.rootcopy import rewrite

RAIL_STATE = "sys/class/infiniband/mlx5_0/ports/1/state"
RAIL_PHYS = "sys/class/infiniband/mlx5_0/ports/1/phys_state"


def _body(text: str) -> list[str]:
    """The file without its expiry line (the one line that depends on the time)."""
    return [line for line in text.splitlines() if not line.startswith("# +expiry-time=")]


def _expiry(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("# +expiry-time="))


def _cli_nfd(agent: AgentProcess, root: Path) -> str:
    """`nodeagent labels -o nfd --print` with the daemon's configuration and state."""
    done = cli(
        "labels",
        "--root",
        str(root),
        "--config",
        str(agent.config_path),
        "--state-dir",
        str(agent.workdir / "state"),
        "-o",
        "nfd",
        "--print",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_file_written_at_start_equals_the_cli_and_follows_a_rail_down(
    root_copy: Callable[[str], Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    agent = AgentProcess(scratch / "agent", root).start()
    try:
        path = agent.feature_file
        wait_for(path.is_file, 30, "the feature file at start")
        text = path.read_text()
        labels = sinks.parse_feature_file(text)
        assert labels["rdma.nodeagent.io/rails-active"] == "8"
        assert labels["rdma.nodeagent.io/degraded"] == "false"
        assert labels["gpu.nodeagent.io/count"] == "8"
        assert os.stat(path).st_mode & 0o777 == 0o644
        assert _body(_cli_nfd(agent, root)) == _body(text)

        rewrite(root, RAIL_STATE, "1: DOWN\n")
        rewrite(root, RAIL_PHYS, "3: Disabled\n")

        def rail_down() -> bool:
            now = sinks.parse_feature_file(path.read_text())
            return now.get("rdma.nodeagent.io/rails-active") == "7"

        wait_for(rail_down, 30, "the file to follow the rail going down")
        after = sinks.parse_feature_file(path.read_text())
        assert after["rdma.nodeagent.io/degraded"] == "true"
        assert _body(_cli_nfd(agent, root)) == _body(path.read_text())
    finally:
        agent.close()


def test_hand_edit_overwritten_and_rewritten_before_expiry(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    agent = AgentProcess(
        scratch / "agent",
        machine_root("cpu-node"),
        labels=AgentProcess.default_labels(scratch / "agent") + "expiry_seconds = 60\n",
    ).start()
    try:
        path = agent.feature_file
        wait_for(path.is_file, 30, "the feature file at start")
        first = path.read_text()
        path.write_text("# edited by hand\nfoo.example.com/bar=baz\n")
        wait_for(lambda: _body(path.read_text()) == _body(first), 15, "the hand edit undone")
        second = path.read_text()
        assert "foo.example.com/bar" not in second
        # 60 s horizon: written again at half of it, with a later expiry, labels unchanged
        start_expiry = _expiry(second)
        wait_for(lambda: _expiry(path.read_text()) != start_expiry, 45, "a rewrite before expiry")
        assert _body(path.read_text()) == _body(first)
    finally:
        agent.close()


def test_unwritable_directory_is_an_event_and_the_daemon_goes_on(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    blocker = scratch / "not-a-dir"
    blocker.write_text("a file where the feature directory should be\n")
    target = blocker / "features.d" / "nodeagent"
    agent = AgentProcess(
        scratch / "agent", machine_root("cpu-node"), labels=f'feature_file = "{target}"\n'
    ).start()
    try:
        with agent.channel() as ch:
            stub = agent.stub(ch)
            status = stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
            assert status.phase == "DISCOVERED"
        log = (agent.workdir / "agent.log").read_text()
        assert f"cannot write the feature file {target}" in log
        # the directory appears: the next tick writes the file
        blocker.unlink()
        wait_for(target.is_file, 20, "the file once the directory can be made")
        assert sinks.parse_feature_file(target.read_text())["cpu.nodeagent.io/sockets"] == "1"
    finally:
        agent.close()


def test_state_dir_without_state_is_one_clear_line(scratch: Path) -> None:
    done = cli("labels", "--state-dir", str(scratch), "-o", "json")
    assert done.returncode != 0
    state = scratch / "state.json"
    assert done.stderr.strip().splitlines() == [
        f"nodeagent: error: --state-dir: no {state} (is this the agent's state_dir?)"
    ]
