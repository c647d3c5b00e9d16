"""The agent's local state: its phase, last error and the record kept in state.json.

The file (/var/lib/nodeagent/state.json) is written atomically (temporary file, fsync,
rename, fsync of the directory) so a power cut or kill -9 leaves either the old or the new
state, never half of one. A file that does not parse is moved aside with a warning and the
agent starts clean: a corrupt cache must not keep a node from booting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from nodeagent.agent.events import EventBus
from nodeagent.fsutil import write_atomic

log = logging.getLogger(__name__)
MAX_STATE_BYTES = 4 << 20


class Phase(StrEnum):
    """The lifecycle phase; its values are the strings in GetStatus, heartbeats and the file.

    JOINING and JOINED are never set by the agent itself: a state file may carry them (the
    node serves a cluster), and tuning refuses to run on such a node.
    """

    STARTING = "STARTING"
    DISCOVERED = "DISCOVERED"
    READY = "READY"
    TUNING = "TUNING"
    REBOOT_REQUIRED = "REBOOT_REQUIRED"
    FAILED = "FAILED"
    JOINING = "JOINING"
    JOINED = "JOINED"


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


class AgentState:
    """The one writer of the phase and the last error, shared by discovery and tuning.

    Phase and error change only together, through set_phase, which publishes the `phase`
    event whenever the phase changes: no path (the recovery of an interrupted run at start
    included) can move the node without watchers and the log seeing it. `data` is the rest
    of the record; whoever owns a key writes it there and calls save().
    """

    def __init__(self, file: StateFile, bus: EventBus) -> None:
        self.file = file
        self.bus = bus
        self.data: dict[str, Any] = {}
        self._phase = Phase.STARTING
        self._last_error = ""

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def last_error(self) -> str:
        return self._last_error

    def load(self) -> None:
        """At start: the last run's record, phase and error stand until this run settles them.

        Loading is not a change, so it publishes nothing; a phase this version does not know
        starts over (a stale value must not pin the node in a phase nothing ever leaves).
        """
        self.data = self.file.load()
        stored = str(self.data.get("phase") or Phase.STARTING)
        try:
            self._phase = Phase(stored)
        except ValueError:
            log.warning(
                "state file %s has an unknown phase %r; starting over", self.file.path, stored
            )
            self._phase = Phase.STARTING
        self._last_error = str(self.data.get("last_error") or "")

    def set_phase(self, phase: Phase, error: str | None = None) -> None:
        """`error` None keeps the last error: a step that moves on without failing (tuning
        to REBOOT_REQUIRED) neither explains nor clears an earlier failure; '' clears it."""
        if error is not None:
            self._last_error = error
        if phase != self._phase:
            self._phase = phase
            self.bus.publish("phase", "", f"phase {phase}")

    def save(self) -> None:
        """A failed write is only logged: a full disk must not stop the agent serving."""
        self.data.update(phase=str(self._phase), last_error=self._last_error)
        try:
            self.file.save(self.data)
        except OSError as exc:
            log.error("cannot write state file %s: %s", self.file.path, exc)
