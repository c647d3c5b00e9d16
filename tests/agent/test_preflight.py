"""`nodeagent preflight` on modelled machine roots: a ready DGX H100 passes, and each
problem a join would trip over fails (or warns) with its remedy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent.agent import preflight, preflight_net
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import preflight_pb2 as ppb
from nodeagent.host import HostRoot
from testbed.ready import TCP_HEADER, make_ready, rewrite
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, enrol


@pytest.fixture
def registry() -> Iterator[str]:
    """A loopback listener standing in for the cluster's registry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once this closes


def by_name(report: ppb.PreflightReport) -> dict[str, ppb.PreflightCheck]:
    return {c.name: c for c in report.checks}


def opts(**kw: object) -> preflight.Options:
    return preflight.Options(min_free_gib=0.001, **kw)  # type: ignore[arg-type]


def test_ready_dgx_passes(root_copy: Callable[..., Path], registry: str) -> None:
    root = make_ready(root_copy("dgx-h100"))
    report = preflight.run(HostRoot(root), opts(registries=[registry]))
    checks = by_name(report)
    assert report.ok, [c for c in report.checks if c.status != ppb.CHECK_PASS]
    assert all(c.status == ppb.CHECK_PASS for c in report.checks)
    assert [c.name for c in report.checks] == [
        "swap",
        "kernel-modules",
        "sysctl",
        "cgroup-v2",
        "container-runtime",
        "ports",
        "hostname",
        "time-sync",
        "disk",
        "nvidia-driver",
        "fabric-manager",
        "registries",
    ]
    assert checks["nvidia-driver"].message.startswith("8 GPU(s), driver 5")
    assert "4 NVSwitch" in checks["fabric-manager"].message
    assert report.hostname and all(not c.remedy for c in report.checks)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "preflight",
            "--root",
            str(root),
            "-o",
            "json",
            "--registry",
            registry,
            "--min-free-gib",
            "0.001",
            "--no-fleet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True


def test_cpu_node_skips_gpu_checks(root_copy: Callable[..., Path]) -> None:
    report = preflight.run(HostRoot(make_ready(root_copy("cpu-node"))), opts())
    checks = by_name(report)
    assert report.ok
    for name in ("nvidia-driver", "fabric-manager", "registries"):
        assert checks[name].status == ppb.CHECK_SKIP


def _swap(root: Path) -> None:
    rewrite(
        root,
        "proc/swaps",
        "Filename Type Size Used Priority\n/dev/nvme0n1p3 partition 8388604 0 -2\n",
    )


def _module(root: Path) -> None:
    text = (root / "proc/modules").read_text().replace("br_netfilter 32768 0 - Live 0x0\n", "")
    rewrite(root, "proc/modules", text)


def _listen_10250(root: Path) -> None:
    rewrite(
        root,
        "proc/net/tcp",
        TCP_HEADER + "   0: 00000000:280A 00000000:0000 0A 00000000:"
        "00000000 00:00000000 00000000     0\n",
    )


