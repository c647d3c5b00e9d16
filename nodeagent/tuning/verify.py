"""Compare a node with its profile: every setting ok, drift, pending (next boot) or unknown.

Reads only through the HostRoot. Each check is independent: one that fails to read reports
UNKNOWN with the error, and the rest still report (node_exporter's per-collector rule).
A setting is PENDING when the running value differs but what the node boots next (the
generated GRUB config, modprobe.d, BIOS pending settings) already carries the profile's
value: apply has done its part and only a reboot is missing.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.host import HostReadError, HostRoot
from nodeagent.tuning import readback as rb
from nodeagent.tuning import render
from nodeagent.tuning.hardware_check import expected_hardware

OK, DRIFT, PENDING, UNKNOWN = (
    tpb.SETTING_OK,
    tpb.SETTING_DRIFT,
    tpb.SETTING_PENDING,
    tpb.SETTING_UNKNOWN,
)


def result(
    setting: str, category: str, status: int, expected: str, actual: str, detail: str = ""
) -> tpb.SettingResult:
    return tpb.SettingResult(
        setting=setting,
        category=category,
        status=status,  # type: ignore[arg-type]
        expected=expected,
        actual=actual,
        detail=detail,
        reboot_needed=status == PENDING,
    )


@dataclass
class Context:
    root: HostRoot
    profile: tpb.TuningProfile
    inventory: pb.HardwareInventory
    _next_boot: list[str] | None = None
    _next_boot_read: bool = False

    def next_boot(self) -> list[str]:
        """Tokens of the next boot's command line (generated config, else our drop-in)."""
        if not self._next_boot_read:
            self._next_boot_read = True
            tokens = rb.next_boot_cmdline(self.root, self.inventory.software.kernel_release)
            if tokens is None:
                text = self.root.attr(render.GRUB_DROPIN.lstrip("/"))
                tokens = text.replace('"', " ").split() if text else []
            self._next_boot = tokens
        return self._next_boot or []


def _kernel_cmdline(ctx: Context) -> Iterable[tpb.SettingResult]:
    running = rb.cmdline(ctx.root.read_text("proc/cmdline"))
    by_key = {t.split("=", 1)[0]: t for t in running}
    for token in render.cmdline_tokens(ctx.profile.os):
        name = f"kernel_cmdline:{token.split('=', 1)[0]}"
        actual = by_key.get(token.split("=", 1)[0], "absent")
        if token in running:
            yield result(name, "kernel", OK, token, token)
        elif token in ctx.next_boot():
            yield result(name, "kernel", PENDING, token, actual, "on the next boot's command line")
        else:
            yield result(name, "kernel", DRIFT, token, actual)


def _sysctl(ctx: Context) -> Iterable[tpb.SettingResult]:
    for key, want in render.sysctl_settings(ctx.profile.os).items():
        name = f"sysctl:{key}"
        try:
            have = " ".join(ctx.root.read_text(rb.sysctl_path(key)).split())
        except HostReadError as exc:
            yield result(name, "sysctl", UNKNOWN, want, "", str(exc))
            continue
        yield result(name, "sysctl", OK if have == " ".join(want.split()) else DRIFT, want, have)


def _governor(ctx: Context) -> Iterable[tpb.SettingResult]:
    want = ctx.profile.os.cpu_governor
    if not want:
        return
    base = "sys/devices/system/cpu"
    cpus = [c for c in ctx.root.listdir(base) if c[3:].isdigit() and c.startswith("cpu")]
    values = [ctx.root.attr(f"{base}/{c}/cpufreq/scaling_governor") for c in cpus]
    seen = [x for x in values if x]
    if not seen:
        yield result(
            "cpu_governor",
            "cpu",
            UNKNOWN,
            want,
            "",
            "no cpufreq scaling_governor (a VM, or no cpufreq driver)",
        )
        return
    wrong = [x for x in seen if x != want]
    if not wrong:
        yield result("cpu_governor", "cpu", OK, want, f"{want} ({len(seen)} CPUs)")
    else:
        actual = ", ".join(
            f"{g} on {wrong.count(g)} of {len(seen)} CPUs" for g in sorted(set(wrong))
        )
        yield result("cpu_governor", "cpu", DRIFT, want, actual)


