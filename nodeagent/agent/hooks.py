"""Operators' initialization hooks: executables in <hooks_dir>/<phase>.d/.

They run in name order with the phase and node facts in their environment
(NODEAGENT_PHASE, NODEAGENT_HOSTNAME, NODEAGENT_GPU_COUNT, ...), each with a
timeout; output is kept (the last 64 KiB of each stream) however much a hook
prints, and a hook that fails or hangs fails its phase with the tail of its
stderr. Files that are not executable are skipped with a warning.

Hooks run as root, so, as sshd's StrictModes and cron do, a hook runs only if nobody but
root could have put it there: the hook and every directory from hooks_dir down to it are
owned by root and not group- or world-writable, else the whole phase fails before any of
its hooks runs (a refused hook is the operator's hook not having run, which must not pass
for success). The agent's own uid counts as root when it runs unprivileged: that user
could run anything the hook does anyway. Symlinks are resolved, as sshd resolves an
authorized_keys link, and the real path is what is checked and run; one that leads
outside hooks_dir is refused, since the directories on its way were never checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
KEEP_BYTES = 64 * 1024
RULE = (
    "a hook and every directory from hooks_dir down to it must be owned by root "
    "and writable by no one else"
)


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


def _unsafe(path: str, trusted: tuple[int, ...]) -> str:
    """Why `path` could have been written by someone other than root ('' when it could not)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"  # resolved a moment ago: replaced since
    if st.st_uid not in trusted:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & stat.S_IWOTH:
        return f"world-writable (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_mode & stat.S_IWGRP:
        return f"group-writable (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def check_hook(hooks_dir: str, hook: Path) -> Path:
    """The real path of `hook` to run, after StrictModes' checks; HookError naming the path
    and the rule when it fails them."""
    top = os.path.realpath(hooks_dir)
    real = os.path.realpath(hook)
    if os.path.commonpath([top, real]) != top:
        raise HookError(f"hook {hook} refused: it leads to {real}, outside {top}; {RULE}")
    trusted = (0,) if os.geteuid() == 0 else (0, os.geteuid())
    parts = Path(os.path.relpath(real, top)).parts
    for depth in range(len(parts) + 1):
        path = os.path.join(top, *parts[:depth])
        why = _unsafe(path, trusted)
        if why:
            raise HookError(f"hook {hook} refused: {path} is {why}; {RULE}")
    return Path(real)


async def run_phase(
    hooks_dir: str, phase: str, facts: dict[str, str], timeout: float
) -> list[HookResult]:
    """Run a phase's hooks in order; the first failure raises HookError. Every hook is checked
    before the first one runs, so a refused hook never leaves its phase half done."""
    results = []
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "NODEAGENT_PHASE": phase,
    }
    env.update({f"NODEAGENT_{k.upper()}": v for k, v in facts.items()})
    try:
        checked = [(path, check_hook(hooks_dir, path)) for path in hooks_for(hooks_dir, phase)]
    except HookError as exc:
        raise HookError(f"{phase} {exc}") from None
    for path, real in checked:
        result = await run_hook(real, env, timeout)
        result.name = path.name
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
