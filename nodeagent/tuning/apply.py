"""Apply a profile: verify, run the golden-image playbook through ansible-runner, verify again.

`apply()` is a generator of TuningEvent: a TaskProgress per playbook task as ansible-runner
reports it (the CLI prints them, the agent streams them over gRPC), then one ApplyResult.
A failed run is `failed` in check mode too, and its error says why: the failing task and its
message, or, when ansible-playbook stopped before any task (a playbook it cannot load, a
missing module), the last lines it wrote. Every run gets a fresh private data directory
holding the extravars file; it is removed afterwards, failed or not, since the cause is in
the result and a folder left in /tmp per run tells nobody anything; `keep_run` keeps it (for
a post-mortem of ansible-runner's artifacts) and the result names it. BMC credentials never
enter it.

The playbook and its module are package data (assets/playbooks/), found with
importlib.resources, so an installed wheel runs the same files as a checkout.

A needed reboot is reported (outcome `reboot-required`) and done only under the `auto`
policy, after the run, with the `reboot` command; never in check mode.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.host import HostRoot
from nodeagent.tuning import commands as commands_mod
from nodeagent.tuning import gpu_driver, plan
from nodeagent.tuning.verify import PENDING, verify

PLAYBOOKS = resources.files("nodeagent.tuning") / "assets" / "playbooks"
PLAYBOOK = "golden-image.yml"
ERROR_LINES = 6  # of ansible-playbook's output, when it failed before any task could
RUNNER_TASK = "ansible-runner"  # the failed task of a run that failed outside any task
REBOOT_POLICIES = ("never", "auto")
REFUSED_PHASES = ("JOINED", "JOINING")
BiosStep = Callable[[bool], tuple[list[tpb.SettingResult], list[tpb.TaskProgress]]]


def refuse_reason(phase: str, allow_joined: bool) -> str:
    """Why apply must not run on a node in `phase` ('' when it may)."""
    if phase in REFUSED_PHASES and not allow_joined:
        return (
            f"the node is {phase} (serving a cluster); drain it and hold it for "
            "maintenance, then pass the maintenance override to tune it"
        )
    return ""


@dataclass
class ApplyOptions:
    profile: tpb.TuningProfile
    root: HostRoot
    inventory: pb.HardwareInventory
    check: bool = False
    reboot_policy: str = "never"
    commands: dict[str, list[str]] = field(
        default_factory=lambda: dict(commands_mod.DEFAULT_COMMANDS)
    )
    playbook_dir: Path | None = None  # None: the playbooks shipped in the package
    bios: BiosStep | None = None  # (check) -> (verify results, progress); None: no BMC
    keep_run: bool = False  # keep ansible-runner's private data directory, and name it
    gpu_driver: str = ""  # the node's own setting; "" = the profile's, else host


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _unified_diff(diff: Any) -> str:
    import difflib

    parts = diff if isinstance(diff, list) else [diff] if diff else []
    out: list[str] = []
    for d in parts:
        if not isinstance(d, dict) or "after" not in d:
            continue
        name = str(d.get("after_header") or d.get("before_header") or "file")
        out += difflib.unified_diff(
            str(d.get("before", "")).splitlines(True),
            str(d.get("after", "")).splitlines(True),
            fromfile=f"a{name}",
            tofile=f"b{name}",
        )
    return "".join(out)


class _Progress:
    """ansible-runner events -> TaskProgress; keeps the counts and the first failure."""

    def __init__(self, check: bool) -> None:
        self.check = check
        self.index = 0
        self.counts = {"changed": 0, "ok": 0, "skipped": 0}
        self.failed_task = ""
        self.error = ""
        self.due: list[str] = []

    def convert(self, event: dict[str, Any]) -> tpb.TaskProgress | None:
        kind, data = event.get("event", ""), event.get("event_data", {})
        task = str(data.get("task", ""))
        if kind == "playbook_on_task_start":
            self.index += 1
            return tpb.TaskProgress(
                index=self.index, task=task, status=tpb.TASK_STARTED, time=_now()
            )
        res = data.get("res", {}) or {}
        if kind == "runner_on_ok" and "due" in (res.get("ansible_facts") or {}):
            due = [k for k, on in res["ansible_facts"]["due"].items() if on]
            self.due = due
            self.counts["ok"] += 1
            verb = "would run" if self.check else "to run"
            return tpb.TaskProgress(
                index=self.index,
                task=task,
                status=tpb.TASK_OK,
                time=_now(),
                message=f"{verb}: {', '.join(due) or 'nothing'}",
            )
        if kind == "runner_on_ok":
            changed = bool(res.get("changed"))
            self.counts["changed" if changed else "ok"] += 1
            return tpb.TaskProgress(
                index=self.index,
                task=task,
                time=_now(),
                status=tpb.TASK_CHANGED if changed else tpb.TASK_OK,
                diff=_unified_diff(res.get("diff")),
                message=", ".join(res.get("changed_paths", [])),
            )
        if kind == "runner_on_skipped":
            self.counts["skipped"] += 1
            return tpb.TaskProgress(
                index=self.index, task=task, time=_now(), status=tpb.TASK_SKIPPED, message=""
            )
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            msg = str(res.get("msg") or "failed")
            stderr = str(res.get("stderr") or "").strip()
            for item in res.get("results", []) or []:
                if isinstance(item, dict) and item.get("failed"):
                    stderr = stderr or str(item.get("stderr") or item.get("msg") or "").strip()
            error = f"{msg}: {stderr}" if stderr and stderr not in msg else msg
            if not self.failed_task:
                self.failed_task, self.error = task, error
            return tpb.TaskProgress(
                index=self.index, task=task, status=tpb.TASK_FAILED, message=error, time=_now()
            )
        return None


def _runner_env(private: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(private / "tmp"),
        "ANSIBLE_HOME": str(private / "ansible"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }


def _error_tail(text: str) -> str:
    """The lines that say why ansible-playbook stopped: from its last `ERROR!` on (what
    follows is where in the playbook), else the last lines it wrote."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("ERROR!")]
    tail = lines[starts[-1] :] if starts else lines[-ERROR_LINES:]
    return "\n".join(tail[:ERROR_LINES])


