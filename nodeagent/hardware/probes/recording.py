"""What every probe declares (a name, how it records, how it replays) and where its
recording lives inside a root.

A recording is the probe's typed data as JSON, so replaying one gives discovery
exactly what the live read gave. Recordings come from other machines and older
versions, so the readers of a replayed recording still check what they use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Required, TypedDict, TypeVar, cast

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.fsutil import write_atomic
from nodeagent.host import PROBES_DIR, HostReadError, HostRoot

MAX_RECORDING_BYTES = 16 << 20

RecordingT = TypeVar("RecordingT", bound=Mapping[str, object])
OptionsT = TypeVar("OptionsT")
# probe name -> what it read, for snapshots and `nodeagent fabric --record`
Recordings = dict[str, Mapping[str, object]]


class RecordingHeader(TypedDict, total=False):
    """How every recording starts. A source that is not there (no tool, no daemon, no
    driver) is `available: false` with the reason in `error`, which replay then reports
    as the live read did."""

    probe: Required[str]
    version: Required[int]
    available: bool
    error: str


@dataclass(frozen=True)
class Probe(Generic[RecordingT, OptionsT]):
    """One source beyond sysfs. `record` asks the live source (it may use the inventory
    to know what to ask, and returns None when there is nothing to ask); off the live
    root the recording stands in for it."""

    name: str
    record: Callable[[HostRoot, pb.HardwareInventory, OptionsT], RecordingT | None]
    defaults: OptionsT

    def replay(self, root: HostRoot) -> RecordingT | None:
        """The recording in `root`, or None when the root has none."""
        return cast("RecordingT | None", load(root, self.name))

    def read(
        self,
        root: HostRoot,
        inv: pb.HardwareInventory,
        options: OptionsT | None = None,
        recordings: Recordings | None = None,
    ) -> RecordingT | None:
        """Live on `/`, replayed elsewhere; `recordings`, when given, keeps what was read."""
        if root.is_live:
            data = self.record(root, inv, self.defaults if options is None else options)
        else:
            data = self.replay(root)
        if recordings is not None and data is not None:
            recordings[self.name] = data
        return data


def load(root: HostRoot, probe: str) -> dict[str, object] | None:
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


def save(root_dir: str, probe: str, data: Mapping[str, object]) -> str:
    """Write a recording into a directory root (`nodeagent fabric --record`)."""
    path = os.path.join(root_dir, PROBES_DIR, f"{probe}.json")
    write_atomic(path, dumps(data))
    return path


def dumps(data: Mapping[str, object]) -> str:
    """The text of a recording file, the same whoever writes it."""
    return json.dumps(data, indent=1, sort_keys=True)
