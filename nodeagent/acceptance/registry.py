"""Every check, in the order a run takes them: the load tests first, then the checks that
judge counter growth (their baseline was read when the run started), so the window covers
the load. The names are the ones a profile may require (nodeagent.tuning.schema)."""

from __future__ import annotations

from nodeagent.acceptance import dcgm, gpu, memory, nccl, nvme, rdma
from nodeagent.acceptance.model import Check, level_rank

CHECKS: tuple[Check, ...] = (
    gpu.CHECK,
    dcgm.CHECK,
    nccl.CHECK,
    rdma.BANDWIDTH_CHECK,
    nvme.HEALTH_CHECK,
    nvme.READ_CHECK,
    rdma.LINK_CHECK,
    memory.CHECK,
)
BY_NAME = {c.name: c for c in CHECKS}


def select(level: str, only: list[str] | tuple[str, ...] = ()) -> list[Check]:
    """The checks of `level` (and the levels below), or the `only` ones among them."""
    rank = level_rank(level)
    unknown = [n for n in only if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; known: {', '.join(BY_NAME)}")
    above = [n for n in only if level_rank(BY_NAME[n].level) > rank]
    if above:
        check = BY_NAME[above[0]]
        raise ValueError(f"{check.name} runs at level {check.level} and above, not {level}")
    return [c for c in CHECKS if level_rank(c.level) <= rank and (not only or c.name in only)]