def run_playbook(
    private: Path, playbook: Path, check: bool, on_event: Callable[[dict[str, Any]], None]
) -> tuple[str, str]:
    """Run `playbook` with the inputs in `private`; return ansible-runner's status and, for a
    run that did not succeed, the last error lines ansible-playbook wrote.

    Events arrive live through the handler; any the live path missed (ansible-runner reads
    them from the child's output, and under load some arrive only in the job_events
    artifacts) are replayed from the artifacts afterwards, in order, so none is lost.
    """
    import ansible_runner  # imported here: the CLI's other commands must not pay for it

    seen: set[str] = set()

    def handler(event: dict[str, Any]) -> bool:
        seen.add(str(event.get("uuid", "")))
        on_event(event)
        return True  # keep ansible-runner's own artifacts too

    config = ansible_runner.RunnerConfig(
        private_data_dir=str(private),
        playbook=str(playbook),
        cmdline="--check --diff" if check else "--diff",
        envvars=_runner_env(private),
        quiet=True,
        settings={"suppress_ansible_output": True},
    )
    config.prepare()
    # subprocess, not the pexpect default: pexpect's pty fork from a multi-threaded process
    # (the agent, with gRPC's threads) intermittently lost the child (rc None, no output).
    # Nothing here answers prompts, so pexpect has nothing to offer.
    config.runner_mode = "subprocess"
    runner = ansible_runner.Runner(config=config, event_handler=handler)
    runner.run()
    for event in runner.events:
        if str(event.get("uuid", "")) not in seen:
            on_event(event)
    status = str(runner.status)
    if status == "successful":
        return status, ""
    output = ""
    for stream in ("stderr", "stdout"):  # subprocess mode keeps them apart; errors: stderr
        with contextlib.suppress(OSError):
            output = output or (Path(config.artifact_dir) / stream).read_text().strip()
    return status, _error_tail(output)


@contextlib.contextmanager
def _playbook_dir(given: Path | None) -> Iterator[Path]:
    """The directory to hand ansible-runner: the one given, else the package's own, as a real
    path (as_file extracts it only where the package is not on a filesystem)."""
    if given is not None:
        yield given
        return
    with resources.as_file(PLAYBOOKS) as shipped:
        yield shipped


