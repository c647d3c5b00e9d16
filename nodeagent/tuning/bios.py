"""BIOS settings over Redfish (sushy): resolve intents, compare current and pending, write.

sushy follows the links a BMC publishes (Systems -> Bios -> @Redfish.Settings ->
AttributeRegistry), so no vendor path is hard-coded: Dell's /Bios/Settings, HPE's lower
case /bios/settings and sushy-tools' /BIOS all come from the service itself. Abstract
intents resolve to the vendor's attribute names by looking candidate names up in the live
registry (Supermicro names carry a per-board `#hex` suffix, so names match by prefix) and
values by the registry's ValueNames; an intent no candidate fits is reported as
MAPPING_MISSING, never guessed. Settings are compared with the current *and* pending
values: pending = desired before a reboot is PENDING, not drift (redfish_bios.md §1).

Credentials live in BmcTarget only; its repr leaves the password out and no message built
here contains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import validators as v

OK, DRIFT, PENDING, UNKNOWN = (
    tpb.SETTING_OK,
    tpb.SETTING_DRIFT,
    tpb.SETTING_PENDING,
    tpb.SETTING_UNKNOWN,
)
_ED = {"enabled": ["Enabled", "Enable"], "disabled": ["Disabled", "Disable"]}
# intent -> candidate (attribute name, intent value -> acceptable ValueNames), in order;
# from redfish_bios.md §3 (Dell, HPE, Lenovo, Supermicro). Unverified names are left out.
CANDIDATES: dict[str, list[tuple[str, dict[str, list[str]]]]] = {
    "performance_profile": [
        ("SysProfile", {"maximum": ["PerfOptimized"], "balanced": ["PerfPerWattOptimizedDapc"]}),
        (
            "WorkloadProfile",
            {
                "maximum": ["HighPerformanceCompute(HPC)", "HighPerformanceCompute"],
                "balanced": ["GeneralPowerEfficientCompute"],
            },
        ),
        (
            "OperatingModes_ChooseOperatingMode",
            {"maximum": ["MaximumPerformance"], "balanced": ["EfficiencyFavorPerformance"]},
        ),
    ],
    "c_states": [
        ("ProcCStates", _ED),
        ("MinProcIdlePower", {"disabled": ["NoCStates"], "enabled": ["C6"]}),
        (
            "Processors_CStates",
            {"disabled": ["Disable", "Disabled"], "enabled": ["Autonomous", "Legacy"]},
        ),
    ],
    "sub_numa_clustering": [
        ("SubNumaCluster", _ED),
        ("SubNumaClustering", _ED),
        ("Processors_SNC", _ED),
    ],
    "aspm": [("PcieAspmL1", _ED)],
    "virtualization": [
        ("ProcVirtualization", _ED),
        ("Processors_IntelVirtualizationTechnology", _ED),
        ("Processors_SVMMode", _ED),
        ("IntelVirtualizationTechnology", _ED),
    ],
    "iommu": [
        ("IntelProcVtd", _ED),
        ("ProcAmdIoVt", _ED),
        ("IntelVTforDirectedI/O(VT-d)", _ED),
        ("IOMMUSupport", _ED),
    ],
    "sriov": [("SriovGlobalEnable", _ED), ("Sriov", _ED), ("SR-IOVSupport", _ED)],
    "turbo": [("ProcTurboMode", _ED), ("ProcTurbo", _ED), ("Processors_TurboMode", _ED)],
}


class BiosError(RuntimeError):
    """The BMC could not be reached or refused a request; never carries credentials."""


@dataclass(frozen=True)
class BmcTarget:
    url: str  # https://bmc.example (no user:password@)
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True
    system_id: str = ""  # empty: the only system

    def __post_init__(self) -> None:
        v.check("bmc_url", self.url)


@dataclass
class Attribute:
    name: str  # the full name on this BMC
    kind: str  # Enumeration, String, Integer, Boolean (from the registry; "" unknown)
    values: list[str]  # allowed ValueNames


@dataclass
class Desired:
    setting: str  # bios:c_states, bios:attr:QuietBoot
    attribute: str  # resolved full name, '' when missing
    value: Any
    shown: str


def _registry(bios: Any) -> dict[str, Attribute]:
    """Attributes by full name from the live registry; {} when the BMC publishes none."""
    try:
        reg = bios.get_attribute_registry(language="en")
    except Exception:  # a missing or broken registry is not fatal: current names remain
        return {}
    out: dict[str, Attribute] = {}
    for a in getattr(getattr(reg, "registry_entries", None), "attributes", None) or []:
        values = [
            str(x.get("ValueName")) for x in (a.allowable_values or []) if isinstance(x, dict)
        ]
        out[str(a.name)] = Attribute(str(a.name), str(a.attribute_type or ""), values)
    return out


def _by_prefix(names: dict[str, Attribute]) -> dict[str, Attribute]:
    """Supermicro's `QuietBoot#002E` is found as `QuietBoot`; exact names win."""
    out = {n.split("#", 1)[0]: a for n, a in names.items() if "#" in n}
    out.update({n: a for n, a in names.items() if "#" not in n})
    return out


def _typed(attr: Attribute, text: str) -> Any:
    if attr.kind == "Boolean":
        return text.lower() in ("true", "1", "yes", "enabled")
    if attr.kind == "Integer":
        return int(text)
    return text


