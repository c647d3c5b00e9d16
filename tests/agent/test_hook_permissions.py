"""Hooks run as root: the real daemon refuses one that anybody but root could have written."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.api.v1 import agent_pb2
from testbed.agent_process import AgentProcess
from testbed.wait import wait_for

NOBODY = 65534
RULE = (
    "a hook and every directory from hooks_dir down to it must be owned by root "
    "and writable by no one else"
)


def _hook_events(agent: AgentProcess) -> int:
    url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(r'^nodeagent_events_total\{kind="hook"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _wait_hook_events(agent: AgentProcess, count: int) -> None:
    """Events reach the counter when the bus's coalescing window closes."""
    wait_for(lambda: _hook_events(agent) == count, 10, f"hook event number {count}")


def _status(agent: AgentProcess) -> agent_pb2.AgentStatus:
    with agent.channel() as ch:
        return agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)


def _rediscover(agent: AgentProcess) -> agent_pb2.AgentStatus:
    """A refresh runs the pre-discovery hooks again; the status says how they went."""
    with agent.channel() as ch:
        stub = agent.stub(ch)
        stub.GetInventory(agent_pb2.GetInventoryRequest(refresh=True), timeout=30)
        return stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=5)


def test_hooks_writable_by_others_are_refused(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("hook ownership checks need root (to chown a hook to nobody)")
    scratch = scratch.resolve()  # the messages name real paths
    hooks_dir = scratch / "hooks.d"
    phase_dir = hooks_dir / "pre-discovery.d"
    phase_dir.mkdir(parents=True)
    hooks_dir.chmod(0o755)
    phase_dir.chmod(0o755)
    ran = scratch / "ran"
    hook = phase_dir / "10-mark"
    hook.write_text(f'#!/bin/sh\necho "$NODEAGENT_PHASE" >> {ran}\n')
    hook.chmod(0o777)
    outside = scratch / "outside-hook"
    outside.write_text(f"#!/bin/sh\necho outside >> {ran}\n")
    outside.chmod(0o755)

    agent = AgentProcess(scratch, machine_root("cpu-node"))
    agent.start()
    try:

        def refused(status: agent_pb2.AgentStatus, culprit: Path, why: str, events: int) -> None:
            message = f"pre-discovery hook {hook} refused: {culprit} is {why}; {RULE}"
            assert status.phase == "FAILED" and status.last_error == message
            assert message in agent.log(), "the refusal is logged with the path and the rule"
            _wait_hook_events(agent, events)
            assert not ran.exists(), f"the hook ran, {why}"

        refused(_status(agent), hook, "world-writable (mode 0777)", 1)
        hook.chmod(0o755)
        phase_dir.chmod(0o775)
        refused(_rediscover(agent), phase_dir, "group-writable (mode 0775)", 2)
        phase_dir.chmod(0o755)
        hooks_dir.chmod(0o757)
        refused(_rediscover(agent), hooks_dir, "world-writable (mode 0757)", 3)
        hooks_dir.chmod(0o755)
        os.chown(hook, NOBODY, NOBODY)
        refused(_rediscover(agent), hook, f"owned by uid {NOBODY}", 4)

        # a symlink leading out of hooks_dir: the directories on its way were never checked
        hook.unlink()
        hook.symlink_to(outside)
        status = _rediscover(agent)
        assert status.last_error == (
            f"pre-discovery hook {hook} refused: it leads to {outside}, outside {hooks_dir}; {RULE}"
        )
        _wait_hook_events(agent, 5)
        assert not ran.exists()

        # root's own hook, in root's own directories, runs and the phase succeeds again
        hook.unlink()
        hook.write_text(f'#!/bin/sh\necho "$NODEAGENT_PHASE" >> {ran}\n')
        hook.chmod(0o755)
        status = _rediscover(agent)
        assert status.phase != "FAILED" and status.last_error == "", status
        assert ran.read_text() == "pre-discovery\n"
        assert "hook phase=pre-discovery name=10-mark ok" in agent.log()
    finally:
        agent.close()
