"""HostRoot: the one door to the machine's files.

Every discovery and verification function reads through a HostRoot so the same
code runs against the live machine (`/`), a directory laid out like `/` (a test
fixture, an unpacked snapshot) or a snapshot archive. Paths given to its methods
are relative to the root (`sys/class/net`), never absolute host paths.

Symlinks are resolved inside the root: sysfs links are relative, and an absolute
link in a captured tree is re-rooted rather than followed out to this machine.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PROBES_DIR = ".nodeagent/probes"
_MAX_LINKS = 40


class HostReadError(OSError):
    """A file under the root could not be read; the message names it."""


class HostRoot:
    """A view of a machine's files under `path` (default the live root)."""

    def __init__(self, path: str | os.PathLike[str] = "/", *, label: str | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.is_live = self.path == "/"
        self.label = label or self.path
        self._prefix = "" if self.is_live else self.path
        # When a list, every access is appended as (kind, rel): kind is "file",
        # "dir", "link" or "exists". Snapshot capture and the benchmark use it.
        self.trace: list[tuple[str, str]] | None = None

    def __repr__(self) -> str:
        return f"HostRoot({self.label!r})"

    def host_path(self, rel: str) -> str:
        """The path on this machine of `rel` under the root."""
        return f"{self._prefix}/{rel.lstrip('/')}"

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes:
        """Read at most `limit` bytes; sysfs files are tiny, a huge one is garbage."""
        full = self.host_path(rel)
        if self.trace is not None:
            self.trace.append(("file", rel))
        try:
            with open(full, "rb", buffering=0) as fh:
                return fh.read(limit)
        except OSError as exc:
            raise HostReadError(exc.errno, f"{rel}: {exc.strerror or exc}") from exc

    def read_text(self, rel: str) -> str:
        """File content decoded leniently (garbage bytes never raise)."""
        return self.read_bytes(rel).decode("utf-8", "replace")

    def read_attr(self, rel: str) -> str:
        """A sysfs attribute: one value, trailing newline and padding stripped."""
        return self.read_text(rel).strip()

    def attr(self, rel: str, default: str = "") -> str:
        """Like read_attr, but a missing or unreadable file gives `default`."""
        try:
            return self.read_attr(rel)
        except HostReadError:
            return default

    def exists(self, rel: str) -> bool:
        found = os.path.exists(self.host_path(rel))
        if found and self.trace is not None:
            self.trace.append(("exists", rel))
        return found

    def is_dir(self, rel: str) -> bool:
        found = os.path.isdir(self.host_path(rel))
        if found and self.trace is not None:
            self.trace.append(("exists", rel))
        return found

    def listdir(self, rel: str) -> list[str]:
        """Sorted entries of a directory; missing directory gives []."""
        try:
            entries = sorted(os.listdir(self.host_path(rel)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise HostReadError(exc.errno, f"{rel}: {exc.strerror or exc}") from exc
        if self.trace is not None:
            self.trace.append(("dir", rel))
        return entries

    def readlink_name(self, rel: str) -> str:
        """Basename of a symlink's target (a bound driver, an iommu group); '' if none."""
        try:
            target = os.readlink(self.host_path(rel))
        except OSError:
            return ""
        if self.trace is not None:
            self.trace.append(("link", rel))
        return os.path.basename(target)

    def resolve(self, rel: str, on_link: Callable[[str, str], None] | None = None) -> str:
        """Resolve symlinks inside the root and return the root-relative result.

        Raises HostReadError for a dangling link, a loop, or a link that climbs
        above the root. `on_link(link, target)` sees each link met on the way
        (snapshot capture archives them).
        """
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
            full = self.host_path(candidate)
            try:
                target = os.readlink(full)
            except FileNotFoundError as exc:
                raise HostReadError(exc.errno, f"{rel}: dangling path at {candidate}") from exc
            except OSError:
                done.append(part)  # not a link
                continue
            hops += 1
            if hops > _MAX_LINKS:
                raise HostReadError(40, f"{rel}: too many levels of symbolic links")
            if on_link is not None:
                on_link(candidate, target)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
        result = "/".join(done)
        if not os.path.lexists(self.host_path(result)):
            raise HostReadError(2, f"{rel}: dangling link to {result}")
        if self.trace is not None:
            self.trace.append(("link", rel))
        return result


@contextmanager
def open_root(spec: str | os.PathLike[str] | None = None) -> Iterator[HostRoot]:
    """Open a root given on the command line: a directory or a snapshot archive.

    An archive is unpacked into a private temporary directory (tarfile's `data`
    filter refuses absolute names, `..` and device files) and removed afterwards.
    """
    path = os.fspath(spec) if spec is not None else "/"
    if os.path.isdir(path):
        yield HostRoot(path)
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"root {path!r} does not exist")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"root {path!r} is neither a directory nor a snapshot archive")
    tmp = tempfile.mkdtemp(prefix="nodeagent-root-")
    try:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        yield HostRoot(tmp, label=path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
