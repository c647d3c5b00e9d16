"""The agent's local state file (/var/lib/nodeagent/state.json).

Written atomically (temporary file, fsync, rename, fsync of the directory) so a
power cut or kill -9 leaves either the old or the new state, never half of one.
A file that does not parse is moved aside with a warning and the agent starts
clean: a corrupt cache must not keep a node from booting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from nodeagent.fsutil import write_atomic

log = logging.getLogger(__name__)
MAX_STATE_BYTES = 4 << 20


class StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()[: MAX_STATE_BYTES + 1]
        except FileNotFoundError:
            return {}
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError("larger than 4 MiB")
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (ValueError, UnicodeDecodeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            log.warning(
                "state file %s is corrupt (%s); moved to %s, starting clean", self.path, exc, aside
            )
            return {}

    def save(self, data: dict[str, Any]) -> None:
        blob = json.dumps(data, indent=1, sort_keys=True).encode()
        write_atomic(self.path, blob, mode=0o600, dir_mode=0o700)