def _selection_file(
    ctx: Context, name: str, category: str, rel: str, want: str, boot_token: str = ""
) -> Iterable[tpb.SettingResult]:
    try:
        have = rb.selection(ctx.root.read_text(rel))
    except HostReadError as exc:
        yield result(name, category, UNKNOWN, want, "", str(exc))
        return
    if have == want:
        yield result(name, category, OK, want, have)
    elif boot_token and boot_token in ctx.next_boot():
        yield result(name, category, PENDING, want, have, f"{boot_token} on the next boot")
    else:
        yield result(name, category, DRIFT, want, have)


def _memory(ctx: Context) -> Iterable[tpb.SettingResult]:
    os_ = ctx.profile.os
    thp = "sys/kernel/mm/transparent_hugepage"
    if os_.transparent_hugepages:
        yield from _selection_file(
            ctx, "transparent_hugepages", "memory", f"{thp}/enabled", os_.transparent_hugepages
        )
    if os_.transparent_hugepages_defrag:
        yield from _selection_file(
            ctx,
            "transparent_hugepages_defrag",
            "memory",
            f"{thp}/defrag",
            os_.transparent_hugepages_defrag,
        )
    pages = os_.hugepages
    if pages.size_kib:
        rel = f"sys/kernel/mm/hugepages/hugepages-{pages.size_kib}kB/nr_hugepages"
        boot = f"hugepages={pages.count}" if pages.size_kib == render.HUGE_1G else ""
        yield from _selection_file(
            ctx, f"hugepages:{pages.size_kib}kB", "memory", rel, str(pages.count), boot
        )


def _cpuidle_and_aspm(ctx: Context) -> Iterable[tpb.SettingResult]:
    os_ = ctx.profile.os
    if os_.HasField("max_cstate"):
        driver = ctx.root.attr("sys/devices/system/cpu/cpuidle/current_driver")
        module = "intel_idle" if driver == "intel_idle" else "processor"
        yield from _selection_file(
            ctx,
            "max_cstate",
            "cpu",
            f"sys/module/{module}/parameters/max_cstate",
            str(os_.max_cstate),
            f"{module}.max_cstate={os_.max_cstate}",
        )
    if os_.pcie_aspm_policy:
        yield from _selection_file(
            ctx,
            "pcie_aspm_policy",
            "pcie",
            "sys/module/pcie_aspm/parameters/policy",
            os_.pcie_aspm_policy,
            f"pcie_aspm.policy={os_.pcie_aspm_policy}",
        )


def _modules(ctx: Context) -> Iterable[tpb.SettingResult]:
    os_ = ctx.profile.os
    if not os_.modules and not os_.module_options:
        return
    loaded = rb.loaded_modules(ctx.root)
    for module in os_.modules:
        mod = module.replace("-", "_")
        status = OK if mod in loaded else DRIFT
        yield result(
            f"module:{mod}",
            "modules",
            status,
            "loaded",
            "loaded" if mod in loaded else "not loaded",
        )
    configured = rb.modprobe_options(ctx.root)
    for mod, options in render.module_options(os_).items():
        for param, want in options.items():
            name = f"module_option:{mod}.{param}"
            boot_value = configured.get(mod, {}).get(param)
            if mod not in loaded:
                status = OK if boot_value == want else DRIFT
                yield result(
                    name,
                    "modules",
                    status,
                    want,
                    boot_value or "not configured",
                    "module not loaded; modprobe.d applies when it is",
                )
                continue
            try:
                have = ctx.root.read_attr(f"sys/module/{mod}/parameters/{param}")
            except HostReadError as exc:
                yield result(name, "modules", UNKNOWN, want, "", str(exc))
                continue
            if rb.normalise_param(have) == rb.normalise_param(want):
                yield result(name, "modules", OK, want, have)
            elif boot_value is not None and rb.normalise_param(boot_value) == rb.normalise_param(
                want
            ):
                yield result(
                    name,
                    "modules",
                    PENDING,
                    want,
                    have,
                    f"set in modprobe.d; takes effect when {mod} is reloaded (reboot)",
                )
            else:
                yield result(name, "modules", DRIFT, want, have)


