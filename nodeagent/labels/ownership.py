"""Keys the NVIDIA GPU Operator owns: never written, whatever a family or a user asks.

The operator drives its operands from these labels (`gpu.deploy.<operand>` turns the
driver, device plugin, DCGM ... on and off per node); a second writer would fight it.
"""

from __future__ import annotations

OWNED_KEYS = frozenset(
    {
        "nvidia.com/gpu.present",
        "nvidia.com/gpu.deploy.operands",
        "nvidia.com/gpu.workload.config",
        "nvidia.com/mig.config",
        "nvidia.com/device-plugin.config",
    }
)
OWNED_PREFIXES = ("nvidia.com/gpu.deploy.", "nvidia.com/gpu-driver-upgrade-")


def owned_by_gpu_operator(key: str) -> bool:
    return key in OWNED_KEYS or key.startswith(OWNED_PREFIXES)


def drop_owned(labels: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(labels without operator-owned keys, the keys dropped)."""
    dropped = sorted(k for k in labels if owned_by_gpu_operator(k))
    return {k: v for k, v in labels.items() if k not in dropped}, dropped
