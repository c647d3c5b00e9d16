"""Strange machines: garbage, empty, missing or unreadable sysfs for every collector.

Two layers. Table-driven cases damage real files in a copy of the DGX H100 root
(dangling links, directories where files should be, garbage text) and check that
the owning collector reports it and the rest still report. A hypothesis fuzz
then feeds arbitrary bytes or errno values (EINVAL, EIO, EACCES: kernel errors a
regular file cannot produce) for any file discovery reads, and checks that
discovery never raises and that collectors which never read that file give
exactly their normal answer.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import COLLECTORS, discover
from nodeagent.host import HostReadError, HostRoot

GPU0 = "sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:02.0/0000:19:00.0/0000:1a:00.0/0000:1b:00.0"  # noqa: E501
IB0 = "sys/class/infiniband/mlx5_0"


def _garbage(text: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        path.write_text(text)

    return apply


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _dangle(path: Path) -> None:
    path.unlink()
    os.symlink("../../../devices/nowhere", path)


def _dir_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


# (owning collector, path in the DGX root, damage, text expected in that collector's errors)
CASES = [
    ("system", "sys/devices/virtual/dmi/id", _remove, "sys/class/dmi/id"),
    ("cpu", "sys/devices/system/cpu/online", _garbage("0-zz\n"), "devices/system/cpu/online"),
    ("cpu", "proc/cpuinfo", _dir_instead, "proc/cpuinfo"),
    ("memory", "proc/meminfo", _garbage(""), "MemTotal"),
    ("numa", "sys/devices/system/node/node0/distance", _garbage("10 x\n"), "node0/distance"),
    ("pci", "sys/bus/pci/devices/0000:1b:00.0", _dangle, "0000:1b:00.0"),
    ("gpu", f"{GPU0}/numa_node", _garbage("garbage\n"), "0000:1b:00.0"),
    ("nvswitch", "sys/bus/pci/devices/0000:05:00.0/numa_node", _garbage("?\n"), "0000:05:00.0"),
    ("rdma", f"{IB0}/ports/1/rate", _garbage("fast\n"), "ports/1"),
    ("rdma", f"{IB0}/ports/1/state", _remove, "ports/1"),
    ("rdma", f"{IB0}/node_guid", _garbage("zz:zz\n"), "node_guid"),
    ("nvme", "sys/class/nvme-subsystem/nvme-subsys0/nvme0n1/size", _garbage("big\n"), "size"),
    ("network", "sys/class/net/ibp24s0/mtu", _garbage("\x00\xff\n"), "ibp24s0/mtu"),
    ("software", "proc/driver/nvidia/version", _garbage("NVRM ???\n"), "nvidia/version"),
    ("probe:nvml", ".nodeagent/probes/nvml.json", _garbage("{not json"), "nvml.json"),
]


@pytest.fixture
def dgx_copy(machine_root: Callable[..., Path], scratch: Path) -> Path:
    dest = scratch / "root"
    shutil.copytree(machine_root("dgx-h100"), dest, symlinks=True)
    return dest


@pytest.mark.parametrize(
    ("owner", "rel", "damage", "needle"),
    CASES,
    ids=[f"{c[0]}:{c[1].rsplit('/', 2)[-2:]}" for c in CASES],
)
def test_damaged_file_is_reported_by_its_collector(
    dgx_copy: Path, owner: str, rel: str, damage: Callable[[Path], None], needle: str
) -> None:
    damage(dgx_copy / rel)
    inv = discover(HostRoot(dgx_copy))
    results = {c.name: c for c in inv.collectors}
    assert set(COLLECTORS) <= set(results)
    assert not results[owner].success, f"{owner} should report {rel}"
    assert any(needle in e for e in results[owner].errors), list(results[owner].errors)
    assert len(results[owner].errors[0].splitlines()) == 1, "one clear line"
    # NVML still knows a GPU whose sysfs entry is gone, and says so: that is right too
    allowed = {owner, "affinity"} | ({"probe:nvml"} if owner == "pci" else set())
    others = [n for n, c in results.items() if not c.success and n not in allowed]
    assert not others, f"only {owner} should fail, also failed: {others}"
    json.loads(json_format.MessageToJson(inv))
    # the rest still report: the machine is still a DGX with its GPUs and rails
    assert len(inv.rdma_devices) == 12 and len(inv.nvme_controllers) == 10
    assert len(inv.gpus) == (7 if owner == "pci" else 8)


# --- fuzz -------------------------------------------------------------------------------------

# Which fields each collector (with what it depends on) fills, and which it alone reads.
FIELD_SOURCES: dict[str, set[str]] = {
    "system": {"system"},
    "cpu": {"cpu"},
    "memory": {"memory"},
    "numa_nodes": {"numa"},
    "nvswitches": {"nvswitch"},
    "nvme_controllers": {"nvme"},
    "network_interfaces": {"network"},
    "rdma_devices": {"rdma"},
    "gpus": {"gpu", "rdma"},
    "software": {"software", "gpu", "rdma"},
}
ERRNOS = [errno.EINVAL, errno.EIO, errno.EACCES, errno.ENOENT, errno.EOPNOTSUPP]
FUZZ_STATS = {"inputs": 0}


class FaultyRoot(HostRoot):
    """A root where one path misbehaves: returns given bytes or fails with an errno."""

    def __init__(self, path: Path, target: str, fault: bytes | int) -> None:
        super().__init__(path)
        self.target, self.fault = target, fault

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes:
        if rel == self.target:
            if isinstance(self.fault, bytes):
                return self.fault[:limit]
            raise HostReadError(self.fault, f"{rel}: {os.strerror(self.fault)}")
        return super().read_bytes(rel, limit)

    def listdir(self, rel: str) -> list[str]:
        if rel == self.target:
            if isinstance(self.fault, bytes):  # garbage names in a directory listing
                return sorted({self.fault.decode("utf-8", "replace").replace("/", "_") or "x"})
            raise HostReadError(self.fault, f"{rel}: {os.strerror(self.fault)}")
        return super().listdir(rel)


@pytest.fixture(scope="module")
def fuzz_plan(
    machine_root: Callable[..., Path],
) -> tuple[Path, dict[str, set[str]], dict[str, str]]:
    root_dir = machine_root("dgx-h100")
    reads: dict[str, set[str]] = {}
    for name in COLLECTORS:
        traced = HostRoot(root_dir)
        traced.trace = []
        discover(traced, only={name} | ({"rdma"} if name == "gpu" else set()))
        reads[name] = {rel for kind, rel in traced.trace if kind in ("file", "dir")}
    baseline = discover(HostRoot(root_dir))
    fields = {
        f: json_format.MessageToJson(
            getattr(baseline, f)
            if f in ("system", "cpu", "memory", "software")
            else pb.HardwareInventory(**{f: getattr(baseline, f)})
        )
        for f in FIELD_SOURCES
    }
    return root_dir, reads, fields


def _field_json(inv: pb.HardwareInventory, field: str) -> str:
    if field in ("system", "cpu", "memory", "software"):
        return json_format.MessageToJson(getattr(inv, field))
    return json_format.MessageToJson(pb.HardwareInventory(**{field: getattr(inv, field)}))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_any_file_any_fault(
    fuzz_plan: tuple[Path, dict[str, set[str]], dict[str, str]], data: st.DataObject
) -> None:
    root_dir, reads, baseline = fuzz_plan
    every = sorted(set().union(*reads.values()))
    target = data.draw(st.sampled_from(every), label="path")
    odd = [b"", b"\n", b"-1\n", b"0x\n", b"\xff" * 64, b"99999999999999999999999\n"]
    faults = st.one_of(st.binary(max_size=256), st.sampled_from(ERRNOS), st.sampled_from(odd))
    fault = data.draw(faults, label="fault")
    FUZZ_STATS["inputs"] += 1
    inv = discover(FaultyRoot(root_dir, target, fault))  # must not raise
    assert {c.name for c in inv.collectors} >= set(COLLECTORS)
    json_format.MessageToJson(inv)
    for field, sources in FIELD_SOURCES.items():
        if not any(target in reads[s] for s in sources):
            assert _field_json(inv, field) == baseline[field], f"{field} changed by {target}"


def test_fuzz_report(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\ncorrupt-input fuzz: {FUZZ_STATS['inputs']} inputs tried, 0 crashes")
