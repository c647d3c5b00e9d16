"""Driver ownership in tuning (issue 15): in operator mode the GPU Operator runs
persistenced, fabric manager and nvidia-peermem, so the plan leaves them out and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.tuning import apply, gpu_driver, profiles
from nodeagent.tuning.loader import ProfileError, load_text
from nodeagent.tuning.verify import verify
from testbed import fakehost
from testbed.cli import nodeagent as run
from testbed.machines import build_machine

NOTE = (
    "left to the GPU Operator: service nvidia-persistenced, service nvidia-fabricmanager, "
    "module nvidia-peermem"
)


def shipped(name: str) -> tpb.TuningProfile:
    return profiles.find(name, [profiles.SHIPPED])


def test_operator_mode_leaves_out_the_operators_units_and_modules() -> None:
    profile = shipped("hgx-h100")
    out = gpu_driver.for_mode(profile, "operator")
    assert list(out.profile.os.services) == []
    assert list(out.profile.os.modules) == []
    assert out.left_out == [
        "service nvidia-persistenced",
        "service nvidia-fabricmanager",
        "module nvidia-peermem",
    ]
    assert gpu_driver.notes(out.left_out) == [NOTE]
    assert list(profile.os.services) == ["nvidia-persistenced", "nvidia-fabricmanager"]
    rtx = gpu_driver.for_mode(shipped("rtx-pro-6000"), "operator").profile
    assert rtx.os.module_options["nvidia_uvm"].options == {"uvm_disable_hmm": "1"}


@pytest.mark.parametrize("mode", ["host", ""])
def test_host_mode_keeps_the_profile(mode: str) -> None:
    profile = shipped("hgx-h100")
    out = gpu_driver.for_mode(profile, mode)
    assert out.profile == profile and out.left_out == []
    assert gpu_driver.notes([]) == []


def test_a_unit_named_with_its_suffix_and_other_units_stay() -> None:
    profile = tpb.TuningProfile(name="x")
    profile.os.services.extend(["nvidia-persistenced.service", "chronyd"])
    profile.os.modules.extend(["nvidia_peermem", "mlx5_ib"])
    out = gpu_driver.for_mode(profile, "operator")
    assert list(out.profile.os.services) == ["chronyd"]
    assert list(out.profile.os.modules) == ["mlx5_ib"]
    assert out.left_out == ["service nvidia-persistenced.service", "module nvidia_peermem"]


def test_the_most_specific_setting_wins() -> None:
    assert gpu_driver.effective() == "host"
    assert gpu_driver.effective("", "", "") == "host"
    assert gpu_driver.effective("", "", "operator") == "operator"
    assert gpu_driver.effective("", "operator", "host") == "operator"
    assert gpu_driver.effective("host", "operator", "operator") == "host"
    with pytest.raises(ValueError, match="gpu_driver 'dkms': one of host, operator"):
        gpu_driver.effective("dkms")
    with pytest.raises(ValueError, match=r"^x 'nvidia': one of host, operator$"):
        gpu_driver.check("nvidia", "x")
    assert gpu_driver.check("") == ""


def test_the_profile_schema_takes_gpu_driver() -> None:
    profile = load_text("name: p\ngpu_driver: operator\nos: {}\n", "p.yaml")
    assert profile.gpu_driver == "operator"
    with pytest.raises(ProfileError, match="gpu_driver"):
        load_text("name: p\ngpu_driver: dkms\nos: {}\n", "p.yaml")


def test_operator_plan_on_a_root_without_a_driver(tmp_path: Path) -> None:
    """tune apply --check on an RTX PRO 6000 root with no driver loaded: the plan enables no
    NVIDIA unit, loads no peermem, and names what it left to the Operator."""
    dest = build_machine("rtx-pro-6000", tmp_path / "rtx", driver=False)
    commands = fakehost.prepare(dest)
    root = HostRoot(dest)
    inv = discover(root)
    profile = profiles.select(profiles.load_all([profiles.SHIPPED]), inv)
    assert profile.name == "rtx-pro-6000"
    host_settings = {s.setting for s in verify(root, profile, inv, []).settings}
    operators = {"service:nvidia-persistenced.service", "module:nvidia_peermem"}
    assert operators <= host_settings
    opts = apply.ApplyOptions(
        profile, root, inv, check=True, commands=commands, gpu_driver="operator"
    )
    events = list(apply.apply(opts))
    result = events[-1].result
    assert result.outcome == "checked", result.error
    assert list(result.notes) == [
        "left to the GPU Operator: service nvidia-persistenced, module nvidia-peermem"
    ]
    settings = {s.setting for s in result.report.settings}
    assert settings == host_settings - operators
    assert "module_option:nvidia_uvm.uvm_disable_hmm" in settings  # the ConfigMap's, verified


def test_tune_show_lists_what_is_left_to_the_operator() -> None:
    shown = run("tune", "show", "hgx-h100", "--gpu-driver", "operator")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.rstrip().endswith(f"# {NOTE}")
    plain = run("tune", "show", "hgx-h100")
    assert "GPU Operator" not in plain.stdout
