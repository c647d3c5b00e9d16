"""The `nodeagent discover` and `snapshot capture` commands, run as the user runs them."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.snapshot import ALLOWED_PREFIXES
from testbed.cli import nodeagent

CONTRACT_KEYS = {
    "system",
    "cpu",
    "memory",
    "numa_nodes",
    "gpus",
    "nvswitches",
    "rdma_devices",
    "nvme_controllers",
    "network_interfaces",
    "software",
}


def test_discover_json_is_the_contract(machine_root: Callable[..., Path]) -> None:
    proc = nodeagent("discover", "--root", str(machine_root("dgx-h100")), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= CONTRACT_KEYS
    gpu = data["gpus"][0]
    for key in (
        "index",
        "vendor",
        "model",
        "pci_device_id",
        "memory_bytes",
        "uuid",
        "serial",
        "pci_address",
        "numa_node",
        "pcie",
        "health",
    ):
        assert key in gpu, key
    assert gpu["pci_address"] == "0000:1b:00.0" and gpu["numa_node"] == 0
    port = data["rdma_devices"][0]["ports"][0]
    assert {"port", "link_layer", "state", "phys_state", "rate_gbps"} <= set(port)
    assert {"name", "model", "serial", "firmware", "namespaces"} <= set(data["nvme_controllers"][0])
    # it parses back into the message: the JSON is the protobuf mapping, nothing ad hoc
    json_format.Parse(proc.stdout, pb.HardwareInventory())


def test_discover_yaml_table_topo(machine_root: Callable[..., Path]) -> None:
    root = str(machine_root("rtx-pro-6000"))
    yaml_out = nodeagent("discover", "--root", root, "-o", "yaml")
    assert yaml_out.returncode == 0 and "gpus:" in yaml_out.stdout
    table = nodeagent("discover", "--root", root)
    assert "NVIDIA RTX PRO 6000 Blackwell Server Edition" in table.stdout
    assert "PCIe link x8 of x16" in table.stdout
    topo = nodeagent("discover", "--root", root, "-o", "topo")
    assert topo.stdout.startswith("\tGPU0\tGPU1") and "NIC Legend:" in topo.stdout


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = nodeagent("discover", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"nodeagent: error: root '{tmp_path / 'nope'}' does not exist"
    ]
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    junk = nodeagent("discover", "--root", str(tmp_path / "junk.tar.gz"))
    assert junk.returncode == 1 and len(junk.stderr.strip().splitlines()) == 1
    usage = nodeagent("discover", "-o", "xml")
    assert usage.returncode == 2
    debug = nodeagent("--debug", "discover", "--root", str(tmp_path / "nope"))
    assert "Traceback" in debug.stderr


def test_an_empty_root_is_an_error(tmp_path: Path) -> None:
    """Every collector failing on an empty directory used to read as a machine with nothing
    in it (exit 0, an empty table); an empty archive is the same mistake."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = nodeagent("discover", "--root", str(empty))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"nodeagent: error: root '{empty}' has neither sys/ nor proc/: "
        "not a machine's root or snapshot"
    ]
    archive = tmp_path / "empty.tar.gz"
    tarfile.open(archive, "w:gz").close()
    proc = nodeagent("discover", "--root", str(archive), "-o", "json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "has neither sys/ nor proc/" in proc.stderr


def test_a_broken_root_reports_collector_errors_without_crashing(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    proc = nodeagent("discover", "--root", str(tmp_path), "-o", "json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    failed = {c["name"] for c in data["collectors"] if not c["success"]}
    assert {"system", "cpu", "memory"} <= failed
    assert "warning: collectors with errors" in proc.stderr


def test_a_truncated_snapshot_is_a_clear_error(
    machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    archive = tmp_path / "node.tar.gz"
    made = nodeagent(
        "snapshot", "capture", "--root", str(machine_root("cpu-node")), "-f", str(archive)
    )
    assert made.returncode == 0, made.stderr
    data = archive.read_bytes()
    for cut in (20, len(data) // 2):  # in gzip's first block, and halfway
        cut_archive = tmp_path / f"cut-{cut}.tar.gz"
        cut_archive.write_bytes(data[:cut])
        proc = nodeagent("discover", "--root", str(cut_archive))
        assert proc.returncode == 1 and proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(
            f"nodeagent: error: root '{cut_archive}': the snapshot archive is truncated or "
            "damaged ("
        ), line
        assert line.endswith("); copy it again") and "EOFError" not in line


def test_snapshot_capture_writes_to_file_and_o_is_a_format(
    machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    """-o is always a format: the archive is --file, and a path after -o is a usage error."""
    root = str(machine_root("cpu-node"))
    old = nodeagent("snapshot", "capture", "--root", root, "-o", str(tmp_path / "a.tar.gz"))
    assert old.returncode == 2 and not (tmp_path / "a.tar.gz").exists()
    nowhere = tmp_path / "absent" / "a.tar.gz"
    proc = nodeagent("snapshot", "capture", "--root", root, "--file", str(nowhere))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"nodeagent: error: cannot write {nowhere}: No such file or directory"
    ]


def test_a_host_without_dmi_prints_only_what_is_known(
    machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    vm = tmp_path / "vm"
    shutil.copytree(machine_root("cpu-node"), vm, symlinks=True)
    shutil.rmtree(vm / "sys" / "firmware" / "efi")  # a BIOS-booted VM ...
    shutil.rmtree(vm / "sys" / "class" / "dmi")  # ... whose firmware publishes no DMI
    proc = nodeagent("discover", "--root", str(vm))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Host      cpu-node-01   (bios boot)"


def test_snapshot_round_trip(machine_root: Callable[..., Path], tmp_path: Path) -> None:
    root = machine_root("dgx-h100")
    archive = tmp_path / "dgx.tar.gz"
    proc = nodeagent("snapshot", "capture", "--root", str(root), "-f", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert "probes: nvml" in proc.stdout
    assert archive.stat().st_size < 5 * 1024 * 1024
    direct = nodeagent("discover", "--root", str(root), "-o", "json")
    replayed = nodeagent("discover", "--root", str(archive), "-o", "json")
    a, b = json.loads(direct.stdout), json.loads(replayed.stdout)
    for data in (a, b):
        data.pop("source")
        data.pop("collectors")
    assert a == b, "the snapshot must reproduce the inventory exactly"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert ".nodeagent/probes/nvml.json" in names
        for member in tar.getmembers():
            assert any(
                member.name == p.rstrip("/") or member.name.startswith(p) for p in ALLOWED_PREFIXES
            ), member.name
            assert not member.name.startswith("/") and ".." not in member.name.split("/")
            if member.issym():
                assert not member.linkname.startswith("/"), member.name


def test_snapshot_holds_only_what_discovery_reads(
    machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    root = machine_root("cpu-node")
    secret = root / "etc" / "nodeagent-test-secret.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    try:
        archive = tmp_path / "cpu.tar.gz"
        assert (
            nodeagent("snapshot", "capture", "--root", str(root), "-f", str(archive)).returncode
            == 0
        )
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            blob = b"".join(
                tar.extractfile(m).read()
                for m in tar.getmembers()
                if m.isfile()  # type: ignore[union-attr]
            )
        allowed_etc = ("etc/os-release", "etc/hostname")
        assert not any("secret" in n for n in names)
        assert not any(n.startswith("etc/") and n not in allowed_etc for n in names)
        assert b"PRIVATE KEY" not in blob
    finally:
        secret.unlink()
