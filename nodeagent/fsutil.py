"""Atomic file writes, the one way nodeagent replaces a file.

Through a dot-file in the same directory (NFD ignores dot-files; a reader never sees half
a file), created with its final mode (a key file is never world-readable, even briefly),
fsynced, renamed into place, and the directory fsynced: after a crash or power loss there
is either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, dir_mode: int | None = None
) -> None:
    target = Path(path)
    if dir_mode is None:
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    blob = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # an old temporary file keeps its mode otherwise
        os.write(fd, blob)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
