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
import zlib
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


MACHINE_DIRS = ("sys", "proc")


class RootError(ValueError):
    """A root given on the command line that cannot be read as a machine: the message is
    the one line the user reads."""


@contextmanager
def open_root(spec: str | os.PathLike[str] | None = None) -> Iterator[HostRoot]:
    """Open a root given on the command line: a directory or a snapshot archive.

    An archive is unpacked into a private temporary directory (tarfile's `data`
    filter refuses absolute names, `..` and device files) and removed afterwards. A root
    with neither sys/ nor proc/ (an empty directory, a wrong path, an empty archive) is
    refused: every collector would fail and the result would read as a machine with
    nothing in it. A truncated or damaged archive is refused with what is wrong.
    """
    path = os.fspath(spec) if spec is not None else "/"
    if os.path.isdir(path):
        _check_machine(path, path)
        yield HostRoot(path)
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"root {path!r} does not exist")
    try:
        is_archive = tarfile.is_tarfile(path)
    except (EOFError, zlib.error) as exc:  # a gzip stream cut inside its first block
        raise _damaged(path, exc) from None
    if not is_archive:
        raise RootError(f"root {path!r} is neither a directory nor a snapshot archive")
    tmp = tempfile.mkdtemp(prefix="nodeagent-root-")
    try:
        _unpack(path, tmp)
        _check_machine(tmp, path)
        yield HostRoot(tmp, label=path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack(archive: str, into: str) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise RootError(f"root {archive!r}: refusing the archive: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _damaged(archive, exc) from None


def _damaged(archive: str, exc: Exception) -> RootError:
    """gzip's EOFError says only that a stream ended early, not which file or what to do."""
    return RootError(
        f"root {archive!r}: the snapshot archive is truncated or damaged ({exc}); copy it again"
    )


def _check_machine(path: str, label: str) -> None:
    if os.path.abspath(path) == "/":
        return
    if not any(os.path.isdir(os.path.join(path, d)) for d in MACHINE_DIRS):
        raise RootError(
            f"root {label!r} has neither sys/ nor proc/: not a machine's root or snapshot"
        )
