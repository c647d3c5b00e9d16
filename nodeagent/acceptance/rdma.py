"""rdma-link (quick) and rdma-bandwidth (standard): the compute rails.

rdma-link reads sysfs: every rail port ACTIVE and LinkUp, at the profile's rate, and its
error counters (symbol errors, link downed, link error recovery, receive errors) not growing
over the run: the baseline is read when the run starts and the check runs last, so a rail
that flaps during the load tests shows. Absolute counts are recorded, not judged: they
accumulate since the adapter came up.

rdma-bandwidth runs perftest's `ib_write_bw` between pairs of local rails (a server on one,
the client on the other, over loopback) and compares the average with a fraction of the
slower port's rate.
"""

from __future__ import annotations

import re
import time

from nodeagent.acceptance import tools
from nodeagent.acceptance.model import (
    Check,
    Context,
    Unparseable,
    judged,
    measure,
    skipped,
    threshold_or,
)
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.host import HostReadError
from nodeagent.tuning.hardware_check import compute_rails

LINK = "rdma-link"
BANDWIDTH = "rdma-bandwidth"
TOOL = "ib_write_bw"
COUNTERS = (
    "symbol_error",
    "link_downed",
    "link_error_recovery",
    "port_rcv_errors",
    "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
)
DEFAULT_BW_FRACTION = 0.8
BASE_PORT = 18515  # perftest's default port, then one per pair


def _rails(ctx: Context) -> list[str]:
    """Compute rails (the RDMA devices nearest a GPU); every RDMA device on a node without GPUs."""
    rails = [d.name for d in compute_rails(ctx.inventory)]
    return rails or [d.name for d in ctx.inventory.rdma_devices]


def _ports(ctx: Context, dev: str) -> list[str]:
    return ctx.root.listdir(f"sys/class/infiniband/{dev}/ports")


def _rate(text: str) -> float:
    """'400 Gb/sec (4X NDR)' -> 400.0."""
    m = re.match(r"\s*([\d.]+)\s*Gb/sec", text)
    return float(m.group(1)) if m else 0.0


def read_counters(ctx: Context) -> dict[str, dict[str, int]]:
    """'mlx5_0/1' -> counter -> value, for every rail port (missing counters left out)."""
    out: dict[str, dict[str, int]] = {}
    for dev in _rails(ctx):
        for port in _ports(ctx, dev):
            base = f"sys/class/infiniband/{dev}/ports/{port}/counters"
            values = {}
            for name in COUNTERS:
                try:
                    values[name] = int(ctx.root.read_attr(f"{base}/{name}"))
                except (HostReadError, ValueError):
                    continue
            out[f"{dev}/{port}"] = values
    return out


def _min_rate(ctx: Context, rates: dict[str, float]) -> tuple[float, str]:
    """The rate every rail must reach, and where that figure comes from."""
    if ctx.spec.rdma.min_rate_gbps > 0:
        return ctx.spec.rdma.min_rate_gbps, "acceptance.rdma.min_rate_gbps"
    if ctx.expected.rail_rate_gbps > 0:
        return ctx.expected.rail_rate_gbps, "expected_hardware.rail_rate_gbps"
    return max(rates.values(), default=0.0), "the fastest rail"


def run_link(ctx: Context) -> vpb.CheckResult:
    rails = _rails(ctx)
    if not rails:
        return skipped(LINK, "no RDMA adapter on this node")
    before: dict[str, dict[str, int]] = ctx.baselines.get(LINK) or {}
    after = read_counters(ctx)
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    rates: dict[str, float] = {}
    for dev in rails:
        for port in _ports(ctx, dev):
            base = f"sys/class/infiniband/{dev}/ports/{port}"
            rates[f"{dev}/{port}"] = _rate(ctx.root.attr(f"{base}/rate"))
    floor, source = _min_rate(ctx, rates)
    allowed = ctx.spec.rdma.max_error_growth
    for key, rate in rates.items():
        dev, port = key.split("/")
        base = f"sys/class/infiniband/{dev}/ports/{port}"
        state = ctx.root.attr(f"{base}/state").split(":")[-1].strip()
        phys = ctx.root.attr(f"{base}/phys_state").split(":")[-1].strip()
        up = state == "ACTIVE" and phys == "LinkUp"
        ms.append(measure(key, "state", int(up), "", "ACTIVE/LinkUp", up, f"{state}/{phys}"))
        if not up:
            bad.append(f"{dev} port {port} is {state}/{phys}")
            continue
        ms.append(measure(key, "rate", rate, "Gb/s", f">= {floor:g}", rate >= floor))
        if rate < floor:
            bad.append(f"{dev} port {port} at {rate:g} Gb/s, below {floor:g} Gb/s ({source})")
        for name, value in after.get(key, {}).items():
            grew = value - before.get(key, {}).get(name, value)
            ok = grew <= allowed
            ms.append(measure(key, f"{name}_growth", grew, "", f"<= {allowed}", ok, f"now {value}"))
            if not ok:
                bad.append(f"{dev} port {port} {name} grew by {grew} during the run")
    if not before:
        ms.append(measure("node", "counter_baseline", 0, "", text="none: growth not judged"))
    return judged(LINK, ms, bad)


