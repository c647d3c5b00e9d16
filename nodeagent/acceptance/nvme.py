"""nvme-health (quick) and nvme-read (standard): the data drives.

nvme-health: every controller `live` in sysfs, and its SMART critical warning zero when
nvme-cli can say (`nvme smart-log -o json`; without it the report records that SMART was not
read). nvme-read: a read-only fio sequential-read and 4 KiB random-read job per namespace,
against the profile's thresholds. fio runs with `--readonly`, which refuses any write, so a
drive with a filesystem is never written; the drive holding `/` or `/boot` is left out.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from nodeagent.acceptance import tools
from nodeagent.acceptance.model import Check, Context, Unparseable, judged, measure, skipped
from nodeagent.api.v1 import validate_pb2 as vpb

HEALTH = "nvme-health"
READ = "nvme-read"
DEFAULT_RUNTIME = 10
DEFAULT_SIZE = "1G"
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi")


def run_health(ctx: Context) -> vpb.CheckResult:
    ctrls = list(ctx.inventory.nvme_controllers)
    if not ctrls:
        return skipped(HEALTH, "no NVMe controller on this node")
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    want = ctx.expected.nvme_count if ctx.expected.HasField("nvme_count") else len(ctrls)
    ms.append(measure("node", "controllers", len(ctrls), "", f"== {want}", len(ctrls) == want))
    if len(ctrls) != want:
        bad.append(f"{len(ctrls)} of {want} NVMe drives present")
    nvme_cli = tools.find(ctx, "nvme")
    for c in ctrls:
        state = ctx.root.attr(f"sys/class/nvme/{c.name}/state", c.state) or "unknown"
        ms.append(
            measure(c.name, "state", int(state == "live"), "", "live", state == "live", state)
        )
        if state != "live":
            bad.append(f"{c.name} ({c.serial}) is {state}")
            continue
        if nvme_cli is None or not ctx.root.is_live:
            continue
        out = tools.run(ctx, [nvme_cli, "smart-log", f"/dev/{c.name}", "-o", "json"])
        try:
            warning = int(json.loads(out.stdout)["critical_warning"])
        except (ValueError, KeyError, TypeError):
            raise Unparseable("nvme smart-log", out.stdout) from None
        ms.append(measure(c.name, "critical_warning", warning, "", "== 0", warning == 0))
        if warning:
            bad.append(f"{c.name} ({c.serial}) SMART critical warning 0x{warning:02x}")
    if nvme_cli is None:
        ms.append(measure("node", "smart", 0, "", text="nvme-cli not installed: SMART not read"))
    return judged(HEALTH, ms, bad)


HEALTH_CHECK = Check(
    HEALTH, "quick", "NVMe controllers live, SMART critical warning", run_health, lambda c: 60.0
)


def _system_disks(ctx: Context) -> set[str]:
    """Block devices holding / or /boot (by /proc/mounts), by kernel name prefix."""
    out = set()
    for line in ctx.root.attr("proc/mounts").splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] in SYSTEM_MOUNTS and fields[0].startswith("/dev/"):
            out.add(os.path.basename(fields[0]))
    return out


def targets(ctx: Context) -> list[tuple[str, str]]:
    """(namespace, device path) for each data namespace with a device node in the root."""
    system = _system_disks(ctx)
    out = []
    for c in ctx.inventory.nvme_controllers:
        for ns in c.namespaces:
            if any(s == ns.name or s.startswith(f"{ns.name}p") for s in system):
                continue
            path = ctx.root.host_path(f"dev/{ns.name}")
            if os.path.exists(path):
                out.append((ns.name, path))
    return out


def _fio_job(ctx: Context, fio: str, path: str, rw: str, bs: str, version: str) -> float:
    """One read-only job; bandwidth in MB/s (rw=read) or IOPS (randread)."""
    spec = ctx.spec.nvme
    block = stat.S_ISBLK(os.stat(path).st_mode)
    argv = [
        fio,
        f"--name={rw}",
        f"--filename={path}",
        "--readonly",
        f"--rw={rw}",
        f"--bs={bs}",
        "--ioengine=libaio" if block else "--ioengine=psync",
        "--iodepth=32" if block else "--iodepth=1",
        f"--direct={int(block)}",
        f"--size={spec.size or DEFAULT_SIZE}",
        f"--runtime={spec.runtime_seconds or DEFAULT_RUNTIME}",
        "--time_based",
        "--output-format=json",
    ]
    out = tools.run(ctx, argv, version)
    try:
        job: dict[str, Any] = json.loads(out.stdout[out.stdout.find(b"{") :])["jobs"][0]
        read = job["read"]
        return float(read["bw"]) * 1024 / 1e6 if rw == "read" else float(read["iops"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise Unparseable("fio", out.stdout or out.stderr) from None


def run_read(ctx: Context) -> vpb.CheckResult:
    fio = tools.find(ctx, "fio")
    if fio is None:
        return skipped(READ, "fio not installed")
    found = targets(ctx)
    if not found:
        return skipped(READ, "no NVMe data namespace with a device node")
    version = tools.version_of(ctx, [fio, "--version"])
    spec = ctx.spec.nvme
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    for ns, path in found:
        mbs = _fio_job(ctx, fio, path, "read", "1M", version)
        floor = spec.min_seq_read_mbytes
        ok = mbs >= floor if floor else None
        ms.append(measure(ns, "seq_read", mbs, "MB/s", f">= {floor:g}" if floor else "", ok))
        if ok is False:
            bad.append(f"{ns} reads {mbs:.0f} MB/s sequentially, below {floor:g} MB/s")
        iops = _fio_job(ctx, fio, path, "randread", "4k", version)
        floor = spec.min_rand_read_iops
        ok = iops >= floor if floor else None
        ms.append(measure(ns, "rand_read", iops, "IOPS", f">= {floor:g}" if floor else "", ok))
        if ok is False:
            bad.append(f"{ns} reads {iops:.0f} IOPS at random, below {floor:g} IOPS")
    result = judged(READ, ms, bad)
    if not bad and not (spec.min_seq_read_mbytes or spec.min_rand_read_iops):
        result.reason = "no nvme thresholds in the profile: speeds recorded, not judged"
    return result


def _read_timeout(ctx: Context) -> float:
    per_job = (ctx.spec.nvme.runtime_seconds or DEFAULT_RUNTIME) + 30
    return 30.0 + 2 * per_job * max(1, len(ctx.inventory.nvme_controllers))


READ_CHECK = Check(
    READ, "standard", "fio read-only sequential and random reads", run_read, _read_timeout
)
