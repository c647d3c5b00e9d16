"""One acceptance run: take the lock, read the counter baselines, run each check under its
timeout, and keep the report.

A check runs in a worker thread; past its timeout the tools it started are killed and the
check fails with "timed out", and the run goes on to the next one. A check the profile
requires that skips fails instead. `progress` sees each check start and end (the agent's
stream and the CLI's progress lines).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.acceptance import registry, store, tools
from nodeagent.acceptance.model import FAIL, PASS, SKIP, Check, Context, Unparseable
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.host import HostRoot

Progress = Callable[[vpb.ValidationEvent], None]


@dataclass
class Options:
    level: str = ""  # default: the profile's required level, else quick
    only: list[str] = field(default_factory=list)
    path: str = ""  # where tools are looked up; default $PATH
    progress: Progress | None = None
    gpu_driver: str = "host"  # operator: the GPU Operator installs the driver after the join


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _timeout(check: Check, ctx: Context) -> float:
    return float(ctx.spec.timeouts.get(check.name) or check.timeout(ctx))


def _execute(check: Check, ctx: Context) -> vpb.CheckResult:
    """Run one check under its timeout; whatever happens, a result comes back."""
    limit = _timeout(check, ctx)
    ctx.tools, ctx.processes = [], []
    ctx.cancel = threading.Event()
    ctx.deadline = time.monotonic() + limit
    box: list[vpb.CheckResult] = []

    def work() -> None:
        try:
            box.append(check.run(ctx))
        except tools.ToolTimeout as exc:
            box.append(vpb.CheckResult(verdict=FAIL, reason=f"timed out after {limit:g} s: {exc}"))
        except Unparseable as exc:
            box.append(vpb.CheckResult(verdict=FAIL, reason=str(exc)))
        except Exception as exc:  # a bug in a check fails that check, not the run
            box.append(vpb.CheckResult(verdict=FAIL, reason=f"{type(exc).__name__}: {exc}"))

    began = time.monotonic()
    worker = threading.Thread(target=work, name=f"acceptance-{check.name}", daemon=True)
    worker.start()
    worker.join(limit + 1.0)
    if worker.is_alive() or not box:
        ctx.cancel.set()
        tools.kill_all(ctx)
        worker.join(2.0)
        result = vpb.CheckResult(verdict=FAIL, reason=f"timed out after {limit:g} s")
    else:
        result = box[0]
    result.name = check.name
    result.tools.extend(ctx.tools)
    result.duration_seconds = time.monotonic() - began
    return result


def run(
    root: HostRoot,
    inventory: pb.HardwareInventory,
    profile: tpb.TuningProfile | None,
    state_dir: str | os.PathLike[str],
    opts: Options,
) -> vpb.ValidationReport:
    """Run the level's checks and return (and keep) the report. Raises store.Busy when a
    run is already in progress, ValueError for an unknown level or check."""
    spec = profile.acceptance if profile is not None else vpb.AcceptanceSpec()
    required_level = spec.required_level or store.DEFAULT_LEVEL
    level = opts.level or required_level
    checks = registry.select(level, opts.only)
    report = vpb.ValidationReport(
        run_id=uuid.uuid4().hex[:12],
        level=level,
        only=opts.only,
        profile=profile.name if profile is not None else "",
        required_level=required_level,
        on_failure=spec.on_failure or "quarantine",
        outcome=vpb.RUN_RUNNING,
        hostname=inventory.system.hostname or socket.gethostname(),
    )
    report.started_at.CopyFrom(_now())
    required = set(spec.required_checks)
    began = time.monotonic()
    with store.RunLock(state_dir, report), tempfile.TemporaryDirectory(prefix="accept-") as tmp:
        ctx = Context(
            root=root,
            inventory=inventory,
            spec=spec,
            expected=profile.expected_hardware if profile is not None else tpb.ExpectedHardware(),
            level=level,
            path=opts.path or os.environ.get("PATH", os.defpath),
            workdir=Path(tmp),
            gpu_driver=opts.gpu_driver,
        )
        for check in checks:
            if check.baseline is not None:
                try:
                    ctx.baselines[check.name] = check.baseline(ctx)
                except Exception:  # the check itself reports what it cannot read
                    ctx.baselines[check.name] = None
        for i, check in enumerate(checks, 1):
            if opts.progress:
                started = vpb.CheckStarted(name=check.name, index=i, total=len(checks))
                opts.progress(vpb.ValidationEvent(started=started))
            result = _execute(check, ctx)
            result.required = check.name in required
            if result.required and result.verdict == SKIP:
                result.verdict = FAIL
                result.reason = f"required by the profile but cannot run: {result.reason}"
            report.checks.append(result)
            if opts.progress:
                opts.progress(vpb.ValidationEvent(check=result))
        failed = [c for c in report.checks if c.verdict == FAIL]
        report.outcome = vpb.RUN_FAILED if failed else vpb.RUN_PASSED
        report.reason = f"{failed[0].name}: {failed[0].reason}" if failed else ""
        report.finished_at.CopyFrom(_now())
        report.duration_seconds = time.monotonic() - began
        report.tool_seconds = sum(t.seconds for c in report.checks for t in c.tools)
        store.save(state_dir, report)
    if opts.progress:
        opts.progress(vpb.ValidationEvent(report=report))
    return report


__all__ = ["PASS", "Options", "run"]