def _services(ctx: Context) -> Iterable[tpb.SettingResult]:
    for unit in render.services(ctx.profile.os):
        enabled, active = rb.unit_enabled(ctx.root, unit), rb.unit_active(ctx.root, unit)
        actual = f"{'enabled' if enabled else 'disabled'}, {'active' if active else 'inactive'}"
        name = "pcie_acs" if unit == render.ACS_UNIT else f"service:{unit}"
        category = "pcie" if unit == render.ACS_UNIT else "services"
        yield result(name, category, OK if enabled and active else DRIFT, "enabled, active", actual)


def _memlock(ctx: Context) -> Iterable[tpb.SettingResult]:
    want = ctx.profile.os.memlock
    if not want:
        return
    limits = rb.memlock_limits(ctx.root)
    systemd = rb.systemd_default(ctx.root, "DefaultLimitMEMLOCK")
    want_systemd = "infinity" if want == "unlimited" else str(int(want) * 1024)
    actual = (
        f"soft {limits.get('soft', 'unset')}, hard {limits.get('hard', 'unset')}, "
        f"systemd {systemd or 'unset'}"
    )
    good = limits.get("soft") == want and limits.get("hard") == want and systemd == want_systemd
    yield result(
        "memlock",
        "limits",
        OK if good else DRIFT,
        f"soft {want}, hard {want}, systemd {want_systemd}",
        actual,
    )


def raid_members(raid: tpb.NvmeRaid, inv: pb.HardwareInventory) -> list[pb.NvmeNamespace]:
    """The data drives of the RAID: namespaces of controllers whose model matches."""
    out: list[pb.NvmeNamespace] = []
    for ctrl in inv.nvme_controllers:
        if fnmatch.fnmatchcase(ctrl.model.lower(), raid.member_model.lower()):
            out.extend(ctrl.namespaces)
    return sorted(out, key=lambda ns: (len(ns.name), ns.name))


def _raid(ctx: Context) -> Iterable[tpb.SettingResult]:
    os_ = ctx.profile.os
    if not os_.HasField("nvme_raid"):
        return
    raid = os_.nvme_raid
    want = f"raid{raid.level} of {raid.members} drives"
    members = {ns.name for ns in raid_members(raid, ctx.inventory)}
    arrays = [
        a
        for a in rb.mdstat(ctx.root)
        if a.name == raid.device
        or (members and set(a.members) <= members and a.level == f"raid{raid.level}")
    ]
    if not arrays:
        yield result(f"nvme_raid:{raid.device}", "storage", DRIFT, want, "absent")
    else:
        a = arrays[0]
        have = f"{a.level} of {len(a.members)} drives"
        good = a.level == f"raid{raid.level}" and len(a.members) == raid.members
        yield result(
            f"nvme_raid:{raid.device}",
            "storage",
            OK if good else DRIFT,
            want,
            f"{have} ({a.name}, {a.state})",
        )
    mounted = rb.mounts(ctx.root).get(raid.mount_point)
    want_mount = f"md {raid.filesystem}"
    if mounted is None:
        yield result(f"mount:{raid.mount_point}", "storage", DRIFT, want_mount, "not mounted")
    else:
        source, fstype = mounted
        good = "/md" in source and fstype == raid.filesystem
        yield result(
            f"mount:{raid.mount_point}",
            "storage",
            OK if good else DRIFT,
            want_mount,
            f"{source} {fstype}",
        )


