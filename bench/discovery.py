"""Discovery benchmark: in-process time on a DGX H100-like root against the
physical floor, and the `nodeagent discover` process against `lshw -json`.

Prints a table, then one JSON line (the last line) with every figure and goal.
Goals (hardware discovery issue): discovery < 50 ms, <= 3x the floor; the CLI
<= 1.5x lshw's wall time on this machine; peak RSS < 60 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testbed/ is not installed: it lives beside the package

from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

RUNS = 30
PROCESS_RUNS = 15
NODEAGENT = str(Path(sys.executable).with_name("nodeagent"))


def _median_ms(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _read_all(paths: list[str]) -> None:
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as fh:
                fh.read(1 << 20)
        except OSError:
            pass


def _process(cmd: list[str]) -> tuple[float, float]:
    """Median wall time (ms) and peak RSS (MB) of a command over PROCESS_RUNS runs."""
    walls, rss = [], []
    for _ in range(PROCESS_RUNS):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append((time.perf_counter() - start) * 1000)
        rss.append(usage.ru_maxrss / 1024)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd} failed")
        proc.returncode = 0
    return statistics.median(walls), max(rss)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    try:
        root_dir = build_machine("dgx-h100", tmp / "dgx")
        root = HostRoot(root_dir)
        inv = discover(root)
        assert len(inv.gpus) == 8 and len(inv.rdma_devices) == 12, "unexpected DGX root"

        per_collector: dict[str, list[float]] = {}

        def once() -> None:
            result = discover(root)
            for c in result.collectors:
                per_collector.setdefault(c.name, []).append(c.duration_seconds * 1000)

        discover_ms = _median_ms(once, RUNS)
        traced = HostRoot(root_dir)
        traced.trace = []
        discover(traced)
        files = [traced.host_path(rel) for kind, rel in traced.trace if kind == "file"]
        floor_ms = _median_ms(lambda: _read_all(files), RUNS)

        cli_ms, cli_rss = _process([NODEAGENT, "discover", "-o", "json"])
        dgx_cli_ms, dgx_rss = _process(
            [NODEAGENT, "discover", "-o", "json", "--root", str(root_dir)]
        )
        lshw = shutil.which("lshw")
        lshw_ms = _process([lshw, "-json", "-quiet"])[0] if lshw else float("nan")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("discovery, DGX H100 root, in process (median)", f"{discover_ms:.2f} ms", "< 50 ms"),
        (f"floor: plain read of the {len(files)} files it read", f"{floor_ms:.2f} ms", ""),
        ("ratio to floor", f"{discover_ms / floor_ms:.2f}x", "<= 3x"),
        ("`nodeagent discover -o json`, this machine", f"{cli_ms:.1f} ms", ""),
        ("`lshw -json`, this machine", f"{lshw_ms:.1f} ms", ""),
        ("ratio to lshw", f"{cli_ms / lshw_ms:.2f}x", "<= 1.5x"),
        ("`nodeagent discover -o json --root <DGX>`", f"{dgx_cli_ms:.1f} ms", ""),
        ("peak RSS, this machine / DGX root", f"{cli_rss:.1f} / {dgx_rss:.1f} MB", "< 60 MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>18}  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value:>18}  {goal}")
    print("\nper collector (median ms on the DGX root):")
    for name, values in per_collector.items():
        print(f"  {name:<12} {statistics.median(values):7.3f}")

    results = [
        {
            "name": "discovery_dgx_h100_median",
            "value": round(discover_ms, 3),
            "unit": "ms",
            "goal": 50,
            "better": "lower",
        },
        {
            "name": "discovery_to_floor_ratio",
            "value": round(discover_ms / floor_ms, 2),
            "unit": "x",
            "goal": 3,
            "better": "lower",
        },
        {
            "name": "cli_to_lshw_ratio",
            "value": round(cli_ms / lshw_ms, 2),
            "unit": "x",
            "goal": 1.5,
            "better": "lower",
        },
        {
            "name": "cli_discover_wall",
            "value": round(cli_ms, 1),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "lshw_wall",
            "value": round(lshw_ms, 1),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "cli_peak_rss",
            "value": round(max(cli_rss, dgx_rss), 1),
            "unit": "MB",
            "goal": 60,
            "better": "lower",
        },
    ]
    print(json.dumps({"bench": "discovery", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
