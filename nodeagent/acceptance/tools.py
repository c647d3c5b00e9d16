"""Running the external tools (dcgmi, all_reduce_perf, ib_write_bw, fio) under a deadline.

Each tool runs in its own process group so a timeout kills what it started too (fio and
all_reduce_perf fork workers); the run is recorded (argv, exit code, seconds, version) in the
running check's ToolRun list whatever happens, so a report says what was run and how long.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from nodeagent.acceptance.model import Context
from nodeagent.api.v1 import validate_pb2 as vpb

MAX_OUTPUT = 4 << 20


class ToolTimeout(TimeoutError):
    """The tool ran past the check's deadline and was killed."""


@dataclass
class Output:
    stdout: bytes
    stderr: bytes
    code: int


def find(ctx: Context, tool: str) -> str | None:
    """The tool's path on the context's PATH, or None (the check then skips, saying so)."""
    return shutil.which(tool, path=ctx.path)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def start(ctx: Context, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a tool in its own process group, registered so a timeout can kill it."""
    env = dict(os.environ, PATH=ctx.path, LC_ALL="C")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    ctx.processes.append(proc)
    return proc


def finish(
    ctx: Context, proc: subprocess.Popen[bytes], argv: list[str], began: float, version: str = ""
) -> Output:
    """Wait for `proc` until the check's deadline; record the run; kill it on timeout."""
    remaining = max(0.01, ctx.deadline - time.monotonic())
    run = vpb.ToolRun(tool=os.path.basename(argv[0]), version=version, argv=argv)
    try:
        out, err = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        run.timed_out, run.exit_code = True, -9
        run.seconds = time.monotonic() - began
        ctx.tools.append(run)
        raise ToolTimeout(f"{run.tool} did not finish within the check's timeout") from None
    run.exit_code, run.seconds = proc.returncode, time.monotonic() - began
    ctx.tools.append(run)
    return Output(out[:MAX_OUTPUT], err[:MAX_OUTPUT], proc.returncode)


def run(ctx: Context, argv: list[str], version: str = "") -> Output:
    began = time.monotonic()
    return finish(ctx, start(ctx, argv), argv, began, version)


def version_of(ctx: Context, argv: list[str]) -> str:
    """`tool --version`'s first line ('' when it says nothing); not recorded as a run."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=min(10.0, max(0.01, ctx.deadline - time.monotonic())),
            env=dict(os.environ, PATH=ctx.path, LC_ALL="C"),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    return lines[0].strip() if lines else ""


def kill_all(ctx: Context) -> None:
    """Kill whatever the running check started (its timeout passed)."""
    for proc in ctx.processes:
        if proc.poll() is None:
            _kill(proc)