def _support(ctx: Context) -> Iterable[tpb.SettingResult]:
    sup, sw = ctx.profile.support, ctx.inventory.software

    def check(
        name: str, patterns: Iterable[str], value: str, why_unknown: str
    ) -> tpb.SettingResult:
        want = ", ".join(patterns)
        if not value:
            return result(name, "support", UNKNOWN, want, "", why_unknown)
        good = any(fnmatch.fnmatchcase(value, p) for p in patterns)
        return result(
            name,
            "support",
            OK if good else DRIFT,
            want,
            value,
            "" if good else "not in the support matrix",
        )

    if sup.os:
        yield check("support:os", sup.os, f"{sw.os_id} {sw.os_version_id}".strip(), "no os-release")
    if sup.kernels:
        yield check("support:kernel", sup.kernels, sw.kernel_release, "kernel unknown")
    if sup.nvidia_drivers:
        yield check(
            "support:nvidia_driver",
            sup.nvidia_drivers,
            sw.nvidia_driver_version,
            "NVIDIA driver not loaded",
        )
    if sup.cuda:
        yield check("support:cuda", sup.cuda, sw.cuda_driver_version, "no NVML data")
    if sup.vbios:
        versions = sorted({g.vbios_version for g in ctx.inventory.gpus})
        for version in versions or [""]:
            yield check("support:vbios", sup.vbios, version, "no GPU reports a VBIOS version")
    if sup.firmware_bundles:
        # The HGX bundle version lives in the baseboard's HMC, which nvfwupd reads over
        # Redfish; nothing on the host (sysfs, NVML) carries it, so it is reported, not guessed.
        yield result(
            "support:firmware_bundle",
            "support",
            UNKNOWN,
            ", ".join(sup.firmware_bundles),
            "",
            "cannot be read from the host without nvfwupd (`nvfwupd show_version` on the BMC)",
        )
    if sup.rdma_stack:
        yield check(
            "support:rdma_stack", [sup.rdma_stack], sw.rdma_stack, "mlx5_core is not loaded"
        )
    if sup.ofed_versions and sw.rdma_stack == "ofed":
        yield check("support:ofed", sup.ofed_versions, sw.ofed_version, "no OFED version found")
    for entry in sup.nic_firmware:
        devices = [
            d
            for d in ctx.inventory.rdma_devices
            if fnmatch.fnmatchcase(d.model.lower(), entry.model.lower())
        ]
        for version in sorted({d.fw_version for d in devices}):
            yield check(f"support:nic_firmware:{entry.model}", entry.versions, version, "")


CHECKS: tuple[Callable[[Context], Iterable[tpb.SettingResult]], ...] = (
    _kernel_cmdline,
    _sysctl,
    _governor,
    _memory,
    _cpuidle_and_aspm,
    _modules,
    _services,
    _memlock,
    _raid,
    _support,
)


def verify(
    root: HostRoot,
    profile: tpb.TuningProfile,
    inventory: pb.HardwareInventory,
    bios: Iterable[tpb.SettingResult] = (),
) -> tpb.TuningReport:
    """The report for `profile` on the node under `root` (BIOS results come from Redfish)."""
    start = time.perf_counter()
    ctx = Context(root, profile, inventory)
    report = tpb.TuningReport(profile=profile.name, root=root.path)
    for check in CHECKS:
        try:
            report.settings.extend(check(ctx))
        except (HostReadError, OSError, ValueError) as exc:
            name = check.__name__.strip("_")
            report.settings.append(result(f"{name}", name, UNKNOWN, "", "", f"unreadable: {exc}"))
    report.settings.extend(bios)
    report.hardware.extend(expected_hardware(profile.expected_hardware, inventory))
    report.drift = any(s.status in (DRIFT, PENDING) for s in report.settings)
    report.reboot_needed = any(s.reboot_needed for s in report.settings)
    ts = Timestamp()
    ts.GetCurrentTime()
    report.checked_at.CopyFrom(ts)
    report.duration_seconds = time.perf_counter() - start
    return report
