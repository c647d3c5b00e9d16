"""The standard level: stand-ins replaying recorded dcgmi, all_reduce_perf and ib_write_bw
output (testbed/acceptance_tools/README.md), and the real fio reading files that stand for
the NVMe namespaces. Bad input: a tool that hangs, output that does not parse, a required
check that cannot run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nodeagent.acceptance import runner
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.tuning import profiles
from testbed import acceptance_roots as ar
from testbed import standins


def _run(
    root: Path,
    state: Path,
    path: str,
    *,
    edit: Callable[..., None] | None = None,
    events: list[vpb.ValidationEvent] | None = None,
    **kw: object,
) -> dict[str, vpb.CheckResult]:
    host = HostRoot(root)
    inv = discover(host)
    prof = profiles.resolve("hgx-h100", inv, profiles.profile_dirs())
    prof.acceptance.nvme.runtime_seconds = 1
    prof.acceptance.nvme.size = "4M"
    if edit:
        edit(prof)
    opts = runner.Options(
        level=kw.pop("level", "standard"),
        path=path,  # type: ignore[arg-type]
        progress=events.append if events is not None else None,
        **kw,
    )  # type: ignore[arg-type]
    report = runner.run(host, inv, prof, state, opts)
    return {c.name: c for c in report.checks}


def _namespaces(root: Path) -> list[str]:
    inv = discover(HostRoot(root))
    return [ns.name for c in inv.nvme_controllers for ns in c.namespaces][:2]


def test_standard_passes_with_recorded_tools_and_real_fio(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")
    ar.nvme_devices(root, _namespaces(root))
    events: list[vpb.ValidationEvent] = []
    checks = _run(
        root,
        scratch / "s",
        standins.install(scratch / "t"),
        events=events,
        only=["dcgm-diag", "nccl-allreduce", "rdma-bandwidth", "nvme-read"],
    )
    assert {n: c.verdict for n, c in checks.items()} == dict.fromkeys(checks, vpb.VERDICT_PASS)
    nccl = checks["nccl-allreduce"].measurements[0]
    assert (nccl.value, nccl.threshold, nccl.text) == (481.68, ">= 350", "8589934592 B")
    bw = checks["rdma-bandwidth"].measurements
    assert len(bw) == 4 and bw[0].value == 390.83 and bw[0].threshold == ">= 320"
    dcgm = checks["dcgm-diag"]
    assert dcgm.tools[0].argv[1:] == ["diag", "-r", "2", "-j"] and dcgm.tools[0].version == "3.3.1"
    fio = checks["nvme-read"]
    assert [m.metric for m in fio.measurements] == ["seq_read", "rand_read"] * 2
    assert all(t.tool == "fio" and t.version.startswith("fio-") for t in fio.tools)
    assert all("--readonly" in t.argv for t in fio.tools)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["started", "check"] * 4 + ["report"]


def test_recorded_failures_name_gpu_and_rail(root_copy: Callable[..., Path], scratch: Path) -> None:
    root = root_copy("dgx-h100")
    path = standins.install(
        scratch / "t",
        dcgm="dcgmi-diag-r2-gpu3-fail.json",
        nccl="all_reduce_perf-8xH100-nvlink-down.txt",
        slow_rails=["mlx5_3"],
    )
    checks = _run(root, scratch / "s", path, only=["dcgm-diag", "nccl-allreduce", "rdma-bandwidth"])
    assert checks["dcgm-diag"].reason.startswith("DCGM GPU Memory failed on GPU 3: GPU 3 had")
    assert checks["nccl-allreduce"].reason == (
        "all-reduce bus bandwidth 125.9 GB/s at 8589934592 B, below 350 GB/s"
    )
    assert checks["rdma-bandwidth"].reason.startswith("mlx5_0<->mlx5_3: ")
    assert "ib_write_bw 194.62 Gb/s, below 0.8 of 400 Gb/s" in checks["rdma-bandwidth"].reason


def test_slow_nvme_fails_naming_the_device(root_copy: Callable[..., Path], scratch: Path) -> None:
    root = root_copy("dgx-h100")
    names = _namespaces(root)[:1]
    ar.nvme_devices(root, names)

    def raise_floor(p: object) -> None:
        p.acceptance.nvme.min_seq_read_mbytes = 1e9  # type: ignore[attr-defined]

    checks = _run(
        root, scratch / "s", standins.install(scratch / "t"), edit=raise_floor, only=["nvme-read"]
    )
    assert checks["nvme-read"].verdict == vpb.VERDICT_FAIL
    assert checks["nvme-read"].reason.startswith(f"{names[0]} reads ")
    assert checks["nvme-read"].reason.endswith(" MB/s sequentially, below 1e+09 MB/s")


def test_hang_times_out_and_the_run_continues(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    root = root_copy("dgx-h100")

    def short(p: object) -> None:
        p.acceptance.timeouts["dcgm-diag"] = 1.0  # type: ignore[attr-defined]

    path = standins.install(scratch / "t", hang=["dcgmi"])
    checks = _run(root, scratch / "s", path, edit=short, only=["dcgm-diag", "nccl-allreduce"])
    dcgm = checks["dcgm-diag"]
    assert dcgm.verdict == vpb.VERDICT_FAIL
    assert dcgm.reason == "timed out after 1 s: dcgmi did not finish within the check's timeout"
    assert dcgm.tools[0].timed_out and dcgm.duration_seconds < 5
    assert checks["nccl-allreduce"].verdict == vpb.VERDICT_PASS


def test_unparseable_output_shows_the_first_bytes(
    root_copy: Callable[..., Path], scratch: Path
) -> None:
    path = standins.install(scratch / "t", garbage=["all_reduce_perf"])
    checks = _run(root_copy("dgx-h100"), scratch / "s", path, only=["nccl-allreduce"])
    assert checks["nccl-allreduce"].reason == (
        "all_reduce_perf output is unparseable (no result rows): "
        "'Segmentation fault (core dumped)\\n\\x01\\x02'"
    )


def test_absent_tool_skips_unless_required(root_copy: Callable[..., Path], scratch: Path) -> None:
    root = root_copy("dgx-h100")
    path = standins.install(scratch / "t", absent=["dcgmi"])
    checks = _run(root, scratch / "s", path, only=["dcgm-diag"])
    assert checks["dcgm-diag"].verdict == vpb.VERDICT_SKIP
    assert checks["dcgm-diag"].reason == "dcgmi not installed (DCGM absent)"

    def require(p: object) -> None:
        p.acceptance.required_checks.append("dcgm-diag")  # type: ignore[attr-defined]

    checks = _run(root, scratch / "s2", path, edit=require, only=["dcgm-diag"])
    assert checks["dcgm-diag"].verdict == vpb.VERDICT_FAIL
    assert checks["dcgm-diag"].required
    assert checks["dcgm-diag"].reason == (
        "required by the profile but cannot run: dcgmi not installed (DCGM absent)"
    )