def resolve(settings: tpb.BiosSettings, attributes: dict[str, Attribute]) -> list[Desired]:
    """Intents and raw attributes as this BMC names and types them."""
    known = _by_prefix(attributes)
    out: list[Desired] = []
    for intent, candidates in CANDIDATES.items():
        want = getattr(settings.intents, intent)
        if not want:
            continue
        found = None
        for name, values in candidates:
            attr = known.get(name)
            if attr is None:
                continue
            choices = values.get(want, [])
            match = next((c for c in choices if not attr.values or c in attr.values), None)
            if match is not None:
                found = Desired(f"bios:{intent}", attr.name, match, f"{attr.name}={match}")
                break
        out.append(found or Desired(f"bios:{intent}", "", None, want))
    for name, text in sorted(settings.attributes.items()):
        attr = known.get(v.check("bios_attribute", name).split("#", 1)[0])
        if attr is None:
            out.append(Desired(f"bios:attr:{name}", "", None, text))
        else:
            out.append(
                Desired(f"bios:attr:{name}", attr.name, _typed(attr, text), f"{attr.name}={text}")
            )
    return out


def _connect(target: BmcTarget) -> Any:
    import sushy  # imported here: only nodes with a BMC configured pay for it

    try:
        root = sushy.Sushy(
            target.url.rstrip("/") + "/redfish/v1",
            verify=target.verify_tls,
            auth=sushy.auth.BasicAuth(target.username, target.password),
        )
        systems = root.get_system_collection().members_identities
        if target.system_id:
            wanted = [s for s in systems if s.rstrip("/").endswith("/" + target.system_id)]
            systems = tuple(wanted)
        if len(systems) != 1:
            raise BiosError(f"{target.url}: {len(systems)} systems; set the system id")
        return root.get_system(systems[0])
    except BiosError:
        raise
    except Exception as exc:
        raise BiosError(f"{target.url}: {type(exc).__name__}: {_clean(exc, target)}") from None


def _clean(exc: Exception, target: BmcTarget) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text.replace(target.password, "***") if target.password else text


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _same(a: Any, b: Any) -> bool:
    """Some BMCs (sushy-tools among them) return Boolean attributes as "true"/"false"."""
    return a == b or (a is not None and b is not None and _text(a).lower() == _text(b).lower())


def _compare(
    desired: list[Desired], current: dict[str, Any], pending: dict[str, Any]
) -> list[tpb.SettingResult]:
    out = []
    for d in desired:
        # one SettingResult for every status, so a field added later reaches each of them
        if not d.attribute:
            status, actual, detail = UNKNOWN, "", "MAPPING_MISSING: no attribute on this BMC"
        else:
            have = current.get(d.attribute)
            status = OK if _same(have, d.value) else DRIFT
            actual, detail = f"{d.attribute}={_text(have)}", ""
            waiting = pending.get(d.attribute)
            if status == DRIFT and _same(waiting, d.value) and pending != current:
                status, detail = PENDING, "pending on the BMC; applied at the next reset"
        out.append(
            tpb.SettingResult(
                setting=d.setting,
                category="bios",
                status=status,
                expected=d.shown,
                actual=actual,
                reboot_needed=status == PENDING,
                detail=detail,
            )
        )
    return out


def _state(
    target: BmcTarget, settings: tpb.BiosSettings
) -> tuple[Any, list[Desired], list[tpb.SettingResult]]:
    system = _connect(target)
    try:
        bios = system.bios
        desired = resolve(
            settings, _registry(bios) or {n: Attribute(n, "", []) for n in bios.attributes}
        )
        current = dict(bios.attributes)
        pending = dict(bios.pending_attributes or {})
    except BiosError:
        raise
    except Exception as exc:
        raise BiosError(f"{target.url}: reading BIOS: {_clean(exc, target)}") from None
    return bios, desired, _compare(desired, current, pending)


def verify_bios(target: BmcTarget, settings: tpb.BiosSettings) -> list[tpb.SettingResult]:
    return _state(target, settings)[2]


def apply_bios(
    target: BmcTarget, settings: tpb.BiosSettings, check: bool
) -> tuple[list[tpb.SettingResult], list[tpb.TaskProgress]]:
    """Write what drifted as pending settings; (results after, one progress item)."""
    bios, desired, results = _state(target, settings)
    changes = {
        d.attribute: d.value for d, r in zip(desired, results, strict=True) if r.status == DRIFT
    }
    task = tpb.TaskProgress(task="BIOS settings (Redfish)")
    if not changes:
        task.status, task.message = tpb.TASK_OK, "nothing to change"
        return results, [task]
    shown = ", ".join(f"{k}={_text(val)}" for k, val in sorted(changes.items()))
    task.status = tpb.TASK_CHANGED
    if check:
        task.message = f"would set {shown}"
        return results, [task]
    apply_time = settings.apply_time or "OnReset"
    supported = list(bios.supported_apply_times or [])
    try:
        import sushy

        if supported and apply_time not in [str(s) for s in supported]:
            raise BiosError(
                f"{target.url}: apply time {apply_time} not supported "
                f"(BMC offers {', '.join(map(str, supported))})"
            )
        when = sushy.ApplyTime(apply_time) if supported else None
        bios.set_attributes(changes, apply_time=when)
        bios.refresh(force=True)
    except BiosError:
        raise
    except Exception as exc:
        raise BiosError(f"{target.url}: writing BIOS settings: {_clean(exc, target)}") from None
    task.message = f"set {shown}" + (f" ({apply_time})" if supported else "")
    after = _compare(desired, dict(bios.attributes), dict(bios.pending_attributes or {}))
    return after, [task]
