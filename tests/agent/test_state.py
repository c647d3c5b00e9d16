"""AgentState: phase changes reach the event bus, saves are atomic and round-trip, and the
recovery of an interrupted tuning run at start goes through the same door."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from nodeagent.agent.config import TuningConfig
from nodeagent.agent.events import EventBus
from nodeagent.agent.metrics import AgentView
from nodeagent.agent.state import AgentState, Phase, StateFile
from nodeagent.agent.tuning_rpc import TuningService
from nodeagent.api.v1 import agent_pb2
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.host import HostRoot


def _state(path: Path) -> AgentState:
    return AgentState(StateFile(path), EventBus(coalesce_seconds=0))


async def _messages(stream: AsyncIterator[agent_pb2.AgentEvent]) -> list[str]:
    return [event.message async for event in stream]


def _phase_events(state: AgentState, change: Callable[[], None]) -> list[str]:
    """The phase events `change` publishes, read as a WatchEvents client reads them."""

    async def watch() -> list[str]:
        reader = asyncio.ensure_future(_messages(state.bus.subscribe({"phase"})))
        await asyncio.sleep(0)  # the watcher is subscribed
        change()
        state.bus.close()  # delivers what was published, then ends the stream
        return await reader

    return asyncio.run(watch())


def test_every_phase_change_is_one_event(tmp_path: Path) -> None:
    state = _state(tmp_path / "state.json")

    def change() -> None:
        state.set_phase(Phase.TUNING)
        state.set_phase(Phase.TUNING)  # no change, no event
        state.set_phase(Phase.FAILED, "tuning task 'x' failed: boom")

    assert _phase_events(state, change) == ["phase TUNING", "phase FAILED"]
    assert (state.phase, state.last_error) == (Phase.FAILED, "tuning task 'x' failed: boom")
    state.set_phase(Phase.FAILED)  # the error stands until a step replaces or clears it
    assert state.last_error == "tuning task 'x' failed: boom"
    state.set_phase(Phase.DISCOVERED, error="")
    assert (state.phase, state.last_error) == (Phase.DISCOVERED, "")


def test_save_round_trips_in_the_wire_format(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.json"
    state = _state(path)
    state.data.update(starts=3, assigned_profile="dgx-h100")
    state.set_phase(Phase.REBOOT_REQUIRED, "kernel_cmdline waits for a boot")
    state.save()
    assert json.loads(path.read_text()) == {
        "assigned_profile": "dgx-h100",
        "last_error": "kernel_cmdline waits for a boot",
        "phase": "REBOOT_REQUIRED",
        "starts": 3,
    }
    assert path.stat().st_mode & 0o777 == 0o600 and os.listdir(path.parent) == ["state.json"]
    again = _state(path)
    again.load()
    assert (again.phase, again.last_error, again.data) == (
        state.phase,
        state.last_error,
        state.data,
    )
    assert again.bus.emitted == 0, "loading is not a change"


def test_failed_save_keeps_the_old_file_and_the_agent_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    state = _state(path)
    state.save()
    before = path.read_bytes()

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    state.set_phase(Phase.READY)
    with caplog.at_level(logging.ERROR):
        state.save()  # does not raise
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["state.json"]
    assert "cannot write state file" in caplog.text


def test_unknown_phase_in_the_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"phase": "SOMETHING_NEWER", "last_error": "old"}))
    state = _state(path)
    state.load()
    assert (state.phase, state.last_error) == (Phase.STARTING, "old")


def test_recover_after_kill9_goes_through_set_phase(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    running = {"profile": "cpu-node", "outcome": "running", "phase_before": "READY"}
    path.write_text(json.dumps({"phase": "TUNING", "tuning": running}))
    state = _state(path)
    state.load()
    tuning = TuningService(
        state, HostRoot(tmp_path), AgentView(), TuningConfig, pb.HardwareInventory
    )

    assert _phase_events(state, tuning.recover) == ["phase FAILED"]
    assert state.phase == Phase.FAILED and "'cpu-node' was interrupted" in state.last_error
    saved = json.loads(path.read_text())
    assert saved["phase"] == "FAILED" and saved["tuning"]["outcome"] == "interrupted"
    assert saved["last_error"] == state.last_error
