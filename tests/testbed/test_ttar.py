"""Tests for the ttar reader, against the real Prometheus fixture archives."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from testbed.ttar import TtarError, extract_ttar

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ttar"
PROCFS = FIXTURES / "procfs_fixtures.ttar"
NE_SYS = FIXTURES / "node_exporter_sys.ttar"
NE_UDEV = FIXTURES / "node_exporter_udev.ttar"


@pytest.fixture(scope="module")
def procfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("procfs")
    extract_ttar(PROCFS, dest)
    return dest / "fixtures"


@pytest.fixture(scope="module")
def ne_sys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("ne_sys")
    extract_ttar(NE_SYS, dest)
    return dest / "sys"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- reference decoder -------------------------------------------------------


def reference_entries(data: bytes) -> dict[str, tuple[str, bytes | str, int | None]]:
    """Decode an archive line by line the way upstream ttar's Python filter does.

    Deliberately naive and independent of the implementation under test, so
    the comparison catches tokenisation mistakes in the fast path.
    """
    lines = data.split(b"\n")[:-1]
    out: dict[str, tuple[str, bytes | str, int | None]] = {}
    path = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith(b"#"):
            continue
        key, _, value = line.partition(b": ")
        if key == b"Directory":
            path = value.decode()
            out[path] = ("dir", b"", None)
        elif key == b"Path":
            path = value.decode()
        elif key == b"SymlinkTo":
            out[path] = ("link", value.decode(), None)
        elif key == b"Mode":
            kind, body, _ = out[path]
            out[path] = (kind, body, int(value, 8))
        elif key == b"Lines":
            body = b""
            for raw in lines[i : i + int(value)]:
                no_newline = re.search(rb"[^\\]EOF", raw) is not None
                text = re.sub(rb"(?<!\\)NULLBYTE", b"\0", raw).replace(b"\\NULLBYTE", b"NULLBYTE")
                text = re.sub(rb"([^\\])EOF", rb"\1", text).replace(b"\\EOF", b"EOF")
                body += text if no_newline else text + b"\n"
            i += int(value)
            out[path] = ("file", body, None)
    return out


@pytest.mark.parametrize(
    ("archive", "top"),
    [(PROCFS, ["fixtures"]), (NE_SYS, ["sys"]), (NE_UDEV, ["udev"])],
    ids=["procfs", "node_exporter_sys", "node_exporter_udev"],
)
def test_extracts_every_entry_like_upstream(archive: Path, top: list[str], tmp_path: Path) -> None:
    extract_ttar(archive, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == top

    expected = reference_entries(archive.read_bytes())
    for rel, (kind, body, mode) in expected.items():
        path = tmp_path / rel
        if kind == "link":
            assert path.is_symlink(), rel
            assert os.readlink(path) == body, rel
        elif kind == "dir":
            assert path.is_dir() and not path.is_symlink(), rel
        else:
            assert path.is_file() and not path.is_symlink(), rel
            assert path.read_bytes() == body, rel
        if mode is not None:
            assert mode_of(path) == mode, rel
    extracted = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert extracted == set(expected)


def test_re_extracting_over_an_existing_tree_is_idempotent(tmp_path: Path) -> None:
    extract_ttar(NE_UDEV, tmp_path)
    (tmp_path / "udev" / "data" / "b259:0").write_bytes(b"stale")
    extract_ttar(NE_UDEV, tmp_path)
    assert (
        b"ID_MODEL=SAMSUNG EHFTF55LURSY-000Y9\n"
        in (tmp_path / "udev" / "data" / "b259:0").read_bytes()
    )


# --- procfs_fixtures.ttar ----------------------------------------------------


def test_procfs_layout(procfs: Path) -> None:
    assert (procfs / "proc" / "cpuinfo").is_file()
    assert (procfs / "sys" / "class").is_dir()


def test_procfs_ib_fw_ver(procfs: Path) -> None:
    ib = procfs / "sys" / "class" / "infiniband"
    assert (ib / "mlx5_0" / "fw_ver").read_bytes() == b"14.28.2006\n"
    assert (ib / "mlx5_0" / "hca_type").read_bytes() == b"MT4118\n"
    assert (ib / "mlx5_0" / "ports" / "1" / "rate").read_bytes() == b"25 Gb/sec (1X EDR)\n"
    assert sorted(p.name for p in ib.iterdir()) == ["hfi1_0", "mlx4_0", "mlx5_0"]


def test_procfs_empty_file(procfs: Path) -> None:
    # "Lines: 0" entries.
    assert (procfs / "proc" / "26232" / "cmdline").read_bytes() == b""
    assert (procfs / "proc" / "symlinktargets" / "abc").read_bytes() == b""


def test_procfs_eof_marker_means_no_trailing_newline(procfs: Path) -> None:
    assert (procfs / "proc" / "26231" / "wchan").read_bytes() == b"poll_schedule_timeout"


def test_procfs_nullbytes(procfs: Path) -> None:
    assert (procfs / "proc" / "26231" / "cmdline").read_bytes() == b"vim\0test.go\0+10\0"
    environ = (procfs / "proc" / "26231" / "environ").read_bytes()
    assert environ.startswith(b"PATH=/go/bin:")
    assert environ.endswith(b"\0HOME=/root\0")
    assert environ.count(b"\0") == 6


def test_procfs_binary_pci_config_keeps_cr_and_nul_bytes(procfs: Path) -> None:
    config = procfs / "sys" / "devices" / "pci0000:00" / "0000:00:03.0" / "config"
    data = config.read_bytes()
    assert len(data) == 4168
    assert data.count(b"\r") == 2
    assert data.count(b"\0") == 3911
    bridge = procfs / "sys" / "devices" / "pci0000:00" / "0000:00:02.1" / "config"
    assert bridge.read_bytes()[:4] == b"\x22\x10\x34\x16"  # 1022:1634, little endian


def test_procfs_symlinks_kept_as_written(procfs: Path) -> None:
    pid = procfs / "proc" / "26231"
    assert os.readlink(pid / "fd" / "0") == "../../symlinktargets/abc"
    assert (pid / "fd" / "0").resolve() == (procfs / "proc" / "symlinktargets" / "abc").resolve()
    assert os.readlink(pid / "exe") == "/usr/bin/vim"
    assert os.readlink(procfs / "proc" / "self") == "26231"
    nvme = procfs / "sys" / "bus" / "pci" / "devices" / "0000:01:00.0"
    assert os.readlink(nvme) == "../../../devices/pci0000:00/0000:00:02.1/0000:01:00.0"
    assert (nvme / "class").read_bytes() == b"0x010802\n"


def test_procfs_modes(procfs: Path) -> None:
    sys = procfs / "sys"
    assert mode_of(sys / "class" / "thermal" / "cooling_device2") == 0o750
    assert mode_of(sys / "bus" / "pci" / "devices") == 0o775
    assert mode_of(sys / "class" / "dmi" / "id" / "board_serial") == 0o400
    assert mode_of(sys / "class" / "infiniband" / "mlx5_0" / "fw_ver") == 0o644


# --- node_exporter_sys.ttar --------------------------------------------------


def test_ne_sys_dmi(ne_sys: Path) -> None:
    dmi = ne_sys / "class" / "dmi" / "id"
    assert (dmi / "product_name").read_bytes() == b"PowerEdge R6515\n"
    assert (dmi / "sys_vendor").read_bytes() == b"Dell Inc.\n"
    # Stored mangled upstream (U+FFFD replacement characters); kept byte-exact.
    assert (dmi / "product_version").read_bytes() == b"\xef\xbf\xbd\x1c[\xef\xbf\xbd\n"


def test_ne_sys_numa_cpulists(ne_sys: Path) -> None:
    node = ne_sys / "devices" / "system" / "node"
    assert (node / "node0" / "cpulist").read_bytes() == b"0-1\n"
    assert (node / "node1" / "cpulist").read_bytes() == b"2-3\n"
    assert (node / "node2" / "cpulist").read_bytes() == b"\n"  # memory-only node


def test_ne_sys_nvme_model_keeps_padding(ne_sys: Path) -> None:
    ctrl = ne_sys / "devices" / "pci0000:00" / "0000:00:02.1" / "0000:01:00.0" / "nvme" / "nvme0"
    assert (ctrl / "model").read_bytes() == b"CT2000P3SSD8" + b" " * 28 + b"\n"
    assert (ctrl / "serial").read_bytes() == b"2328E6EDD8A7" + b" " * 8 + b"\n"
    assert (ctrl / "nvme0n1" / "size").read_bytes() == b"3907029168\n"
    assert os.readlink(ctrl / "device") == "../../../0000:01:00.0"


def test_ne_sys_i350_below_amd_root_port(ne_sys: Path) -> None:
    nic = ne_sys / "bus" / "pci" / "devices" / "0000:45:00.0"
    assert nic.resolve().parent.name == "0000:40:01.3"
    assert (nic / "vendor").read_bytes() == b"0x8086\n"
    assert (nic / "device").read_bytes() == b"0x1521\n"
    assert (nic / "local_cpulist").read_bytes() == b"0-63,128-191\n"
    assert (nic / "net" / "ens10f0" / "address").read_bytes() == b"68:05:ca:f0:cb:12\n"


def test_ne_udev_nvme_record(tmp_path: Path) -> None:
    extract_ttar(NE_UDEV, tmp_path)
    record = (tmp_path / "udev" / "data" / "b259:0").read_text()
    assert "E:ID_PATH=pci-0000:02:00.0-nvme-1\n" in record
    assert "S:disk/by-id/nvme-SAMSUNG_EHFTF55LURSY-000Y9_S252B6CU1HG3M1\n" in record


# --- hand-written archives ---------------------------------------------------


def write_archive(tmp_path: Path, body: bytes) -> Path:
    archive = tmp_path / "test.ttar"
    archive.write_bytes(body)
    return archive


def test_escapes(tmp_path: Path) -> None:
    archive = write_archive(
        tmp_path,
        b"# header\n"
        b"Directory: d\nMode: 700\n"
        b"Path: d/f\nLines: 4\n"
        b"literal \\EOF and \\NULLBYTE\n"
        b"\\EOF\n"
        b"NULLBYTENULLBYTE\r\xff\n"
        b"tail\\NULLBYTEEOF\n"
        b"Mode: 600\n"
        b"# ttar - - -\n"
        b"Path: d/l\nSymlinkTo: f\n",
    )
    out = tmp_path / "out"
    extract_ttar(archive, out)
    assert (out / "d" / "f").read_bytes() == (
        b"literal EOF and NULLBYTE\nEOF\n\0\0\r\xff\ntailNULLBYTE"
    )
    assert mode_of(out / "d") == 0o700
    assert mode_of(out / "d" / "f") == 0o600
    assert (out / "d" / "l").read_bytes() == (out / "d" / "f").read_bytes()


def test_parent_directories_created_without_directory_entries(tmp_path: Path) -> None:
    archive = write_archive(tmp_path, b"Path: a/b/c\nLines: 1\nx\n")
    extract_ttar(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b" / "c").read_bytes() == b"x\n"


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b"Path: f\nLines: 3\none\ntwo\n", r"test\.ttar:2: Lines: 3 for 'f' but .* ends after 2"),
        (b"Path: f\nLines: x\n", r":2: bad Lines count b'x' for 'f'"),
        (b"Path: f\nLines: 0\nMode: 644\nSize: 3\n", r":4: unknown keyword 'Size'"),
        (b"Directory: d\nbogus line\n", r":2: expected 'Keyword: value'"),
        (b"Path: /etc/passwd\nLines: 0\n", r":1: refusing absolute Path path '/etc/passwd'"),
        (b"Directory: /tmp/x\n", r":1: refusing absolute Directory path '/tmp/x'"),
        (b"Path: ../evil\nLines: 0\n", r":1: refusing Path path '../evil': it climbs out"),
        (b"Directory: a/../../evil\n", r":1: refusing Directory path 'a/../../evil'"),
        (b"Path: l\nSymlinkTo: /etc\nPath: l/x\nLines: 0\n", r":3: .*'l/x'.*'l' is a symlink"),
        (b"Mode: 644\n", r":1: Mode: without a preceding"),
        (b"Path: f\nLines: 0\nMode: 9z\n", r":3: bad Mode b'9z'"),
        (b"Path: f\nPath: g\n", r":2: expected Lines: or SymlinkTo: for 'f'"),
        (b"Path: f\n", r":1: Path 'f' has no Lines: or SymlinkTo: line"),
        (b"Path: l\nSymlinkTo: f\nMode: 644\n", r":3: Mode: after SymlinkTo: for 'l'"),
    ],
    ids=[
        "truncated-lines",
        "bad-lines-count",
        "unknown-keyword",
        "not-a-keyword-line",
        "absolute-path",
        "absolute-directory",
        "dotdot-path",
        "dotdot-directory",
        "write-through-symlink",
        "orphan-mode",
        "bad-mode",
        "path-without-body",
        "path-at-end",
        "mode-on-symlink",
    ],
)
def test_malformed_or_unsafe_archives_raise(tmp_path: Path, body: bytes, pattern: str) -> None:
    archive = write_archive(tmp_path, body)
    with pytest.raises(ValueError, match=pattern) as info:
        extract_ttar(archive, tmp_path / "out")
    assert isinstance(info.value, TtarError)
    assert not (tmp_path / "evil").exists()


def test_error_carries_line_number(tmp_path: Path) -> None:
    archive = write_archive(tmp_path, b"# c\nDirectory: d\nMode: 755\nFoo: bar\n")
    with pytest.raises(TtarError) as info:
        extract_ttar(archive, tmp_path / "out")
    assert info.value.lineno == 4


# --- round trip against an encoder written from the create side of ttar -------


def encode(name: str, content: bytes) -> bytes:
    """Encode one file the way ``ttar -c`` does (EOF, NULLBYTE, NUL, in that order)."""
    escaped = content.replace(b"EOF", b"\\EOF").replace(b"NULLBYTE", b"\\NULLBYTE")
    escaped = escaped.replace(b"\0", b"NULLBYTE")
    lines = escaped.count(b"\n")
    if content and not content.endswith(b"\n"):
        escaped += b"EOF\n"
        lines += 1
    return f"Path: {name}\nLines: {lines}\n".encode() + escaped + b"Mode: 644\n"


TOKENS = [b"EOF", b"NULLBYTE", b"\0", b"\n", b"\\", b"E", b"OF", b"NULLBYT", b"a", b"\r", b"\xff"]


@given(st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    # The format itself cannot represent these (upstream has the same ambiguity):
    # a backslash before a NUL reads as an escaped NULLBYTE, and a last line
    # ending in "\" or "NULLBYT" fuses with the EOF marker.
    assume(b"\\\0" not in content)
    if content and not content.endswith(b"\n"):
        assume(not content.endswith((b"\\", b"NULLBYT")))
    tmp_path = tmp_path_factory.mktemp("rt")
    archive = write_archive(tmp_path, encode("f", content))
    extract_ttar(archive, tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == content
