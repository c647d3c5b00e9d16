"""Operators' initialization hooks: executables in <hooks_dir>/<phase>.d/.

They run in name order with the phase and node facts in their environment
(NODEAGENT_PHASE, NODEAGENT_HOSTNAME, NODEAGENT_GPU_COUNT, ...), each with a
timeout; output is kept (the last 64 KiB of each stream) however much a hook
prints, and a hook that fails or hangs fails its phase with the tail of its
stderr. Files that are not executable are skipped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
KEEP_BYTES = 64 * 1024
PHASES = ("pre-discovery", "post-discovery", "pre-tuning", "post-tuning", "pre-join", "post-join")


class HookError(RuntimeError):
    """A hook failed its phase; the message says which, how, and its stderr tail."""


@dataclass
class HookResult:
    name: str
    returncode: int | None  # None: killed after the timeout
    duration_seconds: float
    stdout_tail: bytes = b""
    stderr_tail: bytes = b""
    truncated: bool = False
    extra: dict[str, str] = field(default_factory=dict)


async def _drain(stream: asyncio.StreamReader, keep: bytearray) -> bool:
    """Read a stream to its end keeping only the last KEEP_BYTES; True if anything dropped."""
    dropped = False
    while chunk := await stream.read(65536):
        keep.extend(chunk)
        if len(keep) > KEEP_BYTES:
            del keep[: len(keep) - KEEP_BYTES]
            dropped = True
    return dropped


async def run_hook(path: Path, env: dict[str, str], timeout: float) -> HookResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc = await asyncio.create_subprocess_exec(
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    out, err = bytearray(), bytearray()
    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err), proc.wait())
    returncode: int | None
    try:
        dropped_out, dropped_err, returncode = await asyncio.wait_for(readers, timeout)
        truncated = dropped_out or dropped_err
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the hook and anything it started
        await proc.wait()
        returncode, truncated = None, False
    return HookResult(path.name, returncode, loop.time() - start, bytes(out), bytes(err), truncated)


def hooks_for(hooks_dir: str, phase: str) -> list[Path]:
    directory = Path(hooks_dir) / f"{phase}.d"
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if not os.access(path, os.X_OK):
            log.warning("hook %s is not executable; skipped", path)
            continue
        found.append(path)
    return found


async def run_phase(
    hooks_dir: str, phase: str, facts: dict[str, str], timeout: float
) -> list[HookResult]:
    """Run a phase's hooks in order; the first failure raises HookError."""
    results = []
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "NODEAGENT_PHASE": phase,
    }
    env.update({f"NODEAGENT_{k.upper()}": v for k, v in facts.items()})
    for path in hooks_for(hooks_dir, phase):
        result = await run_hook(path, env, timeout)
        results.append(result)
        tail = result.stderr_tail[-2000:].decode("utf-8", "replace").strip()
        if result.returncode is None:
            raise HookError(f"{phase} hook {path.name} timed out after {timeout:g}s: {tail}")
        if result.returncode != 0:
            raise HookError(f"{phase} hook {path.name} failed (exit {result.returncode}): {tail}")
        note = " (output truncated)" if result.truncated else ""
        log.info(
            "hook phase=%s name=%s ok in %.2fs%s", phase, path.name, result.duration_seconds, note
        )
    return results
