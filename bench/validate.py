"""Acceptance run overhead: `nodeagent validate --level quick` on the DGX H100 model.

Goal: under 2 s beyond the tools' own run time. The quick level reads sysfs and the NVML
recording; with the stand-ins on PATH the tools' own time is what they report, and the
overhead is the rest (locking, discovery of the thresholds, counter reads, the report).
Peer: the same quick checks done the naive way, a shell loop that `cat`s every sysfs file
the rail, NVMe and EDAC checks read (one process per file, as a health script would).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testbed/ is not installed: it lives beside the package

from nodeagent.acceptance import runner  # noqa: E402
from nodeagent.api.v1 import validate_pb2 as vpb  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.tuning import profiles  # noqa: E402
from testbed import acceptance_roots, standins  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

RUNS = 5


def _naive(root: Path) -> float:
    files = sorted(
        str(p)
        for pattern in (
            "sys/class/infiniband/*/ports/*/counters/*",
            "sys/class/infiniband/*/ports/*/rate",
            "sys/class/infiniband/*/ports/*/state",
            "sys/class/nvme/*/state",
            "sys/devices/system/edac/mc/mc*/*_count",
        )
        for p in root.glob(pattern)
    )
    began = time.monotonic()
    for _ in range(2):  # counters are read twice: before and after
        subprocess.run(
            ["sh", "-c", 'for f in "$@"; do cat "$f"; done', "sh", *files],
            stdout=subprocess.DEVNULL,
            check=True,
        )
    return time.monotonic() - began


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        root = build_machine("dgx-h100", Path(tmp) / "root")
        acceptance_roots.add_edac(root)
        path = standins.install(Path(tmp) / "tools")
        host = HostRoot(root)
        inv = discover(host)
        prof = profiles.resolve("hgx-h100", inv, profiles.profile_dirs())
        walls, tools = [], []
        for i in range(RUNS):
            began = time.monotonic()
            report = runner.run(
                host, inv, prof, Path(tmp) / f"s{i}", runner.Options(level="quick", path=path)
            )
            walls.append(time.monotonic() - began)
            tools.append(report.tool_seconds)
            assert report.outcome == vpb.RUN_PASSED, report.reason
        naive = min(_naive(root) for _ in range(3))
    wall, tool_s = min(walls), tools[walls.index(min(walls))]
    overhead = wall - tool_s
    rows = [
        ("quick run wall", f"{wall * 1000:.1f} ms"),
        ("tools' own time", f"{tool_s * 1000:.1f} ms"),
        ("overhead (goal < 2000 ms)", f"{overhead * 1000:.1f} ms"),
        ("naive shell reads", f"{naive * 1000:.1f} ms"),
        ("naive / ours", f"{naive / wall:.1f}x"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    results = [
        {
            "name": "quick_overhead",
            "value": round(overhead, 3),
            "unit": "s",
            "goal": 2.0,
            "better": "lower",
        },
        {
            "name": "quick_tools_time",
            "value": round(tool_s, 3),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "naive_shell_reads",
            "value": round(naive, 3),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "naive_to_ours_ratio",
            "value": round(naive / wall, 2),
            "unit": "x",
            "goal": None,
            "better": "higher",
        },
    ]
    print(json.dumps({"bench": "validate", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
