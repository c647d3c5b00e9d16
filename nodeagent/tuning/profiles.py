"""Where profiles live and which one a node gets.

A node takes the profile the inventory assigned it; without an assignment, the profile
whose selector matches its hardware (the highest `priority`, then the most specific
selector). Two equally good matches are an error: guessing between two golden images is
how a fleet ends up half-tuned.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning.loader import ProfileError, load_file
from nodeagent.tuning.shipped import SHIPPED

SITE_DIR = Path("/etc/nodeagent/profiles")


# what a profile may be called when the name comes over the wire (the agent's API): a
# file name in a profile directory, never a path
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def installed_name(name: str) -> str:
    """`name` if it can only name an installed profile; a path from the wire is refused."""
    if not PROFILE_NAME.fullmatch(name):
        raise ValueError(
            f"profile {name[:80]!r}: give the name of an installed profile, not a path"
        )
    return name


class NoProfile(LookupError):
    """No profile by that name, or none (or two) matching the hardware."""


def profile_dirs(extra: str | os.PathLike[str] | None = None) -> list[Path]:
    """Search order: --profiles-dir, $NODEAGENT_PROFILES_DIR, /etc/nodeagent/profiles, the
    shipped ones: a site's own file of the same name wins over the one the package ships."""
    dirs = [Path(extra)] if extra else []
    dirs += [Path(p) for p in os.environ.get("NODEAGENT_PROFILES_DIR", "").split(":") if p]
    dirs += [SITE_DIR, SHIPPED]
    return dirs


def find(name_or_path: str, dirs: Sequence[Path]) -> tpb.TuningProfile:
    """A profile by file path (contains '/' or ends in .yaml) or by name."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return load_file(name_or_path)
    for d in dirs:
        for suffix in (".yaml", ".yml"):
            candidate = d / f"{name_or_path}{suffix}"
            if candidate.is_file():
                return load_file(candidate, dirs)
    known = sorted({p.stem for d in dirs for p in _files(d)})
    raise NoProfile(f"no profile named {name_or_path!r} (known: {', '.join(known) or 'none'})")


def _files(d: Path) -> Iterable[Path]:
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")]) if d.is_dir() else []


def load_all(dirs: Sequence[Path]) -> list[tpb.TuningProfile]:
    """Every profile a node can take, the first directory winning for a name; a bad file is
    an error. Abstract bases (ncp-base) are loaded, so a broken base fails here too, but left
    out: they describe no server, and a selector must never pick one."""
    seen: dict[str, tpb.TuningProfile] = {}
    for d in dirs:
        for path in _files(d):
            if path.stem not in seen:
                seen[path.stem] = load_file(path, dirs)
    return [p for p in seen.values() if not p.abstract]


def _glob_any(patterns: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def selector_score(sel: tpb.ProfileSelector, inv: pb.HardwareInventory) -> int | None:
    """None when the selector does not match; otherwise how many conditions it checked."""
    checks: list[bool] = []
    if sel.gpu_models:
        checks.append(bool(inv.gpus) and all(_glob_any(sel.gpu_models, g.model) for g in inv.gpus))
    if sel.HasField("gpu_count"):
        checks.append(len(inv.gpus) == sel.gpu_count)
    if sel.system_vendors:
        checks.append(_glob_any(sel.system_vendors, inv.system.vendor))
    if sel.system_products:
        checks.append(_glob_any(sel.system_products, inv.system.product))
    if sel.cpu_vendors:
        checks.append(_glob_any(sel.cpu_vendors, inv.cpu.vendor))
    if not checks or not all(checks):
        return None
    return len(checks)


def select(
    profiles: Sequence[tpb.TuningProfile], inv: pb.HardwareInventory, assigned: str = ""
) -> tpb.TuningProfile:
    """The assigned profile, else the best selector match."""
    if assigned:
        for p in profiles:
            if p.name == assigned:
                return p
        raise NoProfile(f"assigned profile {assigned!r} is not installed")
    ranked = sorted(
        (
            (p.selector.priority, score, p)
            for p in profiles
            if (score := selector_score(p.selector, inv)) is not None
        ),
        key=lambda t: (t[0], t[1]),
        reverse=True,
    )
    if not ranked:
        raise NoProfile(
            f"no profile selector matches this node ({inv.system.vendor} "
            f"{inv.system.product}, {len(inv.gpus)} GPUs); pass --profile"
        )
    if len(ranked) > 1 and ranked[0][:2] == ranked[1][:2]:
        raise NoProfile(
            f"profiles {ranked[0][2].name!r} and {ranked[1][2].name!r} match this "
            "node equally; raise one's selector.priority or pass --profile"
        )
    return ranked[0][2]


def resolve(
    spec: str | None, inv: pb.HardwareInventory, dirs: Sequence[Path], assigned: str = ""
) -> tpb.TuningProfile:
    """--profile if given, else the assignment, else the selector."""
    if spec:
        profile = find(spec, dirs)
        if profile.abstract:
            raise NoProfile(
                f"profile {profile.name!r} is an abstract base that other profiles extend; "
                "give one of those"
            )
        return profile
    return select(load_all(dirs), inv, assigned)


__all__ = [
    "SHIPPED",
    "NoProfile",
    "ProfileError",
    "find",
    "installed_name",
    "load_all",
    "profile_dirs",
    "resolve",
    "select",
]
