from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from nodeagent.host import HostReadError, HostRoot, RootError, open_root


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "sys/devices/pci0000:00/0000:00:01.0").mkdir(parents=True)
    (tmp_path / "sys/devices/pci0000:00/0000:00:01.0/vendor").write_text("0x10de\n")
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(
        "../../../devices/pci0000:00/0000:00:01.0", tmp_path / "sys/bus/pci/devices/0000:00:01.0"
    )
    return tmp_path


def test_resolves_relative_links_inside_the_root(tmp_path: Path) -> None:
    root = HostRoot(_tree(tmp_path))
    assert root.resolve("sys/bus/pci/devices/0000:00:01.0") == "sys/devices/pci0000:00/0000:00:01.0"
    assert root.read_attr("sys/bus/pci/devices/0000:00:01.0/vendor") == "0x10de"


def test_absolute_links_are_rerooted_not_followed_out(tmp_path: Path) -> None:
    _tree(tmp_path)
    os.symlink("/sys/devices/pci0000:00", tmp_path / "sys/abs")
    root = HostRoot(tmp_path)
    assert root.resolve("sys/abs/0000:00:01.0") == "sys/devices/pci0000:00/0000:00:01.0"


def test_dangling_and_looping_links_raise(tmp_path: Path) -> None:
    root = HostRoot(_tree(tmp_path))
    os.symlink("../nowhere", tmp_path / "sys/dangling")
    os.symlink("loop", tmp_path / "sys/loop")
    with pytest.raises(HostReadError, match="dangling"):
        root.resolve("sys/dangling")
    with pytest.raises(HostReadError, match="symbolic links"):
        root.resolve("sys/loop")
    assert root.attr("sys/dangling", "default") == "default"
    assert root.listdir("sys/missing") == []


def test_reads_are_bounded_and_decoded_leniently(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\xff\xfe" + b"x" * (2 << 20))
    root = HostRoot(tmp_path)
    assert len(root.read_bytes("big")) == 1 << 20
    assert root.read_text("big").startswith("\ufffd")


def test_trace_records_every_access(tmp_path: Path) -> None:
    root = HostRoot(_tree(tmp_path))
    root.trace = []
    root.listdir("sys/bus/pci/devices")
    root.read_attr("sys/bus/pci/devices/0000:00:01.0/vendor")
    assert root.trace == [
        ("dir", "sys/bus/pci/devices"),
        ("file", "sys/bus/pci/devices/0000:00:01.0/vendor"),
    ]


def test_open_root_accepts_directories_and_archives(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    archive = tmp_path / "snap.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "sys", arcname="sys")
    with open_root(tree) as root:
        assert root.path == str(tree)
    with open_root(archive) as root:
        assert root.read_attr("sys/bus/pci/devices/0000:00:01.0/vendor") == "0x10de"
        unpacked = root.path
    assert not os.path.exists(unpacked), "the unpacked archive must be removed"
    (tmp_path / "junk").write_text("not an archive")
    with (
        pytest.raises(ValueError, match="neither a directory nor a snapshot"),
        open_root(tmp_path / "junk"),
    ):
        pass
    with pytest.raises(FileNotFoundError), open_root(tmp_path / "absent"):
        pass


def test_open_root_refuses_archive_members_escaping_the_root(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(archive, "w") as tar:
        tar.add(payload, arcname="../escaped")
    with (
        pytest.raises(RootError, match=r"refusing the archive: '\.\./escaped'"),
        open_root(archive),
    ):
        pass
    assert not (tmp_path.parent / "escaped").exists()
