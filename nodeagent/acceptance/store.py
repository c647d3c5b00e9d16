"""The acceptance run's files in the agent's state directory: the one-run lock, the marker
of a run in progress and the last report.

The lock is flock(2) on `acceptance/lock`: the kernel drops it when its holder dies, so a
run is "in progress" exactly while some process holds it. A marker (`running.json`) left
behind with the lock free is a run whose agent stopped mid-way: it is recorded as
interrupted, never as passed. The CLI and the agent use the same files, so a run started
either way refuses the other.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.acceptance.model import LEVELS
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.fsutil import write_atomic

DIR = "acceptance"
DEFAULT_LEVEL = "quick"


class Busy(RuntimeError):
    """Another acceptance run holds the lock."""


def _dir(state_dir: str | os.PathLike[str]) -> Path:
    path = Path(state_dir) / DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class RunLock:
    """Held for the whole run; writing the marker is part of taking it."""

    def __init__(self, state_dir: str | os.PathLike[str], marker: vpb.ValidationReport) -> None:
        self.dir = _dir(state_dir)
        self.marker = marker
        self._fd = -1

    def __enter__(self) -> RunLock:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy("another acceptance run is in progress on this node") from None
        self._fd = fd
        recover(self.dir.parent, locked=True)
        _write(self.dir / "running.json", self.marker)
        return self

    def __exit__(self, *exc: object) -> None:
        (self.dir / "running.json").unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _write(path: Path, report: vpb.ValidationReport) -> None:
    text = json_format.MessageToJson(report, preserving_proto_field_name=True)
    write_atomic(str(path), text.encode(), 0o600)


def _read(path: Path) -> vpb.ValidationReport | None:
    try:
        return json_format.Parse(path.read_text(), vpb.ValidationReport())
    except (OSError, json_format.ParseError, json.JSONDecodeError):
        return None


def save(state_dir: str | os.PathLike[str], report: vpb.ValidationReport) -> None:
    _write(_dir(state_dir) / "last.json", report)


def _held(directory: Path) -> bool:
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def recover(state_dir: str | os.PathLike[str], *, locked: bool = False) -> bool:
    """A marker with nobody holding the lock is a run that died: record it as interrupted.
    True when one was recorded. `locked`: the caller holds the lock (it is about to run)."""
    directory = _dir(state_dir)
    marker = directory / "running.json"
    if not marker.exists() or (not locked and _held(directory)):
        return False
    report = _read(marker) or vpb.ValidationReport()
    report.outcome = vpb.RUN_INTERRUPTED
    report.reason = "interrupted: the agent stopped during the run; run it again"
    now = Timestamp()
    now.GetCurrentTime()
    report.finished_at.CopyFrom(now)
    save(state_dir, report)
    marker.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class LastResult:
    """What READY needs from acceptance: the last report, and whether it passed the level
    the profile requires. `reason` is one line for the node's REASON column."""

    report: vpb.ValidationReport | None
    required_passed: bool
    reason: str


def required_passed(report: vpb.ValidationReport, required_level: str = "") -> tuple[bool, str]:
    """Did this report pass `required_level` (default: the level it recorded, else quick)?
    A partial run (--only), an interrupted or failed one, or one below the level does not."""
    need = required_level or report.required_level or DEFAULT_LEVEL
    if report.outcome == vpb.RUN_RUNNING:
        return False, "acceptance tests running"
    if report.outcome == vpb.RUN_INTERRUPTED:
        return False, report.reason or "acceptance run interrupted"
    if report.outcome != vpb.RUN_PASSED:
        return False, f"acceptance failed: {report.reason}"
    if report.only:
        return False, f"last acceptance run was partial (--only {','.join(report.only)})"
    if need in LEVELS and LEVELS.index(report.level) < LEVELS.index(need):
        return False, f"acceptance passed at {report.level}, profile requires {need}"
    return True, ""


def last_result(state_dir: str | os.PathLike[str], required_level: str = "") -> LastResult:
    """The last report in `state_dir` (a run that died is recorded as interrupted first)."""
    directory = _dir(state_dir)
    if (directory / "running.json").exists() and _held(directory):
        running = _read(directory / "running.json") or vpb.ValidationReport()
        running.outcome = vpb.RUN_RUNNING
        return LastResult(running, False, "acceptance tests running")
    recover(state_dir)
    report = _read(directory / "last.json")
    if report is None:
        return LastResult(None, False, "acceptance tests not run")
    ok, reason = required_passed(report, required_level)
    return LastResult(report, ok, reason)
