"""gpu-state (quick): what NVML says about each GPU at rest.

Read through the NVML probe (live on `/`, its recording on a modelled root), so the check
sees exactly what discovery saw. Clock-event (throttle) reasons are not part of the probe's
recording: live, they are asked of NVML here; a recording may carry them per device as
`clocks_event_reasons` (names); when neither says, the report records that they were not
checked rather than passing them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from nodeagent.acceptance.model import Check, Context, judged, measure, skipped, threshold_or
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.hardware import parse
from nodeagent.hardware.probes import nvml as nvml_probe

NAME = "gpu-state"
# nvmlClocksEventReasons bits (nvml.h): idle is the one a GPU at rest may report
REASON_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
HARMLESS = {"gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"}
DEFAULT_MAX_TEMPERATURE = 85.0
DEFAULT_IDLE_POWER_FRACTION = 0.5


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASON_BITS.items() if mask & bit]


def _live_reasons() -> dict[str, list[str]]:
    """Bus id -> clock-event reasons, asked of NVML now ({} when NVML cannot answer)."""
    try:
        import pynvml
    except ImportError:
        return {}
    out: dict[str, list[str]] = {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            bus = pynvml.nvmlDeviceGetPciInfo(h).busId
            bus = bus.decode() if isinstance(bus, bytes) else str(bus)
            getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            getter = getter or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
            with contextlib.suppress(pynvml.NVMLError):
                out[parse.normalize_bdf(bus)] = reason_names(int(getter(h)))
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return out


def _pcie(ctx: Context, dev: dict[str, Any], bus: str) -> tuple[int, int, int, int] | None:
    """(current gen, max gen, current width, max width) from NVML, else from sysfs."""
    p = dev.get("pcie") or {}
    keys = ("current_generation", "max_generation", "current_width", "max_width")
    if all(k in p for k in keys):
        return (
            int(p["current_generation"]),
            int(p["max_generation"]),
            int(p["current_width"]),
            int(p["max_width"]),
        )
    base = f"sys/bus/pci/devices/{bus}"
    speeds = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}
    try:
        cur = speeds[ctx.root.read_attr(f"{base}/current_link_speed").split()[0]]
        top = speeds[ctx.root.read_attr(f"{base}/max_link_speed").split()[0]]
        width = int(ctx.root.read_attr(f"{base}/current_link_width"))
        max_width = int(ctx.root.read_attr(f"{base}/max_link_width"))
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return cur, top, width, max_width


def _device(
    ctx: Context, dev: dict[str, Any], reasons: list[str] | None, nvswitch: bool
) -> tuple[list[vpb.Measurement], list[str]]:
    spec = ctx.spec.gpu
    bus = str(dev.get("pci_bus_id", f"index {dev.get('index')}"))
    who = f"GPU {dev.get('index')} ({bus})"
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    if dev.get("lost"):
        return [measure(bus, "lost", 1, "", "== 0", False)], [f"{who} is lost (fell off the bus)"]
    link = _pcie(ctx, dev, bus)
    if link is None:
        ms.append(measure(bus, "pcie_link", 0, "", text="not reported"))
    else:
        gen, max_gen, width, max_width = link
        ms.append(measure(bus, "pcie_generation", gen, "", f"== {max_gen}", gen == max_gen))
        ms.append(measure(bus, "pcie_width", width, "lanes", f"== {max_width}", width == max_width))
        if gen != max_gen or width != max_width:
            bad.append(
                f"{who} PCIe link at gen {gen} x{width}, capable of gen {max_gen} x{max_width}"
            )
    rows = dev.get("remapped_rows") or {}
    for flag, what in (("pending", "row remap pending"), ("failure", "row remap failure")):
        if flag in rows:
            ms.append(
                measure(bus, f"row_remap_{flag}", int(bool(rows[flag])), "", "== 0", not rows[flag])
            )
            if rows[flag]:
                bad.append(f"{who} {what} (reset the GPU; XID 63/64)")
    if dev.get("retired_pages_pending"):
        bad.append(f"{who} page retirement pending")
        ms.append(measure(bus, "retired_pages_pending", 1, "", "== 0", False))
    ecc = dev.get("ecc_errors") or {}
    if "uncorrected_volatile" in ecc:
        n = int(ecc["uncorrected_volatile"])
        ms.append(measure(bus, "ecc_uncorrected_volatile", n, "errors", "== 0", n == 0))
        if n:
            bad.append(f"{who} {n} uncorrectable ECC errors since boot")
    if reasons is None:
        ms.append(measure(bus, "clocks_event_reasons", 0, "", text="not reported"))
    else:
        active = [r for r in reasons if r not in HARMLESS]
        ms.append(
            measure(
                bus,
                "clocks_event_reasons",
                len(active),
                "",
                "== 0",
                not active,
                ",".join(reasons) or "none",
            )
        )
        if active:
            bad.append(f"{who} throttled: {', '.join(active)}")
    max_temp = threshold_or(spec.max_temperature_celsius, DEFAULT_MAX_TEMPERATURE)
    if "temperature_celsius" in dev:
        t = float(dev["temperature_celsius"])
        ms.append(measure(bus, "temperature", t, "C", f"<= {max_temp:g}", t <= max_temp))
        if t > max_temp:
            bad.append(f"{who} at {t:g} C (limit {max_temp:g} C)")
    fraction = threshold_or(spec.max_idle_power_fraction, DEFAULT_IDLE_POWER_FRACTION)
    if "power_draw_watts" in dev and dev.get("power_limit_watts"):
        draw, limit = float(dev["power_draw_watts"]), float(dev["power_limit_watts"])
        cap = fraction * limit
        ms.append(measure(bus, "power_draw", draw, "W", f"<= {cap:g}", draw <= cap))
        if draw > cap:
            bad.append(
                f"{who} draws {draw:g} W at rest (over {fraction:g} of its {limit:g} W limit)"
            )
    links = dev.get("nvlink_states")
    if nvswitch:
        up = sum(1 for s in links or [] if s)
        total = len(links or [])
        ms.append(
            measure(bus, "nvlinks_up", up, "links", f"== {total}", bool(total) and up == total)
        )
        if not total:
            bad.append(f"{who} reports no NVLinks on an NVSwitch system")
        elif up != total:
            down = [str(i) for i, s in enumerate(links or []) if not s]
            bad.append(f"{who} NVLink {','.join(down)} down ({up} of {total} up)")
    if spec.HasField("persistence_mode") and "persistence_mode" in dev:
        want, got = spec.persistence_mode, bool(dev["persistence_mode"])
        ms.append(measure(bus, "persistence_mode", int(got), "", f"== {int(want)}", got == want))
        if got != want:
            bad.append(f"{who} persistence mode {_onoff(got)}, profile wants {_onoff(want)}")
    return ms, bad


def run(ctx: Context) -> vpb.CheckResult:
    inv, expected = ctx.inventory, ctx.expected
    want = expected.gpu_count if expected.HasField("gpu_count") else len(inv.gpus)
    if not want and not inv.gpus:
        return skipped(NAME, "no NVIDIA GPU on this node and none expected")
    recording = nvml_probe.PROBE.read(ctx.root, inv)
    unreadable = not recording or not recording.get("available")
    no_driver = not ctx.root.exists("proc/driver/nvidia/version")
    if unreadable and no_driver and ctx.gpu_driver == "operator":
        # not a failure: nothing can read the GPUs before the Operator has run
        return skipped(
            NAME,
            "no host driver: the GPU Operator installs it after the join (gpu_driver = "
            "operator); the GPU state is checked once it runs",
        )
    if not recording or not recording.get("available"):
        why = (recording.get("error") if recording else "") or "no NVML recording"
        return judged(NAME, [], [f"NVML unavailable ({why}): {want} GPUs expected"])
    devices: list[dict[str, Any]] = [dict(d) for d in recording.get("devices", [])]
    live = _live_reasons() if ctx.root.is_live else {}
    nvswitch = len(inv.nvswitches) > 0
    ms = [measure("node", "gpus", len(devices), "GPUs", f"== {want}", len(devices) == want)]
    bad: list[str] = []
    if len(devices) != want:
        seen = {d.get("pci_bus_id") for d in devices}
        missing = [g.pci_address for g in inv.gpus if g.pci_address not in seen]
        where = f" (not answering: {', '.join(missing)})" if missing else ""
        bad.append(f"{len(devices)} of {want} GPUs present{where}")
    for dev in devices:
        bus = str(dev.get("pci_bus_id", ""))
        recorded = dev.get("clocks_event_reasons")
        reasons = live.get(bus) if ctx.root.is_live else recorded
        dms, dbad = _device(ctx, dev, reasons if isinstance(reasons, list) else None, nvswitch)
        ms += dms
        bad += dbad
    return judged(NAME, ms, bad)


CHECK = Check(
    NAME,
    "quick",
    "NVML: GPUs present, PCIe, ECC, row remap, throttle, NVLink",
    run,
    lambda ctx: 60.0,
)