LINK_CHECK = Check(
    LINK,
    "quick",
    "RDMA rails: link state, rate, error counters not growing over the run",
    run_link,
    lambda ctx: 60.0,
    baseline=read_counters,
)

# ------------------------------------------------------------------------- ib_write_bw

_BW_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")
_VERSION = re.compile(r"Version\s*:\s*(\S+)")


def parse_bw(out: bytes) -> tuple[float, str]:
    """(BW average in Gb/s of the last row, perftest version if printed)."""
    text = out.decode("utf-8", "replace")
    if "BW average[Gb/sec]" not in text:
        raise Unparseable(TOOL, out, "no 'BW average[Gb/sec]' table (run with --report_gbits)")
    rows = [m for line in text.splitlines() if (m := _BW_ROW.match(line))]
    if not rows:
        raise Unparseable(TOOL, out, "no result rows")
    version = _VERSION.search(text)
    return float(rows[-1].group(4)), version.group(1) if version else ""


def _pair(ctx: Context, server: str, client: str, port: int) -> tuple[float, float]:
    """(average Gb/s, the slower port's rate) of one server/client pair over loopback."""
    path = tools.find(ctx, TOOL)
    assert path is not None
    common = ["--report_gbits", "-D", "5", "-p", str(port), "-F"]
    srv_argv = [path, "-d", server, *common]
    cli_argv = [path, "-d", client, *common, "127.0.0.1"]
    began = time.monotonic()
    srv = tools.start(ctx, srv_argv)
    time.sleep(0.2)  # the client gives up at once when nothing listens yet
    out = tools.run(ctx, cli_argv)
    tools.finish(ctx, srv, srv_argv, began)
    bw, version = parse_bw(out.stdout)
    for run in ctx.tools[-2:]:
        run.version = version
    rates = [
        _rate(ctx.root.attr(f"sys/class/infiniband/{d}/ports/1/rate")) for d in (server, client)
    ]
    return bw, min(rates)


def run_bandwidth(ctx: Context) -> vpb.CheckResult:
    if tools.find(ctx, TOOL) is None:
        return skipped(BANDWIDTH, "ib_write_bw (perftest) not installed")
    rails = _rails(ctx)
    if len(rails) < 2:
        return skipped(BANDWIDTH, f"{len(rails)} RDMA rail(s): a pair is needed")
    fraction = threshold_or(ctx.spec.rdma.min_bw_fraction, DEFAULT_BW_FRACTION)
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    for i in range(0, len(rails) - 1, 2):
        server, client = rails[i], rails[i + 1]
        bw, rate = _pair(ctx, server, client, BASE_PORT + i // 2)
        floor = fraction * rate
        subject = f"{server}<->{client}"
        ms.append(measure(subject, "write_bw", bw, "Gb/s", f">= {floor:g}", bw >= floor))
        if bw < floor:
            bad.append(f"{subject}: ib_write_bw {bw:g} Gb/s, below {fraction:g} of {rate:g} Gb/s")
    return judged(BANDWIDTH, ms, bad)


def _bw_timeout(ctx: Context) -> float:
    return 30.0 * max(1, len(_rails(ctx)) // 2)


BANDWIDTH_CHECK = Check(
    BANDWIDTH, "standard", "ib_write_bw between pairs of local rails", run_bandwidth, _bw_timeout
)
