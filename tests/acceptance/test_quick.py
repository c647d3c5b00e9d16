"""`nodeagent validate --level quick` on modelled roots: healthy passes, each degraded part
fails with its name in the reason. Runs the real CLI in a subprocess where a whole run is
the point, the runner in-process where a test changes a counter between its two reads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.acceptance import registry, runner, store
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.cli import validate_cmd
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.tuning import profiles
from nodeagent.tuning.schema import ACCEPTANCE_CHECKS
from testbed import acceptance_roots as ar


def _cli(
    root: Path, state: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "validate",
            "--root",
            str(root),
            "--state-dir",
            str(state),
            "-o",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {"stderr": done.stderr}


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_names_agree_across_schema_cli_and_registry() -> None:
    assert tuple(c.name for c in registry.CHECKS) == ACCEPTANCE_CHECKS
    assert validate_cmd.CHECK_NAMES == ACCEPTANCE_CHECKS


def test_healthy_dgx_passes_quick(root_copy: Callable[..., Path], scratch: Path) -> None:
    root = root_copy("dgx-h100")
    ar.add_edac(root)
    code, report = _cli(root, scratch / "state", "--level", "quick", "--profile", "hgx-h100")
    assert code == 0, report
    checks = _checks(report)
    assert list(checks) == ["gpu-state", "nvme-health", "rdma-link", "memory-edac"]
    assert {c["verdict"] for c in checks.values()} == {"VERDICT_PASS"}
    assert report["outcome"] == "RUN_PASSED"
    assert report["level"] == "quick" and report["required_level"] == "quick"
    gpus = [m for m in checks["gpu-state"]["measurements"] if m["metric"] == "gpus"]
    assert gpus[0]["value"] == 8 and gpus[0]["threshold"] == "== 8"


@pytest.mark.parametrize(
    "machine,profile", [("oci-bm-gpu-h100-8", "oci-bm-gpu-h100-8"), ("cpu-node", "cpu-node")]
)
def test_other_healthy_roots_pass(
    root_copy: Callable[..., Path], scratch: Path, machine: str, profile: str
) -> None:
    code, report = _cli(root_copy(machine), scratch / "s", "--profile", profile)
    assert code == 0, report
    assert report["outcome"] == "RUN_PASSED"


def test_degraded_gpu_link_fails_naming_the_gpu(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    bus = ar.degrade_gpu_link(root, 3, width=8)
    code, report = _cli(root, scratch / "s", "--profile", "hgx-h100")
    assert code == 3
    gpu = _checks(report)["gpu-state"]
    assert gpu["verdict"] == "VERDICT_FAIL"
    assert gpu["reason"] == f"GPU 3 ({bus}) PCIe link at gen 5 x8, capable of gen 5 x16"
    assert report["reason"] == f"gpu-state: {gpu['reason']}"


def test_rail_at_half_rate_fails_naming_the_rail(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    inv = discover(HostRoot(root))
    rail = sorted({n for g in inv.gpus for n in g.nearest_rdma_devices})[2]
    ar.rail_rate(root, rail, 200, "4X HDR")
    code, report = _cli(root, scratch / "s", "--profile", "hgx-h100")
    assert code == 3
    link = _checks(report)["rdma-link"]
    assert link["reason"] == (
        f"{rail} port 1 at 200 Gb/s, below 400 Gb/s (expected_hardware.rail_rate_gbps)"
    )


def test_edac_uncorrected_fails_naming_the_dimm(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    ar.add_edac(root, ue=2, ue_mc=1)
    code, report = _cli(root, scratch / "s", "--profile", "hgx-h100")
    assert code == 3
    edac = _checks(report)["memory-edac"]
    assert edac["reason"] == "mc1 (CPU_SrcID#1_MC#0_Chan#0_DIMM#0): 2 uncorrected memory errors"


def test_growing_symbol_errors_fail_through_the_cli(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    inv = discover(HostRoot(root))
    rail = sorted({n for g in inv.gpus for n in g.nearest_rdma_devices})[0]
    with ar.growing_counter(
        root, f"sys/class/infiniband/{rail}/ports/1/counters/symbol_error", [0, 7]
    ):
        code, report = _cli(root, scratch / "s", "--profile", "hgx-h100", "--only", "rdma-link")
    assert code == 3
    assert (
        _checks(report)["rdma-link"]["reason"]
        == f"{rail} port 1 symbol_error grew by 7 during the run"
    )


def _run(root: Path, state: Path, profile: str, **kw: object) -> vpb.ValidationReport:
    host = HostRoot(root)
    inv = discover(host)
    prof = profiles.resolve(profile, inv, profiles.profile_dirs())
    return runner.run(host, inv, prof, state, runner.Options(**kw))  # type: ignore[arg-type]


def test_corrected_errors_growing_past_the_allowance_fail(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    ar.add_edac(root, ce=5)
    counter = "sys/devices/system/edac/mc/mc0/ce_count"
    with ar.growing_counter(root, counter, [5, 6]):
        report = _run(root, scratch / "s", "hgx-h100", level="quick", only=["memory-edac"])
    edac = report.checks[0]
    assert edac.verdict == vpb.VERDICT_FAIL
    assert edac.reason == "mc0: corrected memory errors grew by 1 during the run"


def test_unknown_only_and_level_errors() -> None:
    with pytest.raises(
        ValueError, match="nccl-allreduce runs at level standard and above, not quick"
    ):
        registry.select("quick", ["nccl-allreduce"])
    with pytest.raises(ValueError, match="unknown check 'gpu'"):
        registry.select("long", ["gpu"])
    with pytest.raises(ValueError, match="unknown level 'fast'"):
        registry.select("fast")
    assert [c.name for c in registry.select("standard")] == list(ACCEPTANCE_CHECKS)


def test_last_result_and_interrupted_run(tmp_path: Path) -> None:
    assert store.last_result(tmp_path).reason == "acceptance tests not run"
    marker = vpb.ValidationReport(run_id="r1", level="quick", outcome=vpb.RUN_RUNNING)
    lock = store.RunLock(tmp_path, marker)
    with lock:
        held = store.last_result(tmp_path)
        assert (held.required_passed, held.reason) == (False, "acceptance tests running")
        with pytest.raises(store.Busy), store.RunLock(tmp_path, marker):
            pass
    # the process died with the marker left behind: recorded as interrupted, never passed
    store._write(tmp_path / "acceptance" / "running.json", marker)
    last = store.last_result(tmp_path, "quick")
    assert last.report is not None and last.report.outcome == vpb.RUN_INTERRUPTED
    assert last.report.run_id == "r1" and not last.required_passed
    assert last.reason == "interrupted: the agent stopped during the run; run it again"
    assert not (tmp_path / "acceptance" / "running.json").exists()


def test_required_passed_rules() -> None:
    ok = vpb.ValidationReport(level="quick", outcome=vpb.RUN_PASSED, required_level="quick")
    assert store.required_passed(ok) == (True, "")
    assert store.required_passed(ok, "standard") == (
        False,
        "acceptance passed at quick, profile requires standard",
    )
    partial = vpb.ValidationReport(level="long", outcome=vpb.RUN_PASSED, only=["gpu-state"])
    assert store.required_passed(partial)[0] is False
    failed = vpb.ValidationReport(level="long", outcome=vpb.RUN_FAILED, reason="x: y")
    assert store.required_passed(failed) == (False, "acceptance failed: x: y")
