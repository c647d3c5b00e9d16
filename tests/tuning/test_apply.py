"""Real playbook runs through ansible-runner against throwaway roots.

One DGX H100-like host is planned (check), applied, re-applied and rebooted once for the
module; the drift tests then flip one setting at a time on that tuned host and put it back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import render
from nodeagent.tuning.verify import OK, PENDING, verify
from testbed import fakehost
from tests.tuning.conftest import Host, make_host


@pytest.fixture(scope="module")
def tuned() -> Iterator[dict[str, object]]:
    """The DGX root through check -> apply -> apply again -> reboot, with what each said."""
    base = Path(
        tempfile.mkdtemp(
            prefix="nodeagent-tune-test-",
            dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        )
    )
    host = make_host("dgx-h100", base / "dgx-h100")
    steps: dict[str, object] = {"host": host}
    steps["check"] = host.run(check=True)
    steps["check_log"] = list(host.log())
    steps["check_grub"] = (host.path / "etc/default/grub.d").exists()
    steps["apply"] = host.run()
    steps["log"] = list(host.log())
    steps["again"] = host.run()
    steps["again_log"] = list(host.log())
    fakehost.run(host.path, "reboot", [])
    yield steps
    shutil.rmtree(base, ignore_errors=True)


def not_ok(host: Host) -> dict[str, int]:
    report = verify(host.root, host.profile, host.inventory)
    return {s.setting: s.status for s in report.settings if s.status != OK}


def test_check_mode_shows_the_plan_and_changes_nothing(tuned: dict[str, object]) -> None:
    tasks, result = tuned["check"]  # type: ignore[misc]
    assert result.outcome == "checked" and result.check
    assert tuned["check_log"] == [] and tuned["check_grub"] is False
    files = next(
        t
        for t in tasks
        if t.task == "Write the golden configuration files" and t.status == tpb.TASK_CHANGED
    )
    assert f"+++ b{tuned['host'].path}{render.GRUB_DROPIN}" in files.diff  # type: ignore[attr-defined]
    assert "+vm.swappiness = 1" in files.diff
    due = next(t for t in tasks if t.task == "Work out which steps are due" and t.message)
    assert due.message.startswith("would run: update_grub, sysctl, sysfs")
    assert "raid" in due.message


def test_apply_changes_the_root(tuned: dict[str, object]) -> None:
    _, result = tuned["apply"]  # type: ignore[misc]
    host: Host = tuned["host"]  # type: ignore[assignment]
    assert result.outcome == "reboot-required", result.error
    assert result.changed >= 8 and not result.failed_task
    assert set(result.reboot_reasons) == {
        "kernel_cmdline:pcie_aspm.policy",
        "kernel_cmdline:intel_idle.max_cstate",
        "kernel_cmdline:processor.max_cstate",
        "max_cstate",
        "pcie_aspm_policy",
    }
    log = tuned["log"]
    assert "update_grub" in log and "systemctl enable --now raid.mount" in log
    mdadm = next(line for line in log if line.startswith("mdadm --create /dev/md/md1"))
    assert mdadm.count("/dev/disk/by-id/nvme-eui.") == 8 and "--level=0" in mdadm
    after = {s.setting: s.status for s in result.report.settings}
    assert (
        after["sysctl:vm.swappiness"] == OK and after["kernel_cmdline:pcie_aspm.policy"] == PENDING
    )
    grub = (host.path / "boot/grub/grub.cfg").read_text()
    assert "pcie_aspm.policy=performance" in grub and "init_on_alloc=0" in grub


def test_second_apply_changes_nothing(tuned: dict[str, object]) -> None:
    tasks, result = tuned["again"]  # type: ignore[misc]
    assert result.changed == 0 and result.outcome == "reboot-required"
    assert not any(t.status == tpb.TASK_CHANGED for t in tasks)
    assert tuned["again_log"] == tuned["log"]  # no command ran


def test_after_reboot_every_setting_is_ok(tuned: dict[str, object]) -> None:
    host: Host = tuned["host"]  # type: ignore[assignment]
    report = verify(host.root, host.profile, host.inventory)
    assert not_ok(host) == {}
    assert not report.drift and not report.reboot_needed and not report.hardware
    assert len(report.settings) >= 25


def _rewrite(path: Path, text: str) -> Callable[[], None]:
    old = path.read_text()
    path.write_text(text)
    return lambda: path.write_text(old)


def _remove(path: Path) -> Callable[[], None]:
    target = os.readlink(path) if path.is_symlink() else None
    data = None if target else path.read_text()
    path.unlink()
    return lambda: path.symlink_to(target) if target else path.write_text(data or "")


FLIPS: dict[str, Callable[[Path], Callable[[], None]]] = {
    "sysctl:vm.swappiness": lambda r: _rewrite(r / "proc/sys/vm/swappiness", "60\n"),
    "cpu_governor": lambda r: _rewrite(
        r / "sys/devices/system/cpu/cpu17/cpufreq/scaling_governor", "powersave\n"
    ),
    "transparent_hugepages": lambda r: _rewrite(
        r / "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n"
    ),
    "hugepages:2048kB": lambda r: _rewrite(
        r / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n"
    ),
    "module:nvidia_peermem": lambda r: _rewrite(
        r / "proc/modules",
        "".join(
            line
            for line in (r / "proc/modules").read_text().splitlines(True)
            if not line.startswith("nvidia_peermem ")
        ),
    ),
    "service:nvidia-persistenced.service": lambda r: _remove(
        r / "run/systemd/units/invocation:nvidia-persistenced.service"
    ),
    "pcie_acs": lambda r: _remove(
        r / "etc/systemd/system/multi-user.target.wants/nodeagent-acs-disable.service"
    ),
    "memlock": lambda r: _rewrite(
        r / "etc/security/limits.d/90-nodeagent-memlock.conf",
        "* soft memlock 65536\n* hard memlock unlimited\n",
    ),
    "mount:/raid": lambda r: _rewrite(r / "proc/mounts", "/dev/md0 / ext4 rw 0 0\n"),
    "max_cstate": lambda r: _rewrite(r / "sys/module/intel_idle/parameters/max_cstate", "9\n"),
}


@pytest.mark.parametrize("setting", sorted(FLIPS))
def test_one_flip_one_drift(tuned: dict[str, object], setting: str) -> None:
    host: Host = tuned["host"]  # type: ignore[assignment]
    assert not_ok(host) == {}
    restore = FLIPS[setting](host.path)
    try:
        drift = not_ok(host)
    finally:
        restore()
    expected = tpb.SETTING_PENDING if setting == "max_cstate" else tpb.SETTING_DRIFT
    assert drift == {setting: expected}
    assert not_ok(host) == {}


def test_rewritten_kernel_cmdline_is_drift_not_pending(tuned: dict[str, object]) -> None:
    """A package update regenerated grub.cfg without our tokens: drift, and apply fixes it."""
    host: Host = tuned["host"]  # type: ignore[assignment]
    grub = host.path / "boot/grub/grub.cfg"
    cmdline = host.path / "proc/cmdline"
    restore = [
        _rewrite(p, p.read_text().replace(" pcie_aspm.policy=performance", ""))
        for p in (grub, cmdline)
    ]
    try:
        assert not_ok(host) == {"kernel_cmdline:pcie_aspm.policy": tpb.SETTING_DRIFT}
    finally:
        for undo in restore:
            undo()


def test_apply_repairs_runtime_drift(tuned: dict[str, object]) -> None:
    host: Host = tuned["host"]  # type: ignore[assignment]
    FLIPS["cpu_governor"](host.path)  # left flipped: apply must put it back
    FLIPS["sysctl:vm.swappiness"](host.path)
    tasks, result = host.run()
    assert result.outcome == "tuned", result.error
    changed = [t.task for t in tasks if t.status == tpb.TASK_CHANGED]
    assert changed == [
        "Apply sysctl settings",
        "Apply sysfs settings (governor, transparent huge pages, huge pages)",
    ]
    assert not_ok(host) == {}


@pytest.fixture
def run_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[Path]]:
    """The run folders apply leaves behind: its temporary directories go to a folder of
    this test's own (tempfile.tempdir), so another process's runs never count."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return lambda: sorted(base.glob("nodeagent-tune-*"))


