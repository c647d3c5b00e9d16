"""Record and replay of probe data inside a root."""

from __future__ import annotations

import json
import os
from typing import Any

from nodeagent.fsutil import write_atomic
from nodeagent.host import PROBES_DIR, HostReadError, HostRoot

MAX_RECORDING_BYTES = 16 << 20


def load(root: HostRoot, probe: str) -> dict[str, Any] | None:
    """The recording of `probe` in `root`, or None when the root has none."""
    rel = f"{PROBES_DIR}/{probe}.json"
    if not root.exists(rel):
        return None
    try:
        data = json.loads(root.read_bytes(rel, MAX_RECORDING_BYTES))
    except (HostReadError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{rel}: unreadable recording: {exc}") from None
    if not isinstance(data, dict) or data.get("probe") != probe:
        raise ValueError(f"{rel}: not a {probe} recording")
    return data


def save(root_dir: str, probe: str, data: dict[str, Any]) -> str:
    """Write a recording into a directory root (used by snapshot capture)."""
    path = os.path.join(root_dir, PROBES_DIR, f"{probe}.json")
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    return path
