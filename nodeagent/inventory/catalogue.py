"""The golden profiles the inventory host knows: which names a token or an assignment may
carry, and whether a profile fits a node's hardware.

The inventory ships no hardware, but it hands profile names to agents that tune by them:
a name no agent can find only fails later, on the node, after the reinstall. So a name is
checked where it is given, against the profiles this host has, found the way `nodeagent
tune` finds them (`profiles_dir`, $NODEAGENT_PROFILES_DIR, /etc/nodeagent/profiles, the
shipped ones). Files are re-read when one changes (checked at most once a second), so a
site profile dropped into /etc/nodeagent/profiles counts without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import hardware_check, profiles
from nodeagent.tuning.loader import ProfileError, load_file

log = logging.getLogger("nodeagent.inventory")
RECHECK_SECONDS = 1.0
# expected_hardware items that are counts, and what one of them is called
COUNTS = {"gpu_count": "GPUs", "compute_rails": "compute rails", "nvme_count": "NVMe drives"}

Signature = tuple[tuple[str, int, int], ...]


class UnknownProfile(ValueError):
    """A name no profile directory of the inventory host has (INVALID_ARGUMENT)."""


class ProfileCatalogue:
    def __init__(self, profiles_dir: str = "") -> None:
        self.profiles_dir = profiles_dir
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._checked = 0.0
        self._known: dict[str, tpb.TuningProfile] = {}
        self._broken: dict[str, str] = {}

    def _files(self) -> list[Path]:
        """Every profile file, in search order: the first directory wins for a name."""
        out: list[Path] = []
        for d in profiles.profile_dirs(self.profiles_dir or None):
            if d.is_dir():
                out += sorted([*d.glob("*.yaml"), *d.glob("*.yml")])
        return out

    def _refresh(self) -> None:
        """Re-read the files when one changed, looking at most once a second: a site
        profile added or fixed counts without a restart, and a registration wave does not
        stat the directories once per node."""
        now = time.monotonic()
        if self._signature is not None and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        files, stamps = [], []
        for path in self._files():
            try:
                st = path.stat()
            except OSError:  # removed while we looked: it is not there
                continue
            files.append(path)
            stamps.append((str(path), st.st_mtime_ns, st.st_size))
        signature: Signature = tuple(stamps)
        if signature == self._signature:
            return
        known: dict[str, tpb.TuningProfile] = {}
        broken: dict[str, str] = {}
        for path in files:
            if path.stem in known or path.stem in broken:
                continue
            try:
                known[path.stem] = load_file(path)
            except (ProfileError, OSError) as exc:
                broken[path.stem] = str(exc).splitlines()[0]
                log.warning("profile %s does not load: %s", path, broken[path.stem])
        self._known, self._broken, self._signature = known, broken, signature

    def get(self, name: str) -> tpb.TuningProfile:
        """The profile called `name`; UnknownProfile says which names there are."""
        with self._lock:
            self._refresh()
            profile = self._known.get(name)
            if profile is not None:
                return profile
            if name in self._broken:
                raise UnknownProfile(
                    f"profile {name!r} does not load on the inventory host: {self._broken[name]}"
                )
            known = ", ".join(sorted(self._known)) or "none"
        raise UnknownProfile(
            f"unknown profile {name[:64]!r}: the inventory knows {known} (site profiles go in "
            "/etc/nodeagent/profiles on the inventory host and on the nodes)"
        )

    def fit(self, name: str, inv: pb.HardwareInventory) -> list[str]:
        """Why `name` does not fit this hardware, one line each; [] when it fits."""
        try:
            return misfits(self.get(name), inv)
        except UnknownProfile as exc:
            return [str(exc)]
        except Exception as exc:  # a warning's check must never stop an enrolment
            log.warning("profile check of %s failed: %s", name, exc)
            return []


def misfits(profile: tpb.TuningProfile, inv: pb.HardwareInventory) -> list[str]:
    """What the profile's expected_hardware says and the node lacks; when it expects
    nothing, whether its selector (what it was written for) matches the node."""
    name = profile.name
    out: list[str] = []
    models: set[str] = set()
    rails: list[str] = []
    for m in hardware_check.expected_hardware(profile.expected_hardware, inv):
        if m.item in COUNTS:
            out.append(
                f"profile {name} expects {m.expected} {COUNTS[m.item]}; this node has {m.actual}"
            )
        elif m.item.startswith("gpu "):
            models.add(m.actual or "unidentified")
        else:
            rails.append(m.reason)
    if models:
        out.append(
            f"profile {name} expects {profile.expected_hardware.gpu_model} GPUs; "
            f"this node has {', '.join(sorted(models))}"
        )
    if rails:
        exp = profile.expected_hardware
        rate = f"at {exp.rail_rate_gbps:g} Gb/s" if exp.rail_rate_gbps else ""
        want = " ".join(w for w in (exp.rail_link_layer, "compute rails", rate) if w)
        more = f" and {len(rails) - 3} more" if len(rails) > 3 else ""
        out.append(f"profile {name} expects {want}; this node has {', '.join(rails[:3])}{more}")
    sel = profile.selector
    conditions = (
        sel.gpu_models or sel.system_vendors or sel.system_products or sel.cpu_vendors
    ) or sel.HasField("gpu_count")
    if not out and conditions and profiles.selector_score(sel, inv) is None:
        out.append(
            f"profile {name} is not written for this node ({inv.system.vendor} "
            f"{inv.system.product}, {len(inv.gpus)} GPUs): its selector does not match"
        )
    return out
