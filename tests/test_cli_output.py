"""`-o/--output` is one convention: always a format, given after the command, and `table`,
`json` and `yaml` mean the same wherever they are offered (json and yaml: the same object;
table: the layout for people). The admin tree's side is in tests/inventory/test_admin_cli.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.agent_process import AgentProcess
from testbed.cli import nodeagent

ROOT = "{root}"
# commands that print an object, with what they need; ROOT becomes a modelled machine's root
COMMANDS = {
    "discover": ["discover", "--root", ROOT],
    "labels": ["labels", "--root", ROOT],
    "fabric": ["fabric", "--root", ROOT],
    "preflight": ["preflight", "--root", ROOT, "--no-fleet"],
    "tune verify": ["tune", "verify", "--root", ROOT],
    "tune list": ["tune", "list"],
}
# what differs between two runs of the same command
VOLATILE = {"duration_seconds", "checked_at", "uptime_seconds", "events_emitted", "watchers"}
LIVE_CHECKS = {"disk"}  # preflight measures this machine's free space under /var/lib
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"


def steady(data: Any) -> Any:
    """`data` without the fields that change from one run to the next."""
    if isinstance(data, dict):
        live = data.get("name") in LIVE_CHECKS
        return {
            k: steady(v)
            for k, v in data.items()
            if k not in VOLATILE and not (live and k == "message")
        }
    if isinstance(data, list):
        return [steady(v) for v in data]
    return data


def printed(*args: str) -> str:
    """stdout of a command that ran (3, a problem found, is a run too: drift, preflight)."""
    proc = nodeagent(*args)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_json_yaml_and_table_after_every_command(
    name: str, machine_root: Callable[..., Path]
) -> None:
    args = [str(machine_root("cpu-node")) if a == ROOT else a for a in COMMANDS[name]]
    as_json = json.loads(printed(*args, "-o", "json"))
    as_yaml = yaml.safe_load(printed(*args, "--output", "yaml"))
    assert steady(as_yaml) == steady(as_json)
    table = printed(*args, "-o", "table")
    assert table.strip() and not table.lstrip().startswith(("{", "---"))


def test_agent_commands_take_the_shared_formats(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    agent = AgentProcess(scratch / "agent", machine_root("cpu-node")).start()
    try:
        sock = ["--socket", agent.socket_path]
        for action in ("status", "inventory"):
            as_json = json.loads(printed("agent", action, *sock, "-o", "json"))
            as_yaml = yaml.safe_load(printed("agent", action, *sock, "-o", "yaml"))
            assert steady(as_yaml) == steady(as_json), action
        status = printed("agent", "status", *sock)
        assert re.search(rf"^discovery  {TIME} \(", status, re.M), status
    finally:
        agent.close()
