"""Snapshot capture: everything discovery reads, in one archive `--root` accepts.

Discovery runs once with tracing on; every file it read, directory it listed and
link it followed is copied into a tar.gz at the same root-relative path, links
kept as links (absolute targets made relative), plus the probes' recordings. So a
support case gets exactly what the agent saw, no more: nothing outside the
paths discovery reads (sysfs, procfs, os-release, hostname) can enter it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass

from nodeagent.hardware.discover import discover
from nodeagent.host import PROBES_DIR, HostRoot

ALLOWED_PREFIXES = (
    "sys/",
    "proc/",
    "etc/os-release",
    "etc/hostname",
    "usr/lib/os-release",
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
        """Follow rel component by component, archiving each link met; return the real path."""
        parts = [p for p in rel.split("/") if p and p != "."]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            full = self.root.host_path(candidate)
            if not os.path.islink(full):
                if not os.path.lexists(full):
                    return None
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(full)
            if target.startswith("/"):  # re-root an absolute link as a relative one
                target = os.path.relpath(target.lstrip("/") or ".", "/".join(done) or ".")
            self._link(candidate, target)
            parts = [p for p in target.split("/") if p and p != "."] + parts
        result = "/".join(done)
        return result if self._allowed(result) else None

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


def capture(root: HostRoot, out_path: str) -> CaptureResult:
    traced = HostRoot(root.path, label=root.label)
    traced.trace = []
    recordings: dict[str, object] = {}
    discover(traced, recordings=recordings)
    tmp = f"{out_path}.partial"
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            writer = _ArchiveWriter(root, tar)
            for kind, rel in traced.trace:
                writer.add(kind, rel)
            for probe, data in sorted(recordings.items()):
                blob = json.dumps(data, indent=1, sort_keys=True).encode()
                writer.add_bytes(f"{PROBES_DIR}/{probe}.json", blob)
            members = len(writer.seen)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return CaptureResult(out_path, members, os.path.getsize(out_path), sorted(recordings))
