"""nccl-allreduce (standard): nccl-tests `all_reduce_perf` across the node's GPUs.

Judged on the bus bandwidth at the largest size (out-of-place), which is where the
interconnect, not latency, sets the figure; `#wrong` other than 0 fails whatever the speed.
"""

from __future__ import annotations

import re

from nodeagent.acceptance import tools
from nodeagent.acceptance.model import Check, Context, Unparseable, judged, measure, skipped
from nodeagent.api.v1 import validate_pb2 as vpb

NAME = "nccl-allreduce"
TOOL = "all_reduce_perf"
# size count type redop root | time algbw busbw #wrong (out-of-place) | the same in-place
_ROW = re.compile(
    r"^\s*(\d+)\s+(\d+)\s+\w+\s+\w+\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)"
)
_VERSION = re.compile(r"nccl-tests version (\S+)")
_AVG = re.compile(r"Avg bus bandwidth\s*:\s*([\d.]+)")


def parse(out: bytes) -> tuple[str, list[tuple[int, float, str]], float | None]:
    """(version, [(size, busbw GB/s, #wrong)] out-of-place, average busbw)."""
    text = out.decode("utf-8", "replace")
    rows = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _ROW.match(line)
        if m:
            rows.append((int(m.group(1)), float(m.group(6)), m.group(7)))
    if not rows:
        raise Unparseable(TOOL, out, "no result rows")
    version = _VERSION.search(text)
    avg = _AVG.search(text)
    return (version.group(1) if version else ""), rows, (float(avg.group(1)) if avg else None)


def run(ctx: Context) -> vpb.CheckResult:
    path = tools.find(ctx, TOOL)
    gpus = len(ctx.inventory.gpus)
    if path is None:
        return skipped(NAME, "all_reduce_perf (nccl-tests) not installed")
    if gpus < 2:
        return skipped(NAME, f"{gpus} GPU(s): all-reduce needs two or more")
    top = ctx.spec.nccl.max_bytes or "8G"
    argv = [path, "-b", "8", "-e", top, "-f", "2", "-g", str(gpus)]
    out = tools.run(ctx, argv)
    version, rows, avg = parse(out.stdout)
    ctx.tools[-1].version = version
    size, busbw, _wrong = rows[-1]
    floor = ctx.spec.nccl.min_busbw_gbytes
    ms = [
        measure(
            f"{gpus} GPUs",
            "busbw_largest",
            busbw,
            "GB/s",
            f">= {floor:g}" if floor else "",
            busbw >= floor if floor else None,
            f"{size} B",
        )
    ]
    if avg is not None:
        ms.append(measure(f"{gpus} GPUs", "busbw_average", avg, "GB/s"))
    bad = []
    if floor and busbw < floor:
        bad.append(f"all-reduce bus bandwidth {busbw:g} GB/s at {size} B, below {floor:g} GB/s")
    wrong_rows = [r for r in rows if r[2] not in ("0", "N/A")]
    if wrong_rows:
        bad.append(f"all-reduce gave wrong results ({wrong_rows[0][2]} at {wrong_rows[0][0]} B)")
    if out.code != 0:
        bad.append(f"all_reduce_perf exited {out.code}")
    result = judged(NAME, ms, bad)
    if not floor and not bad:
        result.reason = "no nccl.min_busbw_gbytes in the profile: bandwidth recorded, not judged"
    return result


CHECK = Check(NAME, "standard", "nccl-tests all_reduce_perf bus bandwidth", run, lambda c: 900.0)
