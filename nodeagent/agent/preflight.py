"""Preflight: can this node join a Kubespray-built cluster? Checks of the host's own state.

Each check reads through a HostRoot (so tests run them on modelled roots) and says
pass, warn, fail or skip, with what it found and the remedy. They cover what makes
Kubespray's `scale.yml` or the kubelet fail late on a node: swap, kernel modules and
sysctls, the cgroup version, a container runtime in the way, the hostname, the clock,
disk space, and the NVIDIA driver and fabric manager where there are GPUs and NVSwitches
(or, when the GPU Operator owns the driver, that the host has none in its way).
Network checks (ports, registries, the fleet) are in preflight_net.py.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nodeagent import label_syntax as syntax
from nodeagent.api.v1 import preflight_pb2 as ppb
from nodeagent.hardware.scan import Scan
from nodeagent.host import HostReadError, HostRoot
from nodeagent.tuning import gpu_driver as driver_mode

PASS, WARN, FAIL, SKIP = ppb.CHECK_PASS, ppb.CHECK_WARN, ppb.CHECK_FAIL, ppb.CHECK_SKIP
Check = ppb.PreflightCheck
MODULES = ("overlay", "br_netfilter")
SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
RUNTIME_CONFLICTS = {
    "docker.io": FAIL,
    "docker-ce": FAIL,
    "cri-o": FAIL,
    "podman-docker": FAIL,
    "containerd": WARN,
    "containerd.io": WARN,
}
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
FM_PID = "var/run/nvidia-fabricmanager/nv-fabricmanager.pid"
FM_UNIT = "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service"
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d")


@dataclass(frozen=True)
class Options:
    min_free_gib: float = 20.0  # below: fail; below twice this: warn
    disk_path: str = "var/lib"  # containerd and kubelet keep images and pods here
    ports: Sequence[int] = (10250, 10256)  # kubelet, kube-proxy health
    registries: Sequence[str] = ()  # host:port
    connect_timeout: float = 2.0
    fleet: Callable[[str], list[str]] | None = field(default=None, compare=False)
    gpu_driver: str = driver_mode.HOST  # operator: the GPU Operator brings the driver


def _check(name: str, status: int, message: str, remedy: str = "") -> Check:
    return Check(
        name=name,
        status=status,  # type: ignore[arg-type]
        message=message,
        remedy=remedy if status != PASS else "",
    )


def hostname(root: HostRoot) -> str:
    return root.attr("proc/sys/kernel/hostname") or root.attr("etc/hostname")


def check_swap(root: HostRoot) -> Check:
    try:
        lines = root.read_text("proc/swaps").splitlines()[1:]
    except HostReadError as exc:
        return _check("swap", WARN, f"cannot read /proc/swaps: {exc}", "check `swapon --show`")
    active = [line.split()[0] for line in lines if line.strip()]
    if active:
        return _check(
            "swap",
            FAIL,
            f"swap is on: {', '.join(active)}",
            "swapoff -a and remove the swap entries from /etc/fstab (the kubelet "
            "refuses to start with swap on)",
        )
    return _check("swap", PASS, "no swap")


def loaded_modules(root: HostRoot) -> set[str]:
    try:
        return {ln.split()[0] for ln in root.read_text("proc/modules").splitlines() if ln.strip()}
    except HostReadError:
        return set()


def check_modules(root: HostRoot) -> Check:
    loaded = loaded_modules(root)
    missing = [m for m in MODULES if m not in loaded and not root.is_dir(f"sys/module/{m}")]
    if missing:
        return _check(
            "kernel-modules",
            FAIL,
            f"not loaded: {', '.join(missing)}",
            f"modprobe {' '.join(missing)} and list them in /etc/modules-load.d/k8s.conf",
        )
    return _check("kernel-modules", PASS, f"{', '.join(MODULES)} loaded")


def check_sysctls(root: HostRoot) -> Check:
    wrong = []
    for name, want in SYSCTLS.items():
        value = root.attr(f"proc/sys/{name.replace('.', '/')}", "missing")
        if value != want:
            wrong.append(f"{name}={value}")
    if wrong:
        fix = " ".join(f"{n}={v}" for n, v in SYSCTLS.items())
        return _check(
            "sysctl",
            FAIL,
            f"{', '.join(wrong)} (want 1)",
            f"sysctl -w {fix} and persist it in /etc/sysctl.d/ (the bridge setting "
            "exists once br_netfilter is loaded)",
        )
    return _check("sysctl", PASS, ", ".join(f"{n}=1" for n in SYSCTLS))


def check_cgroup(root: HostRoot) -> Check:
    if root.exists("sys/fs/cgroup/cgroup.controllers"):
        return _check("cgroup-v2", PASS, "unified cgroup hierarchy (v2)")
    return _check(
        "cgroup-v2",
        FAIL,
        "cgroup v1 (no /sys/fs/cgroup/cgroup.controllers)",
        "boot with systemd.unified_cgroup_hierarchy=1: recent kubelets refuse cgroup v1 by default",
    )


def installed_packages(root: HostRoot) -> set[str]:
    """Debian packages installed under the root (dpkg's status file)."""
    try:
        text = root.read_text("var/lib/dpkg/status")
    except HostReadError:
        return set()
    out = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("Status", "").endswith("installed") and "Package" in fields:
            out.add(fields["Package"])
    return out


def check_runtime(root: HostRoot) -> Check:
    packages = installed_packages(root)
    found = {p: RUNTIME_CONFLICTS[p] for p in packages if p in RUNTIME_CONFLICTS}
    if found:
        worst = max(found.values())
        return _check(
            "container-runtime",
            worst,
            f"packaged runtime installed: {', '.join(sorted(found))}",
            f"apt-get purge {' '.join(sorted(found))}: Kubespray installs its own "
            "containerd (/usr/local/bin) and unit, and a second runtime competes "
            "for the socket and the cgroups",
        )
    if root.exists("usr/local/bin/containerd"):
        return _check("container-runtime", PASS, "containerd in /usr/local/bin (Kubespray's)")
    return _check("container-runtime", PASS, "none installed: Kubespray installs containerd")


def name_problem(name: str) -> str:
    if not name:
        return "no hostname"
    if not syntax.is_valid_prefix(name) or any(len(p) > 63 for p in name.split(".")):
        return f"{name[:80]!r} is not a lower-case RFC 1123 name (Kubernetes node names are)"
    return ""


def check_hostname(root: HostRoot, fleet: Callable[[str], list[str]] | None) -> Check:
    name = hostname(root)
    problem = name_problem(name)
    if problem:
        return _check(
            "hostname", FAIL, problem, "hostnamectl set-hostname <lower-case name of [a-z0-9-.]>"
        )
    if fleet is None:
        return _check("hostname", PASS, f"{name} (fleet uniqueness not checked: no inventory)")
    try:
        others = fleet(name)
    except Exception as exc:  # an inventory outage must not stop the rest of preflight
        return _check(
            "hostname",
            WARN,
            f"{name}; inventory unreachable, uniqueness not "
            f"checked: {str(exc).splitlines()[0][:200]}",
            "rerun when the inventory service is reachable",
        )
    if others:
        return _check(
            "hostname",
            FAIL,
            f"{name} is also the hostname of node(s) {', '.join(others[:5])}",
            "give this node a unique hostname (node names must be)",
        )
    return _check("hostname", PASS, f"{name}, unique in the fleet")


def clock_state(root: HostRoot) -> tuple[bool | None, str]:
    """(synchronised, how we know); None when it cannot be told. Live: adjtimex(2), as
    timedatectl's NTPSynchronized; a root: a probe recording, then timesyncd's marker."""
    if root.is_live:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(512)  # struct timex, modes 0: read only
            state = libc.adjtimex(buf)
        except (OSError, AttributeError) as exc:
            return None, f"adjtimex: {exc}"
        if state < 0:
            return None, f"adjtimex: errno {ctypes.get_errno()}"
        return state != TIME_ERROR, "kernel clock state (adjtimex)"
    try:
        recorded = json.loads(root.read_text(".nodeagent/probes/timesync.json"))
        return bool(recorded.get("synchronized")), "recorded clock state"
    except (HostReadError, ValueError, AttributeError):
        pass
    if root.exists("run/systemd/timesync/synchronized"):
        return True, "systemd-timesyncd"
    return None, "no clock state recorded in this root"


def check_time(root: HostRoot) -> Check:
    synced, how = clock_state(root)
    remedy = (
        "enable time synchronisation (chrony or systemd-timesyncd) and wait for it: "
        "certificates and etcd need clocks within seconds"
    )
    if synced is None:
        return _check("time-sync", WARN, f"cannot tell ({how})", remedy)
    if not synced:
        return _check("time-sync", FAIL, f"clock not synchronised ({how})", remedy)
    return _check("time-sync", PASS, f"synchronised ({how})")


def check_disk(root: HostRoot, opts: Options) -> Check:
    path = root.host_path(opts.disk_path)
    while not os.path.isdir(path) and path not in ("/", ""):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return _check("disk", WARN, f"cannot stat /{opts.disk_path}: {exc}", "check df -h")
    free = st.f_bavail * st.f_frsize / 2**30
    found = f"{free:.1f} GiB free for /{opts.disk_path}"
    remedy = f"free space or grow the filesystem: images and pods need {opts.min_free_gib:g} GiB"
    if free < opts.min_free_gib:
        return _check("disk", FAIL, found, remedy)
    if free < 2 * opts.min_free_gib:
        return _check("disk", WARN, found, remedy)
    return _check("disk", PASS, found)


def _nvidia(root: HostRoot) -> tuple[int, int]:
    """(NVIDIA GPUs, NVSwitches) on the PCI bus."""
    fns = [f for f in Scan(root).pci().values() if f.vendor.lower() == "10de"]
    gpus = sum(f.pci_class.startswith(("0300", "0302")) for f in fns)
    return gpus, sum(f.pci_class.startswith("0680") for f in fns)


def check_driver(root: HostRoot, gpus: int) -> Check:
    if not gpus:
        return _check("nvidia-driver", SKIP, "no NVIDIA GPU")
    version = root.attr("proc/driver/nvidia/version")
    if not version:
        return _check(
            "nvidia-driver",
            FAIL,
            f"{gpus} NVIDIA GPU(s), no driver loaded",
            "install the driver of the node's golden profile (nodeagent tune apply) and reboot",
        )
    words = version.split()
    release = next((w for w in words if w[:1].isdigit() and "." in w), "loaded")
    return _check("nvidia-driver", PASS, f"{gpus} GPU(s), driver {release}")


def check_fabric_manager(root: HostRoot, nvswitches: int) -> Check:
    if not nvswitches:
        return _check("fabric-manager", SKIP, "no NVSwitch")
    remedy = (
        "install nvidia-fabricmanager of the driver's branch and `systemctl enable --now "
        "nvidia-fabricmanager`: without it CUDA fails on NVSwitch systems (error 802)"
    )
    pid = root.attr(FM_PID)
    if pid.isdigit() and root.exists(f"proc/{pid}"):
        return _check("fabric-manager", PASS, f"running (pid {pid}) for {nvswitches} NVSwitch(es)")
    if root.exists(FM_UNIT):
        return _check("fabric-manager", FAIL, "enabled but not running", remedy)
    return _check(
        "fabric-manager",
        FAIL,
        f"{nvswitches} NVSwitch(es), fabric manager not installed or not enabled",
        remedy,
    )


def check_no_host_driver(root: HostRoot, gpus: int) -> Check:
    """Operator mode: the Operator's driver container will not load beside a host driver."""
    if not gpus:
        return _check("host-nvidia-modules", SKIP, "no NVIDIA GPU")
    loaded = loaded_modules(root)
    found = [m for m in driver_mode.HOST_MODULES if m in loaded]
    if found:
        return _check(
            "host-nvidia-modules",
            FAIL,
            f"host NVIDIA module(s) loaded: {', '.join(found)} (the GPU Operator brings its own)",
            "purge the host NVIDIA driver packages (apt-get purge '*nvidia*') and reboot, or "
            'set gpu_driver = "host" for this node',
        )
    return _check("host-nvidia-modules", PASS, f"{gpus} GPU(s), no host NVIDIA module loaded")


def _blacklists_nouveau(root: HostRoot) -> bool:
    cmdline = root.attr("proc/cmdline").split()
    if any(t.startswith("modprobe.blacklist=") and "nouveau" in t[19:].split(",") for t in cmdline):
        return True
    for folder in MODPROBE_DIRS:
        for name in root.listdir(folder):
            if not name.endswith(".conf"):
                continue
            try:
                text = root.read_text(f"{folder}/{name}")
            except HostReadError:
                continue
            if any(line.split() == ["blacklist", "nouveau"] for line in text.splitlines()):
                return True
    return False


def check_nouveau(root: HostRoot, gpus: int) -> Check:
    """Operator mode: nouveau would claim the GPUs before the Operator's driver could."""
    if not gpus:
        return _check("nouveau", SKIP, "no NVIDIA GPU")
    remedy = (
        "echo 'blacklist nouveau' > /etc/modprobe.d/blacklist-nouveau.conf, "
        "update-initramfs -u and reboot"
    )
    if "nouveau" in loaded_modules(root):
        return _check("nouveau", FAIL, "nouveau is loaded", remedy)
    if not _blacklists_nouveau(root):
        return _check("nouveau", FAIL, "nouveau not loaded but not blacklisted", remedy)
    return _check("nouveau", PASS, "not loaded, blacklisted")


def _driver_checks(root: HostRoot, opts: Options, gpus: int, nvswitches: int) -> list[Check]:
    if opts.gpu_driver == driver_mode.OPERATOR:
        return [check_no_host_driver(root, gpus), check_nouveau(root, gpus)]
    return [check_driver(root, gpus), check_fabric_manager(root, nvswitches)]


def run(root: HostRoot, opts: Options) -> ppb.PreflightReport:
    from nodeagent.agent import preflight_net

    gpus, nvswitches = _nvidia(root)
    checks = [
        check_swap(root),
        check_modules(root),
        check_sysctls(root),
        check_cgroup(root),
        check_runtime(root),
        *preflight_net.check_ports(root, opts.ports),
        check_hostname(root, opts.fleet),
        check_time(root),
        check_disk(root, opts),
        *_driver_checks(root, opts, gpus, nvswitches),
        preflight_net.check_registries(opts.registries, opts.connect_timeout),
    ]
    return ppb.PreflightReport(
        hostname=hostname(root), checks=checks, ok=all(c.status != FAIL for c in checks)
    )
