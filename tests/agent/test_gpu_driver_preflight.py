"""Preflight in the two driver modes (issue 15) on modelled GPU roots, one without a driver
loaded: host mode needs the host's driver; operator mode needs the host to have none in the
GPU Operator's way (no NVIDIA module loaded, nouveau blacklisted)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.agent import preflight
from nodeagent.api.v1 import preflight_pb2 as ppb
from nodeagent.host import HostRoot
from testbed.cli import nodeagent as run
from testbed.ready import make_ready, rewrite

BLACKLIST = "etc/modprobe.d/blacklist-nouveau.conf"
NOUVEAU_FIX = (
    "echo 'blacklist nouveau' > /etc/modprobe.d/blacklist-nouveau.conf, "
    "update-initramfs -u and reboot"
)


def no_driver_root(machine_root: Callable[..., Path], dest: Path, name: str) -> Path:
    """A ready copy of `name` with no NVIDIA driver loaded and nouveau blacklisted."""
    shutil.copytree(machine_root(name, driver=False), dest, symlinks=True, copy_function=os.link)
    root = make_ready(dest)
    assert not (root / "proc/driver/nvidia").exists()
    (root / BLACKLIST).parent.mkdir(parents=True, exist_ok=True)
    (root / BLACKLIST).write_text("blacklist nouveau\noptions nouveau modeset=0\n")
    return root


def checks(root: Path, mode: str) -> dict[str, ppb.PreflightCheck]:
    opts = preflight.Options(min_free_gib=0.001, gpu_driver=mode)
    return {c.name: c for c in preflight.run(HostRoot(root), opts).checks}


@pytest.mark.parametrize("machine", ["rtx-pro-6000", "dgx-h100"])
def test_no_driver_root_passes_in_operator_mode_only(
    machine_root: Callable[..., Path], scratch: Path, machine: str
) -> None:
    root = no_driver_root(machine_root, scratch / machine, machine)
    opts = preflight.Options(min_free_gib=0.001, gpu_driver="operator")
    report = preflight.run(HostRoot(root), opts)
    assert report.ok, [c for c in report.checks if c.status != ppb.CHECK_PASS]
    names = [c.name for c in report.checks]
    assert names[-3:] == ["host-nvidia-modules", "nouveau", "registries"]
    assert "nvidia-driver" not in names and "fabric-manager" not in names
    found = {c.name: c for c in report.checks}
    assert found["host-nvidia-modules"].message == "8 GPU(s), no host NVIDIA module loaded"
    assert found["nouveau"].message == "not loaded, blacklisted"

    host = checks(root, "host")
    assert host["nvidia-driver"].status == ppb.CHECK_FAIL
    assert host["nvidia-driver"].message == "8 NVIDIA GPU(s), no driver loaded"
    assert "host-nvidia-modules" not in host and "nouveau" not in host


def test_a_host_driver_fails_operator_mode(root_copy: Callable[..., Path]) -> None:
    root = make_ready(root_copy("rtx-pro-6000"))
    (root / BLACKLIST).parent.mkdir(parents=True, exist_ok=True)
    (root / BLACKLIST).write_text("blacklist nouveau\n")
    found = checks(root, "operator")["host-nvidia-modules"]
    assert found.status == ppb.CHECK_FAIL
    assert found.message == (
        "host NVIDIA module(s) loaded: nvidia, nvidia_uvm, nvidia_modeset, nvidia_peermem "
        "(the GPU Operator brings its own)"
    )
    assert found.remedy == (
        "purge the host NVIDIA driver packages (apt-get purge '*nvidia*') and reboot, or "
        'set gpu_driver = "host" for this node'
    )
    assert checks(root, "host")["nvidia-driver"].status == ppb.CHECK_PASS


def test_nouveau_must_be_blacklisted_and_not_loaded(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    root = no_driver_root(machine_root, scratch / "r", "rtx-pro-6000")
    (root / BLACKLIST).unlink()
    (root / "etc/modprobe.d/other.conf").write_text("# blacklist nouveau\nblacklist nouveaux\n")
    found = checks(root, "operator")["nouveau"]
    assert (found.status, found.message) == (
        ppb.CHECK_FAIL,
        "nouveau not loaded but not blacklisted",
    )
    assert found.remedy == NOUVEAU_FIX
    (root / "usr/lib/modprobe.d").mkdir(parents=True)
    (root / "usr/lib/modprobe.d/nvidia.txt").write_text("blacklist nouveau\n")  # not a .conf
    assert checks(root, "operator")["nouveau"].status == ppb.CHECK_FAIL
    (root / "usr/lib/modprobe.d/nvidia-graphics-drivers.conf").write_text("blacklist nouveau\n")
    assert checks(root, "operator")["nouveau"].status == ppb.CHECK_PASS
    modules = (root / "proc/modules").read_text()
    rewrite(root, "proc/modules", modules + "nouveau 2920448 0 - Live 0x0\n")
    found = checks(root, "operator")["nouveau"]
    assert (found.status, found.message, found.remedy) == (
        ppb.CHECK_FAIL,
        "nouveau is loaded",
        NOUVEAU_FIX,
    )


@pytest.mark.parametrize(
    ("cmdline", "status"),
    [
        ("ro modprobe.blacklist=nouveau quiet", ppb.CHECK_PASS),
        ("ro modprobe.blacklist=floppy,nouveau", ppb.CHECK_PASS),
        ("ro modprobe.blacklist=nouveau2 nouveau.modeset=0", ppb.CHECK_FAIL),
    ],
)
def test_nouveau_blacklisted_on_the_command_line(
    machine_root: Callable[..., Path], scratch: Path, cmdline: str, status: int
) -> None:
    root = no_driver_root(machine_root, scratch / "r", "rtx-pro-6000")
    (root / BLACKLIST).unlink()
    rewrite(root, "proc/cmdline", cmdline + "\n")
    assert checks(root, "operator")["nouveau"].status == status


def test_cpu_node_skips_both_operator_checks(root_copy: Callable[..., Path]) -> None:
    found = checks(make_ready(root_copy("cpu-node")), "operator")
    assert found["host-nvidia-modules"].status == ppb.CHECK_SKIP
    assert found["nouveau"].status == ppb.CHECK_SKIP
    assert found["host-nvidia-modules"].message == found["nouveau"].message == "no NVIDIA GPU"


def test_preflight_cli_takes_the_mode(machine_root: Callable[..., Path], scratch: Path) -> None:
    root = no_driver_root(machine_root, scratch / "r", "rtx-pro-6000")
    common = ["preflight", "--root", str(root), "--no-fleet", "--min-free-gib", "0.001"]
    assert run(*common, "--gpu-driver", "operator").returncode == 0
    host = run(*common)  # no agent.toml: host
    assert host.returncode == 3 and "nvidia-driver      FAIL" in host.stdout
    config = scratch / "agent.toml"
    config.write_text('[tuning]\ngpu_driver = "operator"\n')
    assert run(*common, "--config", str(config)).returncode == 0
    assert run(*common, "--config", str(config), "--gpu-driver", "host").returncode == 3
    config.write_text('[tuning]\ngpu_driver = "dkms"\n')
    bad = run(*common, "--config", str(config))
    assert bad.returncode == 1 and "tuning.gpu_driver" in bad.stderr
