"""Reader for the ``.ttar`` plain-text archives of the Prometheus projects.

prometheus/procfs and prometheus/node_exporter keep their captured ``/proc`` and
``/sys`` trees as ``.ttar`` files because git cannot store the symlinks, odd
modes and pseudo-file names of sysfs portably.  Extracting them in-process lets
discovery tests run against those real trees without shelling out to the bash
``ttar`` script (which needs bash 4 and is slow: it forks ``sed`` per line).

Format, as written by ``ttar -c`` (see tests/fixtures/ttar/README.md)::

    # comment or "# ttar - - -" divider, ignored
    Directory: <path>
    Mode: <octal>
    Path: <path>
    Lines: <n>
    <n content lines>
    Mode: <octal>
    Path: <path>
    SymlinkTo: <target>

Content escapes: a content line ending in an unescaped ``EOF`` has no trailing
newline; ``NULLBYTE`` is a NUL byte; ``\\EOF`` and ``\\NULLBYTE`` are the
literal words.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
from pathlib import Path

__all__ = ["TtarError", "extract_ttar"]

# One left-to-right pass over the content, so an escaped word is consumed before
# the unescaped alternatives can look at it; this is what makes ``\NULLBYTEEOF``
# and ``NULLBYTEEOF`` decode unambiguously without look-behind assertions.  The
# EOF marker only counts at the end of a line, i.e. right before the newline
# that every content line gets on extraction.
_ESCAPES = re.compile(rb"\\NULLBYTE|\\EOF|NULLBYTE|EOF\n")
_REPLACEMENTS = {
    b"\\NULLBYTE": b"NULLBYTE",
    b"\\EOF": b"EOF",
    b"NULLBYTE": b"\x00",
    b"EOF\n": b"",
}


def _unescape(match: re.Match[bytes]) -> bytes:
    return _REPLACEMENTS[match.group(0)]


class TtarError(ValueError):
    """A malformed or unsafe archive.

    A ValueError subclass so callers can treat bad fixtures like any other bad
    input, while ``lineno`` lets a test point at the offending archive line.
    """

    def __init__(self, archive: str, lineno: int, message: str) -> None:
        super().__init__(f"{archive}:{lineno}: {message}")
        self.archive = archive
        self.lineno = lineno


class _Extractor:
    """Single-use state for one extraction.

    Kept as an object rather than nested closures so the bookkeeping that makes
    extraction both fast and safe (which directories exist, which paths are
    symlinks) is explicit.
    """

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive = str(archive)
        self.dest = os.fspath(dest)
        # Directories already known to exist, so parents are created once
        # instead of one makedirs() call per file.
        self.dirs: set[str] = {"."}
        # Symlinks we created: writing "through" one of them could land
        # outside dest, so no later entry may have one as a parent.
        self.symlinks: set[str] = set()
        # Directory modes are applied last (children first), so a read-only
        # directory mode in the archive does not block writing its contents.
        self.dir_modes: list[tuple[str, int]] = []

    def fail(self, lineno: int, message: str) -> TtarError:
        return TtarError(self.archive, lineno, message)

    def rel_path(self, raw: bytes, lineno: int, keyword: str) -> str:
        """Return the normalised member path, refusing anything outside dest."""
        text = os.fsdecode(raw)
        if not text:
            raise self.fail(lineno, f"empty {keyword} path")
        if text.startswith("/"):
            raise self.fail(lineno, f"refusing absolute {keyword} path {text!r}")
        if "\x00" in text:
            raise self.fail(lineno, f"NUL byte in {keyword} path {text!r}")
        # normpath is the slow part of this hot loop; paths written by ttar -c
        # are already normal, so only odd-looking ones pay for it.
        if text.startswith(".") or "/." in text or "//" in text or text.endswith("/"):
            norm = posixpath.normpath(text)
            if norm == ".." or norm.startswith("../"):
                raise self.fail(lineno, f"refusing {keyword} path {text!r}: it climbs out of dest")
        else:
            norm = text
        # Every ancestor of a directory in self.dirs is a real directory, so the
        # walk up usually stops at the first step.
        parent = norm.rpartition("/")[0]
        while parent and parent not in self.dirs:
            if parent in self.symlinks:
                raise self.fail(
                    lineno, f"refusing {keyword} path {text!r}: parent {parent!r} is a symlink"
                )
            parent = parent.rpartition("/")[0]
        return norm

    def abs_path(self, rel: str) -> str:
        return os.path.join(self.dest, rel)

    def ensure_parent(self, rel: str) -> None:
        parent = posixpath.dirname(rel) or "."
        if parent not in self.dirs:
            os.makedirs(self.abs_path(parent), exist_ok=True)
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)

    def clear(self, rel: str) -> None:
        """Remove what an earlier entry (or an earlier run) left at ``rel``.

        Mirrors upstream ttar, which replaces existing members, so a fixture can
        be re-extracted over an old tree.
        """
        path = self.abs_path(rel)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)  # refuses non-empty directories, like upstream
            self.dirs.discard(rel)
        elif os.path.lexists(path):
            os.unlink(path)

    def write_file(self, rel: str, content: bytes, mode: int | None) -> None:
        self.ensure_parent(rel)
        self.symlinks.discard(rel)
        path = self.abs_path(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            self.clear(rel)
            fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def make_symlink(self, rel: str, target: str) -> None:
        self.ensure_parent(rel)
        path = self.abs_path(rel)
        try:
            os.symlink(target, path)
        except FileExistsError:
            self.clear(rel)
            os.symlink(target, path)
        self.symlinks.add(rel)

    def make_dir(self, rel: str) -> None:
        if rel not in self.dirs:
            path = self.abs_path(rel)
            if os.path.islink(path):
                os.unlink(path)
                self.symlinks.discard(rel)
            os.makedirs(path, exist_ok=True)
            parent = rel
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)

    def parse_mode(self, value: bytes, lineno: int) -> int:
        try:
            mode = int(value, 8)
        except ValueError:
            raise self.fail(lineno, f"bad Mode {value!r}: not an octal number") from None
        if not 0 <= mode <= 0o7777:
            raise self.fail(lineno, f"bad Mode {value!r}: out of range")
        return mode

    def run(self, data: bytes) -> None:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the newline ending the last line opens no new line
        count = len(lines)
        os.makedirs(self.dest, exist_ok=True)
        i = 0
        while i < count:
            line = lines[i]
            lineno = i + 1
            i += 1
            if line.startswith(b"#"):
                continue
            keyword, sep, value = line.partition(b": ")
            if not sep:
                raise self.fail(lineno, f"expected 'Keyword: value', got {line[:80]!r}")
            if keyword == b"Directory":
                rel = self.rel_path(value, lineno, "Directory")
                self.make_dir(rel)
                i, mode = self.optional_mode(lines, i)
                if mode is not None:
                    self.dir_modes.append((rel, mode))
            elif keyword == b"Path":
                rel = self.rel_path(value, lineno, "Path")
                i = self.file_or_symlink(lines, i, rel, lineno)
            elif keyword == b"Mode":
                raise self.fail(lineno, "Mode: without a preceding Directory: or file entry")
            else:
                raise self.fail(lineno, f"unknown keyword {keyword.decode(errors='replace')!r}")
        for rel, mode in reversed(self.dir_modes):
            os.chmod(self.abs_path(rel), mode)

    def optional_mode(self, lines: list[bytes], i: int) -> tuple[int, int | None]:
        """Consume a ``Mode:`` line at ``lines[i]`` if there is one.

        Mode is optional because upstream only writes it for files and
        directories, and hand-written archives in the wild sometimes omit it.
        """
        if i < len(lines) and lines[i].startswith(b"Mode: "):
            return i + 1, self.parse_mode(lines[i][6:], i + 1)
        return i, None

    def file_or_symlink(self, lines: list[bytes], i: int, rel: str, path_lineno: int) -> int:
        # Comments may sit between Path: and its body in hand-edited archives.
        while i < len(lines) and lines[i].startswith(b"#"):
            i += 1
        if i >= len(lines):
            raise self.fail(path_lineno, f"Path {rel!r} has no Lines: or SymlinkTo: line")
        line = lines[i]
        lineno = i + 1
        i += 1
        if line.startswith(b"SymlinkTo: "):
            target = os.fsdecode(line[11:])
            if not target or "\x00" in target:
                raise self.fail(lineno, f"bad SymlinkTo target for {rel!r}")
            if rel == ".":
                raise self.fail(path_lineno, "refusing to replace dest with a symlink")
            if i < len(lines) and lines[i].startswith(b"Mode: "):
                raise self.fail(i + 1, f"Mode: after SymlinkTo: for {rel!r}")
            self.make_symlink(rel, target)
            return i
        if not line.startswith(b"Lines: "):
            raise self.fail(lineno, f"expected Lines: or SymlinkTo: for {rel!r}, got {line[:80]!r}")
        raw_count = line[7:]
        if not raw_count.isdigit():
            raise self.fail(lineno, f"bad Lines count {raw_count!r} for {rel!r}")
        n = int(raw_count)
        end = i + n
        if end > len(lines):
            raise self.fail(
                lineno,
                f"Lines: {n} for {rel!r} but the archive ends after {len(lines) - i} "
                "content line(s)",
            )
        if rel == ".":
            raise self.fail(path_lineno, "refusing to replace dest with a file")
        if n:
            content = b"\n".join(lines[i:end]) + b"\n"
            if b"EOF" in content or b"NULLBYTE" in content:
                content = _ESCAPES.sub(_unescape, content)
        else:
            content = b""
        i, mode = self.optional_mode(lines, end)
        self.write_file(rel, content, mode)
        return i


def extract_ttar(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract ``archive`` below ``dest`` (created if missing), byte-exact.

    The archive is read as bytes because sysfs binaries (PCI ``config``,
    ``vpd``, EDID) are stored raw and text decoding would mangle them.  Symlink
    targets are written as stored, so relative sysfs links keep resolving
    inside the tree and absolute ones (``/proc/<pid>/exe``) stay dangling as
    they are upstream.

    Raises TtarError (a ValueError) naming the line for malformed archives and
    for members that would land outside ``dest``: absolute paths, ``..``
    escapes and writes through a symlink created earlier.  A failed extraction
    may leave a partial tree behind.
    """
    archive_path = Path(archive)
    _Extractor(archive_path, Path(dest)).run(archive_path.read_bytes())
