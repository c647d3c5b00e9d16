"""`nodeagent tune verify|apply` exit codes and refusals (no Ansible run except one check)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.cli.main import main
from tests.tuning.conftest import Host


def test_verify_exits_3_on_drift_and_prints_json(
    fresh_host: Callable[[str], Host], capsys: pytest.CaptureFixture[str]
) -> None:
    host = fresh_host("cpu-node")
    assert main(["tune", "verify", "--root", str(host.path), "-o", "json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["profile"] == "cpu-node" and report["drift"] is True
    drifted = {s["setting"] for s in report["settings"] if s["status"] == "SETTING_DRIFT"}
    assert "sysctl:vm.swappiness" in drifted


def test_apply_to_a_root_needs_stand_ins(
    fresh_host: Callable[[str], Host], capsys: pytest.CaptureFixture[str]
) -> None:
    host = fresh_host("cpu-node")
    assert main(["tune", "apply", "--root", str(host.path)]) == 1
    assert "--commands" in capsys.readouterr().err
    assert host.log() == []


def test_joined_node_is_refused_unless_held(
    fresh_host: Callable[[str], Host], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = fresh_host("cpu-node")
    (tmp_path / "state.json").write_text(json.dumps({"phase": "JOINED"}))
    commands = str(host.path / ".nodeagent/commands.json")
    args = [
        "tune",
        "apply",
        "--root",
        str(host.path),
        "--commands",
        commands,
        "--state-dir",
        str(tmp_path),
    ]
    assert main(args) == 1
    assert "refusing to apply: the node is JOINED" in capsys.readouterr().err
    assert main([*args, "--check"]) == 0  # a dry run is always allowed
    out = capsys.readouterr().out
    assert "checked:" in out and "would run: update_grub" in out and host.log() == []
