"""Cheap writable copies of the modelled machine roots, for tests that change a file.

Imported by the conftest of each test package that uses `root_copy`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodeagent.host import HostRoot


@pytest.fixture
def root_copy(machine_root: Callable[..., Path], scratch: Path) -> Callable[..., Path]:
    """A copy of a modelled root made of hard links: new files are private to the copy;
    to change an existing file, `rewrite` it (unlink, then write) so the shared one stays."""
    count = 0

    def make(name: str) -> Path:
        nonlocal count
        count += 1
        dest = scratch / f"{name}-{count}"
        shutil.copytree(machine_root(name), dest, symlinks=True, copy_function=os.link)
        return dest

    return make


def rewrite(root: Path, rel: str, text: str) -> None:
    """Replace a file of a hard-linked root copy (resolving sysfs links inside the root)."""
    path = Path(HostRoot(root).host_path(HostRoot(root).resolve(rel)))
    path.unlink()
    path.write_text(text)


def record(root: Path, probe: str, data: dict[str, Any]) -> None:
    """Put a probe recording into a root copy (replacing, never writing through, a shared one)."""
    path = root / ".nodeagent" / "probes" / f"{probe}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(json.dumps(data))
