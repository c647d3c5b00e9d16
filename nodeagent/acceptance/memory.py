"""memory-edac (quick): the memory controllers' error counters (kernel EDAC).

Any uncorrected error since boot fails (the DIMM that threw it is named when the driver
knows its label); corrected errors fail only when they grow over the run past the profile's
allowance, since a few over months of uptime are normal and a DIMM going bad keeps counting.
"""

from __future__ import annotations

from nodeagent.acceptance.model import Check, Context, judged, measure, skipped
from nodeagent.api.v1 import validate_pb2 as vpb

NAME = "memory-edac"
MC = "sys/devices/system/edac/mc"


def _int(ctx: Context, rel: str) -> int | None:
    try:
        return int(ctx.root.read_attr(rel))
    except (OSError, ValueError):
        return None


def read_counters(ctx: Context) -> dict[str, tuple[int, int]]:
    """mcN -> (corrected, uncorrected)."""
    out = {}
    for mc in ctx.root.listdir(MC):
        if not mc.startswith("mc"):
            continue
        ce, ue = _int(ctx, f"{MC}/{mc}/ce_count"), _int(ctx, f"{MC}/{mc}/ue_count")
        if ce is not None and ue is not None:
            out[mc] = (ce, ue)
    return out


def _dimms_with_ue(ctx: Context, mc: str) -> list[str]:
    names = []
    for entry in ctx.root.listdir(f"{MC}/{mc}"):
        if entry.startswith(("dimm", "rank")):
            count = _int(ctx, f"{MC}/{mc}/{entry}/dimm_ue_count")
            if count:
                label = ctx.root.attr(f"{MC}/{mc}/{entry}/dimm_label") or entry
                names.append(label)
    return names


def run(ctx: Context) -> vpb.CheckResult:
    now = read_counters(ctx)
    if not now:
        return skipped(NAME, "no EDAC memory controller (EDAC driver not loaded)")
    before: dict[str, tuple[int, int]] = ctx.baselines.get(NAME) or {}
    allowed = ctx.spec.memory.max_corrected_growth
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    for mc, (ce, ue) in sorted(now.items()):
        ms.append(measure(mc, "uncorrected", ue, "errors", "== 0", ue == 0))
        if ue:
            dimms = _dimms_with_ue(ctx, mc)
            where = f" ({', '.join(dimms)})" if dimms else ""
            bad.append(f"{mc}{where}: {ue} uncorrected memory errors")
        grew = ce - before.get(mc, (ce, ue))[0]
        ms.append(
            measure(
                mc,
                "corrected_growth",
                grew,
                "errors",
                f"<= {allowed}",
                grew <= allowed,
                f"now {ce}",
            )
        )
        if grew > allowed:
            bad.append(f"{mc}: corrected memory errors grew by {grew} during the run")
    return judged(NAME, ms, bad)


CHECK = Check(
    NAME,
    "quick",
    "EDAC corrected/uncorrected memory errors",
    run,
    lambda c: 30.0,
    baseline=read_counters,
)
