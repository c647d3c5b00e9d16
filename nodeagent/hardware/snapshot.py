"""Snapshot capture: everything discovery reads, in one archive `--root` accepts.

Discovery runs once with tracing on; every file it read, directory it listed and
link it followed is copied into a tar.gz at the same root-relative path, links
kept as links (absolute targets made relative), plus the recording of every probe
in the registry, the fabric ones included, so `nodeagent fabric --root` on the
archive sees what the node saw. So a support case gets exactly what the agent saw,
no more: nothing outside the paths discovery reads (sysfs, procfs, os-release,
hostname) can enter it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from dataclasses import dataclass

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import discover
from nodeagent.hardware.probes.recording import Recordings, dumps
from nodeagent.hardware.probes.registry import PROBES
from nodeagent.host import PROBES_DIR, HostReadError, HostRoot

ALLOWED_PREFIXES = (
    "sys/",
    "proc/",
    "etc/os-release",
    "etc/hostname",
    "usr/lib/os-release",
    # MLNX_OFED's ofed_info script holds its release (software.rdma_stack); no secrets
    "usr/bin/ofed_info",
    "usr/sbin/ofed_info",
    f"{PROBES_DIR}/",
)
MAX_FILE_BYTES = 1 << 20


@dataclass
class CaptureResult:
    path: str
    members: int
    bytes_written: int
    probes: list[str]


class _ArchiveWriter:
    def __init__(self, root: HostRoot, tar: tarfile.TarFile) -> None:
        self.root = root
        self.tar = tar
        self.seen: set[str] = set()

    def add(self, kind: str, rel: str) -> None:
        resolved = self._walk(rel)
        if resolved is None:
            return
        full = self.root.host_path(resolved)
        if kind == "dir" or os.path.isdir(full):
            self._dir(resolved)
            if kind == "dir":
                for child in sorted(os.listdir(full)):
                    child_rel = f"{resolved}/{child}"
                    if os.path.islink(self.root.host_path(child_rel)):
                        self._walk(child_rel)
                    elif os.path.isdir(self.root.host_path(child_rel)):
                        self._dir(child_rel)
        elif kind in ("file", "exists") and os.path.isfile(full):
            self._file(resolved)

    def _allowed(self, rel: str) -> bool:
        return any(rel == p.rstrip("/") or rel.startswith(p) for p in ALLOWED_PREFIXES)

    def _walk(self, rel: str) -> str | None:
        """Resolve rel inside the root, archiving each link met; the real path, if allowed."""
        try:
            result = self.root.resolve(rel, on_link=self._link_met)
        except HostReadError:
            return None
        return result if self._allowed(result) else None

    def _link_met(self, link: str, target: str) -> None:
        if target.startswith("/"):  # re-root an absolute link as a relative one
            target = os.path.relpath(target.lstrip("/") or ".", os.path.dirname(link) or ".")
        self._link(link, target)

    def _member(self, name: str, kind: bytes) -> tarfile.TarInfo | None:
        if name in self.seen or not self._allowed(name):
            return None
        self.seen.add(name)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mtime = 0
        return info

    def _link(self, name: str, target: str) -> None:
        info = self._member(name, tarfile.SYMTYPE)
        if info is not None:
            info.linkname = target
            self.tar.addfile(info)

    def _dir(self, name: str) -> None:
        info = self._member(name, tarfile.DIRTYPE)
        if info is not None:
            info.mode = 0o755
            self.tar.addfile(info)

    def _file(self, name: str) -> None:
        try:
            with open(self.root.host_path(name), "rb", buffering=0) as fh:
                data = fh.read(MAX_FILE_BYTES)
        except OSError:
            return  # unreadable now (EINVAL on a down link): absent reads the same
        self.add_bytes(name, data)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._member(name, tarfile.REGTYPE)
        if info is not None:
            info.mode = 0o644
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))


def _record_probes(root: HostRoot, inv: pb.HardwareInventory, recordings: Recordings) -> None:
    """Every registered probe that discovery did not record. One that fails is left out
    and the rest still record; a damaged recording still enters the archive as it is,
    through the trace of the attempt to read it."""
    for probe in PROBES:
        if probe.name not in recordings:
            with contextlib.suppress(OSError, ValueError):
                probe.read(root, inv, recordings=recordings)


class SnapshotError(OSError):
    """The archive cannot be written where asked; the message names it and why."""


def capture(root: HostRoot, out_path: str) -> CaptureResult:
    traced = HostRoot(root.path, label=root.label)
    traced.trace = []
    recordings: Recordings = {}
    _record_probes(traced, discover(traced, recordings=recordings), recordings)
    tmp = f"{out_path}.partial"
    try:
        with contextlib.ExitStack() as stack:
            try:
                tar = stack.enter_context(tarfile.open(tmp, "w:gz", compresslevel=6))
            except OSError as exc:  # the bare error names `.partial`, which nobody asked for
                raise SnapshotError(f"cannot write {out_path}: {exc.strerror or exc}") from None
            writer = _ArchiveWriter(root, tar)
            for kind, rel in traced.trace:
                writer.add(kind, rel)
            for name, data in sorted(recordings.items()):
                writer.add_bytes(f"{PROBES_DIR}/{name}.json", dumps(data).encode())
            members = len(writer.seen)
        try:
            os.replace(tmp, out_path)
        except OSError as exc:
            raise SnapshotError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return CaptureResult(out_path, members, os.path.getsize(out_path), sorted(recordings))