def test_failed_task_is_named_and_its_run_folder_removed(
    fresh_host: Callable[[str], Host], run_dirs: Callable[[], list[Path]]
) -> None:
    host = fresh_host("cpu-node")
    (host.path / ".nodeagent/fail").mkdir()
    (host.path / ".nodeagent/fail/sysctl").touch()
    tasks, result = host.run()
    assert result.outcome == "failed"
    assert result.failed_task == "Apply sysctl settings"
    assert "simulated failure" in result.error and "run kept in" not in result.error
    assert tasks[-1].status == tpb.TASK_FAILED
    assert run_dirs() == []


def test_keep_run_keeps_the_run_folder_and_names_it(
    fresh_host: Callable[[str], Host], run_dirs: Callable[[], list[Path]]
) -> None:
    host = fresh_host("cpu-node")
    (host.path / ".nodeagent/fail").mkdir()
    (host.path / ".nodeagent/fail/sysctl").touch()
    _, result = host.run(keep_run=True)
    (kept,) = run_dirs()
    assert result.outcome == "failed" and result.error.endswith(f" (run kept in {kept})")
    assert f"ansible-runner's run kept in {kept}" in result.notes
    assert (kept / "env/extravars").exists() and list((kept / "artifacts").iterdir())


def test_check_run_whose_playbook_cannot_load_fails_with_its_cause(
    fresh_host: Callable[[str], Host], run_dirs: Callable[[], list[Path]], tmp_path: Path
) -> None:
    """What an installed package without its playbook did: ansible-playbook stops before any
    task, and check mode used to call that `checked`."""
    host = fresh_host("cpu-node")
    tasks, result = host.run(check=True, playbook_dir=tmp_path / "nowhere")
    assert tasks == []
    assert result.outcome == "failed" and result.failed_task == "ansible-runner"
    missing = tmp_path / "nowhere" / "golden-image.yml"
    assert (
        result.error == f"ansible-runner failed: ERROR! the playbook: {missing} could not be found"
    )
    assert run_dirs() == []


