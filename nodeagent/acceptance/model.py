"""What every check shares: levels, the context a check reads, and how results are built.

A check never raises for a finding: it returns a CheckResult whose reason names the device,
so a report always says which GPU, rail or drive held the node back. Exceptions are left for
bugs and for `Unparseable`, which the runner turns into a failure showing the first bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.host import HostRoot

LEVELS = ("quick", "standard", "long")
PASS, FAIL, SKIP = vpb.VERDICT_PASS, vpb.VERDICT_FAIL, vpb.VERDICT_SKIP
VERDICT_NAMES = {PASS: "pass", FAIL: "FAIL", SKIP: "skip", vpb.CHECK_VERDICT_UNSPECIFIED: "-"}


def level_rank(level: str) -> int:
    """quick 0, standard 1, long 2; anything else is a usage error the caller reports."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; known: {', '.join(LEVELS)}")
    return LEVELS.index(level)


class Unparseable(ValueError):
    """A tool's output that does not parse: the check fails and shows the first bytes."""

    def __init__(self, tool: str, output: bytes | str, why: str = "") -> None:
        raw = output.encode() if isinstance(output, str) else output
        head = raw[:120].decode("utf-8", "replace")
        self.tool = tool
        super().__init__(f"{tool} output is unparseable{f' ({why})' if why else ''}: {head!r}")


@dataclass
class Context:
    """What a check may read. `tools`, `cancel` and `processes` belong to the check that is
    running: the runner resets them before each one and kills `processes` on a timeout."""

    root: HostRoot
    inventory: pb.HardwareInventory
    spec: vpb.AcceptanceSpec
    expected: tpb.ExpectedHardware
    level: str
    path: str  # where tools are looked up (PATH)
    workdir: Path
    gpu_driver: str = "host"
    baselines: dict[str, Any] = field(default_factory=dict)
    tools: list[vpb.ToolRun] = field(default_factory=list)
    deadline: float = 0.0  # time.monotonic() at which the running check times out
    cancel: threading.Event = field(default_factory=threading.Event)
    processes: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One acceptance check. `baseline`, when given, reads counters at the start of the run
    so `run` can judge their growth over the whole run (the checks that have one run last)."""

    name: str
    level: str  # the lowest level it runs at
    what: str  # one line for docs and `--only` help
    run: Callable[[Context], vpb.CheckResult]
    timeout: Callable[[Context], float]
    baseline: Callable[[Context], Any] | None = None


def measure(
    subject: str,
    metric: str,
    value: float,
    unit: str,
    threshold: str = "",
    ok: bool | None = None,
    text: str = "",
) -> vpb.Measurement:
    """A measurement; `ok` None means recorded only (no threshold applies)."""
    verdict = vpb.CHECK_VERDICT_UNSPECIFIED if ok is None else (PASS if ok else FAIL)
    return vpb.Measurement(
        subject=subject,
        metric=metric,
        value=value,
        unit=unit,
        threshold=threshold,
        verdict=verdict,
        text=text,
    )


def skipped(name: str, reason: str) -> vpb.CheckResult:
    return vpb.CheckResult(name=name, verdict=SKIP, reason=reason)


def judged(name: str, measurements: list[vpb.Measurement], problems: list[str]) -> vpb.CheckResult:
    """Fail with every problem in the reason (each names its device), else pass."""
    result = vpb.CheckResult(name=name, measurements=measurements)
    result.verdict = FAIL if problems else PASS
    result.reason = "; ".join(problems)
    return result


def threshold_or(value: float, default: float) -> float:
    """A profile threshold (0: not set) or its default."""
    return value if value > 0 else default