def apply(opts: ApplyOptions) -> Iterator[tpb.TuningEvent]:
    """Run one apply; yields progress as it happens and the result last."""
    start = time.perf_counter()
    result = tpb.ApplyResult(
        profile=opts.profile.name, check=opts.check, reboot_policy=opts.reboot_policy
    )
    if opts.reboot_policy not in REBOOT_POLICIES:
        raise ValueError(f"reboot policy {opts.reboot_policy!r}: use one of {REBOOT_POLICIES}")
    commands = commands_mod.check(opts.commands)
    bios_before: list[tpb.SettingResult] = []
    mode = gpu_driver.for_mode(
        opts.profile, gpu_driver.effective(opts.gpu_driver, opts.profile.gpu_driver)
    )
    profile = mode.profile
    before = verify(opts.root, profile, opts.inventory, bios_before)
    target = "" if opts.root.is_live else opts.root.path
    extravars, notes = plan.build(profile, opts.inventory, opts.root, before, commands, target)
    notes += gpu_driver.notes(mode.left_out)
    private = Path(tempfile.mkdtemp(prefix="nodeagent-tune-"))
    thread: threading.Thread | None = None
    try:
        os.chmod(private, 0o700)
        plan.write_private_dir(private, extravars, sys.executable)
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        progress = _Progress(opts.check)
        status: list[tuple[str, str]] = []

        def worker() -> None:
            try:
                with _playbook_dir(opts.playbook_dir) as playbooks:
                    status.append(
                        run_playbook(private, playbooks / PLAYBOOK, opts.check, events.put)
                    )
            except Exception as exc:  # surfaced as the run's error below
                status.append((f"error: {exc}", ""))
            finally:
                events.put(None)

        thread = threading.Thread(target=worker, name="ansible-runner", daemon=True)
        thread.start()
        while (event := events.get()) is not None:
            item = progress.convert(event)
            if item is not None:
                yield tpb.TuningEvent(task=item)
        thread.join()
        run_status, output = status[0] if status else ("error: no status", "")
        failed = run_status != "successful"
        bios_results: list[tpb.SettingResult] = []
        if not failed and opts.bios is not None:
            try:
                bios_results, bios_progress = opts.bios(opts.check)
                for item in bios_progress:
                    progress.index += 1
                    item.index = progress.index
                    progress.counts["changed" if item.status == tpb.TASK_CHANGED else "ok"] += 1
                    yield tpb.TuningEvent(task=item)
            except Exception as exc:  # a BMC failure fails the run, with its step named
                progress.failed_task, progress.error = "BIOS settings (Redfish)", str(exc)
                failed = True
        result.changed, result.ok = progress.counts["changed"], progress.counts["ok"]
        result.skipped = progress.counts["skipped"]
        if failed:
            result.outcome = "failed"
            result.failed_task = progress.failed_task or RUNNER_TASK
            result.error = progress.error or _runner_error(run_status, output)
            if opts.keep_run:
                result.error += f" (run kept in {private})"
        if opts.keep_run:
            notes.append(f"ansible-runner's run kept in {private}")
        after = verify(opts.root, profile, opts.inventory, bios_results)
        result.report.CopyFrom(after)
        pending = [s.setting for s in after.settings if s.status == PENDING]
        result.reboot_needed = bool(pending) and not opts.check
        result.reboot_reasons.extend(pending if result.reboot_needed else [])
        result.notes.extend(notes)
        if not failed:
            result.outcome = "checked" if opts.check else "tuned"
            if result.reboot_needed:
                result.outcome = "reboot-required"
                if opts.reboot_policy == "auto":
                    subprocess.run(commands["reboot"], check=True, timeout=60)
                    result.outcome = "rebooting"
        result.duration_seconds = time.perf_counter() - start
    finally:
        if thread is not None:
            thread.join(timeout=60)  # an interrupted run: let ansible-playbook end first
        if not opts.keep_run:
            shutil.rmtree(private, ignore_errors=True)
    yield tpb.TuningEvent(result=result)


def _runner_error(status: str, output: str) -> str:
    """Why a run with no failed task failed: ansible-runner's status and the lines
    ansible-playbook wrote (a playbook it could not load says so before any task runs)."""
    if status.startswith("error: "):
        return status.removeprefix("error: ")
    return f"ansible-runner {status}: {output}" if output else f"ansible-runner {status}"
