"""`nodeagent tune verify|apply`: exit codes, refusals, failures (Ansible in check mode only)."""

from __future__ import annotations

import json
import tempfile
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


def test_failed_check_exits_1_with_its_cause_and_keep_run_names_the_folder(
    fresh_host: Callable[[str], Host],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Ansible setting in the environment that ansible-playbook refuses stops the run
    before any task: `--check` must fail, say why on stderr, and leave no folder behind."""
    host = fresh_host("cpu-node")
    monkeypatch.setenv("ANSIBLE_STRATEGY", "nonesuch")  # ansible-runner passes it through
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    commands = str(host.path / ".nodeagent/commands.json")
    args = ["tune", "apply", "--check", "--root", str(host.path), "--commands", commands]
    args += ["--state-dir", str(tmp_path)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("failed: 0 changed")
    assert captured.err.startswith(
        "nodeagent: error: tune apply failed: ansible-runner failed: "
        "ERROR! Invalid play strategy specified: nonesuch\n"
    )
    assert list(tmp_path.glob("nodeagent-tune-*")) == []

    assert main([*args, "--keep-run"]) == 1
    (kept,) = tmp_path.glob("nodeagent-tune-*")
    captured = capsys.readouterr()
    assert f"note: ansible-runner's run kept in {kept}\n" in captured.out
    assert captured.err.rstrip().endswith(f"(run kept in {kept})")
    assert (kept / "env/extravars").is_file()