CASES: dict[str, tuple[Callable[[Path], None], str, int, str]] = {
    "swap on": (_swap, "swap", ppb.CHECK_FAIL, "swapoff -a"),
    "br_netfilter missing": (_module, "kernel-modules", ppb.CHECK_FAIL, "modprobe br_netfilter"),
    "ip_forward off": (
        lambda r: rewrite(r, "proc/sys/net/ipv4/ip_forward", "0\n"),
        "sysctl",
        ppb.CHECK_FAIL,
        "sysctl -w",
    ),
    "cgroup v1": (
        lambda r: (r / "sys/fs/cgroup/cgroup.controllers").unlink(),
        "cgroup-v2",
        ppb.CHECK_FAIL,
        "systemd.unified_cgroup_hierarchy=1",
    ),
    "docker installed": (
        lambda r: rewrite(
            r, "var/lib/dpkg/status", "Package: docker-ce\nStatus: install ok installed\n"
        ),
        "container-runtime",
        ppb.CHECK_FAIL,
        "apt-get purge docker-ce",
    ),
    "distro containerd": (
        lambda r: rewrite(
            r, "var/lib/dpkg/status", "Package: containerd\nStatus: install ok installed\n"
        ),
        "container-runtime",
        ppb.CHECK_WARN,
        "apt-get purge containerd",
    ),
    "kubelet port taken": (_listen_10250, "ports", ppb.CHECK_FAIL, "sport = :10250"),
    "bad hostname": (
        lambda r: rewrite(r, "proc/sys/kernel/hostname", "GPU_Node_2\n"),
        "hostname",
        ppb.CHECK_FAIL,
        "hostnamectl",
    ),
    "clock unsynchronised": (
        lambda r: rewrite(r, ".nodeagent/probes/timesync.json", '{"synchronized": false}'),
        "time-sync",
        ppb.CHECK_FAIL,
        "chrony",
    ),
    "fabric manager stopped": (
        lambda r: (r / "proc/4242/comm").unlink() or (r / "proc/4242").rmdir(),
        "fabric-manager",
        ppb.CHECK_FAIL,
        "nvidia-fabricmanager",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_problem_fails_with_remedy(case: str, root_copy: Callable[..., Path]) -> None:
    breaks, name, status, remedy = CASES[case]
    root = make_ready(root_copy("dgx-h100"))
    breaks(root)
    report = preflight.run(HostRoot(root), opts())
    check = by_name(report)[name]
    assert check.status == status, check
    assert remedy in check.remedy
    assert report.ok is (status != ppb.CHECK_FAIL)
    others = [c for c in report.checks if c.name != name and c.status != ppb.CHECK_SKIP]
    assert all(c.status == ppb.CHECK_PASS for c in others), others


def test_no_driver_disk_and_unreachable_registry(
    machine_root: Callable[..., Path], root_copy: Callable[..., Path], registry: str
) -> None:
    import shutil

    bare = machine_root("dgx-h100", driver=False)
    root = make_ready(root_copy("dgx-h100"))
    shutil.rmtree(root / "proc/driver/nvidia")
    dead = closed_port()
    report = preflight.run(
        HostRoot(root),
        preflight.Options(min_free_gib=1e9, registries=[registry, dead], connect_timeout=1),
    )
    checks = by_name(report)
    assert (
        checks["nvidia-driver"].status == ppb.CHECK_FAIL
        and "no driver" in checks["nvidia-driver"].message
    )
    assert checks["disk"].status == ppb.CHECK_FAIL and "GiB free" in checks["disk"].message
    assert checks["registries"].status == ppb.CHECK_FAIL
    assert dead in checks["registries"].message and registry not in checks["registries"].message
    assert not report.ok
    assert preflight.check_driver(HostRoot(bare), 8).status == ppb.CHECK_FAIL
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "preflight",
            "--root",
            str(root),
            "--no-fleet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert "nvidia-driver      FAIL" in out.stdout and "nvidia-driver: install the driver" in (
        out.stdout
    )


def test_hostname_unique_in_the_fleet(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    me = enrol(svc, admin, variant(dgx_inventory, 1))
    identity = scratch / "identity"
    identity.mkdir()
    (identity / "node.key").write_bytes(me.key)
    (identity / "node.crt").write_bytes(me.cert)
    (identity / "ca.crt").write_bytes(svc.ca_pem)
    lookup = preflight_net.fleet_lookup(svc.address, identity)
    assert lookup("gpu-00001") == [], "the node itself does not count"
    twin = enrol(svc, admin, _renamed(variant(dgx_inventory, 2), "gpu-00001"))
    assert lookup("gpu-00001") == [twin.id]
    root = scratch / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/hostname").write_text("gpu-00001\n")
    assert preflight.check_hostname(HostRoot(root), lookup).status == ppb.CHECK_FAIL
    dead = preflight_net.fleet_lookup(closed_port(), identity, timeout=1)
    warned = preflight.check_hostname(HostRoot(root), dead)
    assert warned.status == ppb.CHECK_WARN and "unreachable" in warned.message
    admin.close()


def _renamed(inv: pb.HardwareInventory, hostname: str) -> pb.HardwareInventory:
    inv.system.hostname = hostname
    return inv


def test_registry_env_list(root_copy: Callable[..., Path], registry: str) -> None:
    root = make_ready(root_copy("cpu-node"))
    env = {**os.environ, "NODEAGENT_REGISTRIES": f"{registry},{closed_port()}"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "preflight",
            "--root",
            str(root),
            "--no-fleet",
            "-o",
            "json",
            "--min-free-gib",
            "0.001",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 3
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["registries"]["status"] == "CHECK_FAIL"