def test_file_step_is_all_or_nothing(fresh_host: Callable[[str], Host]) -> None:
    host = fresh_host("cpu-node")
    blocker = host.path / render.TMPFILES_FILE.lstrip("/")
    blocker.mkdir(parents=True)  # a directory where a file must go: the write fails
    (host.path / "etc/sysctl.d").mkdir(parents=True)
    (host.path / "etc/sysctl.d/90-nodeagent.conf").write_text("vm.swappiness = 10\n")
    _, result = host.run()
    assert result.outcome == "failed"
    assert result.failed_task == "Write the golden configuration files"
    assert "rolled back" in result.error
    assert not (host.path / render.GRUB_DROPIN.lstrip("/")).exists()
    assert (host.path / "etc/sysctl.d/90-nodeagent.conf").read_text() == "vm.swappiness = 10\n"
    leftovers = [p for p in host.path.rglob(".nodeagent-*")]
    assert leftovers == [] and host.log() == []


def test_el_host_uses_grubby_and_boots_it(fresh_host: Callable[[str], Host]) -> None:
    host = fresh_host("oci-bm-gpu-h100-8")
    _, result = host.run()
    assert result.outcome == "reboot-required", result.error
    assert result.reboot_reasons == ["kernel_cmdline:pcie_aspm.policy", "pcie_aspm_policy"]
    grubby = [line for line in host.log() if line.startswith("grubby")]
    assert grubby == [
        "grubby --update-kernel=ALL '--args=intel_iommu=on iommu=pt pcie_aspm.policy=performance'"
    ]
    assert not (host.path / "etc/default/grub.d").exists()
    _, again = host.run(reboot="auto")
    assert again.outcome == "rebooting" and again.changed == 0
    assert host.log()[-1] == "reboot"
    assert not_ok(host) == {}


def test_reboot_policy_never_does_not_reboot(tuned: dict[str, object]) -> None:
    assert "reboot" not in tuned["again_log"]  # type: ignore[operator]
