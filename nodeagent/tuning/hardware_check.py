"""Expected hardware: what the profile says the node has, against what discovery found.

Mismatches are not drift (no apply fixes a missing GPU); the inventory service turns them
into QUARANTINED with the reason, so each reason is one line a person can act on.
"""

from __future__ import annotations

import fnmatch

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb


def _mismatch(item: str, expected: object, actual: object, reason: str) -> tpb.HardwareMismatch:
    return tpb.HardwareMismatch(
        item=item, expected=str(expected), actual=str(actual), reason=reason
    )


def compute_rails(inv: pb.HardwareInventory) -> list[pb.RdmaDevice]:
    """RDMA devices nearest to a GPU: the compute fabric's rails (storage NICs are not)."""
    names = {n for g in inv.gpus for n in g.nearest_rdma_devices}
    return [d for d in inv.rdma_devices if d.name in names]


def expected_hardware(
    exp: tpb.ExpectedHardware, inv: pb.HardwareInventory
) -> list[tpb.HardwareMismatch]:
    out: list[tpb.HardwareMismatch] = []
    if exp.HasField("gpu_count") and len(inv.gpus) != exp.gpu_count:
        out.append(
            _mismatch(
                "gpu_count",
                exp.gpu_count,
                len(inv.gpus),
                f"{len(inv.gpus)} of {exp.gpu_count} GPUs",
            )
        )
    if exp.gpu_model:
        wrong = [g for g in inv.gpus if not fnmatch.fnmatchcase(g.model, exp.gpu_model)]
        for g in wrong:
            out.append(
                _mismatch(
                    f"gpu {g.index}",
                    exp.gpu_model,
                    g.model,
                    f"GPU {g.index} is {g.model or 'unidentified'}",
                )
            )
    rails = compute_rails(inv)
    if exp.HasField("compute_rails") and len(rails) != exp.compute_rails:
        out.append(
            _mismatch(
                "compute_rails",
                exp.compute_rails,
                len(rails),
                f"{len(rails)} of {exp.compute_rails} compute rails",
            )
        )
    for dev in rails:
        for port in dev.ports:
            rail = f"rail {dev.name}/{port.port}"
            if exp.rail_link_layer and port.link_layer != exp.rail_link_layer:
                out.append(
                    _mismatch(
                        rail,
                        exp.rail_link_layer,
                        port.link_layer,
                        f"{rail} runs {port.link_layer or 'no link layer'}",
                    )
                )
            if exp.rail_rate_gbps and port.rate_gbps < exp.rail_rate_gbps:
                out.append(
                    _mismatch(
                        rail,
                        f"{exp.rail_rate_gbps:g} Gb/s",
                        f"{port.rate_gbps:g} Gb/s",
                        f"{rail} at {port.rate_gbps:g} Gb/s",
                    )
                )
            if exp.rail_rate_gbps and port.state and port.state != "ACTIVE":
                out.append(_mismatch(rail, "ACTIVE", port.state, f"{rail} is {port.state}"))
    if exp.HasField("nvme_count") and len(inv.nvme_controllers) != exp.nvme_count:
        n = len(inv.nvme_controllers)
        out.append(_mismatch("nvme_count", exp.nvme_count, n, f"{n} of {exp.nvme_count} NVMe"))
    return out
