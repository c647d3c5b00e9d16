"""Who owns a node's NVIDIA driver: the host (installed on the image, the default) or the
NVIDIA GPU Operator (a driver container per node).

One place for the words and for what changes with them, because three layers act on the
choice: preflight (which checks can pass), tuning (which units and modules are ours to
enable) and the inventory's gpu-operator export (what the Operator must be told). With the
Operator, its driver container loads nvidia, nvidia-uvm, nvidia-modeset and nvidia-peermem
itself and runs persistenced and fabric manager beside them; a host copy of any of these
fights it for the device, so tuning must leave them out rather than install them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.api.v1 import tuning_pb2 as tpb

HOST = "host"
OPERATOR = "operator"
MODES = (HOST, OPERATOR)
# host kernel modules the Operator's driver container refuses to start beside (/proc/modules)
HOST_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem")
# what the Operator's containers run, so an operator-mode profile must not enable on the host
OPERATOR_SERVICES = ("nvidia-persistenced", "nvidia-fabricmanager")
OPERATOR_MODULES = ("nvidia_peermem",)
LEFT_TO_OPERATOR = "left to the GPU Operator"


def check(mode: str, what: str = "gpu_driver") -> str:
    """`mode` when it is a mode or "" (not set here: inherit); ValueError names `what`."""
    if mode not in ("", *MODES):
        raise ValueError(f"{what} {mode[:40]!r}: one of {', '.join(MODES)}")
    return mode


def effective(*choices: str) -> str:
    """The most specific choice that is set (callers pass node, profile, cluster in that
    order), else host: a node nobody told otherwise keeps the driver its image carries."""
    return next((check(c) for c in choices if c), HOST)


def _module(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class ForMode:
    profile: tpb.TuningProfile  # what tuning verifies and applies in this mode
    left_out: list[str]  # "service nvidia-persistenced", ...: the Operator's, not ours


def for_mode(profile: tpb.TuningProfile, mode: str) -> ForMode:
    """The profile as a node in `mode` is tuned: in operator mode without the services and
    modules the Operator runs. Module options stay: verify reads the running parameter,
    which the Operator's ConfigMap sets (the gpu-operator export carries them)."""
    out = tpb.TuningProfile()
    out.CopyFrom(profile)
    if check(mode) != OPERATOR:
        return ForMode(out, [])
    os_ = out.os
    services = [s for s in os_.services if s.removesuffix(".service") in OPERATOR_SERVICES]
    modules = [m for m in os_.modules if _module(m) in OPERATOR_MODULES]
    kept_services = [s for s in os_.services if s not in services]
    kept_modules = [m for m in os_.modules if m not in modules]
    del os_.services[:]
    os_.services.extend(kept_services)
    del os_.modules[:]
    os_.modules.extend(kept_modules)
    left = [f"service {s}" for s in services] + [f"module {m}" for m in modules]
    return ForMode(out, left)


def notes(left_out: list[str]) -> list[str]:
    """The plan's line for what operator mode left out ([] when nothing was)."""
    return [f"{LEFT_TO_OPERATOR}: {', '.join(left_out)}"] if left_out else []
