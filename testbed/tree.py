"""Machine descriptions, and the writer that lays one out as a root tree.

A `Machine` describes a server compactly: CPUs, memory, OS and its PCI tree (`Host` bridges,
`Fn` functions carrying a `Port`, an `Nvme` or a GPU). `build_tree` writes it into an empty
directory as Linux presents it (the kernel's sysfs ABI documents): every sysfs attribute ends in a
newline, NVMe strings are space padded, `speed`/`carrier`/`duplex` of a down interface are
absent (reading them fails with EINVAL), symlinks are relative and spelled as kernfs spells
them, probe recordings go to `.nodeagent/probes/<probe>.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from testbed.smi_q import parse_smi_q

# ------------------------------------------------------------------------- description


@dataclass(frozen=True)
class Part:
    """PCI identity, driver and maximum link of a kind of function (`gts` 0: conventional
    PCI, which has no link attributes)."""

    ids: str
    subsystem: str
    pci_class: int
    revision: int
    driver: str | None
    gts: float
    width: int

    @property
    def is_bridge(self) -> bool:
        return self.pci_class == 0x060400


@dataclass(frozen=True)
class Card:
    """What an mlx5 verbs device reports about its adapter."""

    hca_type: str
    fw_ver: str
    board_id: str


@dataclass(frozen=True)
class Port:
    """A network port: its netdev and, on an RDMA adapter, its verbs device (port 1).

    `up` is the link (InfiniBand: the port is ACTIVE). An IPoIB netdev has its own
    `ipoib_up`: unconfigured, it is `down` while its port is ACTIVE."""

    netdev: str
    gbps: int
    ibdev: str = ""
    card: Card | None = None
    infiniband: bool = False
    guid: int = 0  # node GUID; an Ethernet port's MAC is derived from it unless `mac` is set
    mac: str = ""
    up: bool = True
    ipoib_up: bool = False
    lid: int = 0
    ipv4: str = ""  # RoCE: the address behind GID indexes 2 and 3
    mtu: int = 1500
    sys_guid: int = 0
    port_name: str = ""  # phys_port_name (`p0`); empty where reading it fails


@dataclass(frozen=True)
class Nvme:
    """An NVMe controller with one namespace. `subsys` is the nvme-subsys instance, which is
    not the controller number when probes complete out of order."""

    ctrl: int
    subsys: int
    model: str
    serial: str
    firmware: str
    sectors: int  # namespace size in 512-byte sectors, whatever the LBA size
    lba: int = 512
    nqn: str = ""


@dataclass(frozen=True)
class Fn:
    """A PCI function and the functions on its secondary bus."""

    addr: str
    part: Part
    below: tuple[Fn, ...] = ()
    port: Port | None = None
    nvme: Nvme | None = None
    width: int | None = None  # trained link width, when below the maximum
    numa: int | None = None  # numa_node as firmware reports it, when not the socket's (-1)


@dataclass(frozen=True)
class Host:
    """PCI host bridge `pci0000:<bus>` on NUMA node `node`, with its root ports."""

    bus: int
    node: int
    ports: tuple[Fn, ...]


@dataclass(frozen=True)
class Cpu:
    """One CPU model as /proc/cpuinfo and cpufreq show it, and how many of it: `sockets`
    packages of `cores` cores with 2 threads, one NUMA node per socket."""

    vendor: str
    name: str
    family: int
    model: int
    stepping: int
    microcode: str
    mhz: str
    cache: str
    bogomips: str
    address_sizes: str
    cpuid_level: int
    flags: str
    bugs: str
    tail: str  # vendor-specific lines closing each /proc/cpuinfo block
    sockets: int
    cores: int
    max_khz: int
    scaling_driver: str
    governor: str
    idle_driver: str

    @property
    def count(self) -> int:
        return self.sockets * self.cores * 2

    def place(self, cpu: int) -> tuple[int, int, int]:
        """(socket, core, thread) in Linux's numbering: the first threads of socket 0, of
        socket 1, ..., then all second threads."""
        thread, rest = divmod(cpu, self.sockets * self.cores)
        return rest // self.cores, rest % self.cores, thread

    def node_cpus(self, node: int) -> list[int]:
        first = range(node * self.cores, (node + 1) * self.cores)
        return [*first, *(c + self.sockets * self.cores for c in first)]


@dataclass(frozen=True)
class Nvidia:
    """The loaded NVIDIA kernel module. `recording` names the `nvidia-smi -q` fixture (package
    data) standing in for NVML: its GPUs are placed, in order, on this machine's GPU
    addresses. Without one, procfs shows `model`/`vbios` and synthetic UUIDs."""

    version: str
    build: str
    recording: str = ""
    nvlinks: int = 0
    model: str = ""
    vbios: str = ""
    gcc: str = "gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) "


@dataclass(frozen=True)
class Machine:
    hostname: str
    dmi: Mapping[str, str]
    cpu: Cpu
    node_kib: int  # MemTotal of each NUMA node
    remote_distance: int
    os_release: str
    kernel: str
    kernel_version: str
    cmdline: str
    hosts: tuple[Host, ...]
    multipath: bool  # nvme_core.multipath
    nvidia: Nvidia | None = None
    files: Mapping[str, str] | None = None  # more files, by path under the root
    # MLNX_OFED / DOCA-OFED release (24.10-1.1.4) when the RDMA stack is OFED's, else inbox:
    # OFED's mlx5_core carries a `version` attribute and loads mlx_compat; ofed_info is
    # installed. An inbox mlx5_core has neither.
    ofed: str = ""


def pci_address(bus: int, dev: int = 0, func: int = 0) -> str:
    return f"0000:{bus:02x}:{dev:02x}.{func}"


def bus_of(addr: str) -> int:
    return int(addr[5:7], 16)


def host_bridge(bus: int, node: int, root: Part, *ports: tuple[int, int, Sequence[Fn]]) -> Host:
    """Host bridge `bus` with root ports (device, function, functions below) on that bus."""
    fns = (Fn(pci_address(bus, d, f), root, tuple(below)) for d, f, below in ports)
    return Host(bus, node, tuple(fns))


def switch(up: str, part: Part, *legs: tuple[int, Sequence[Fn]]) -> Fn:
    """A PCIe switch: upstream port `up`; a downstream port per (device number, functions)."""
    bus = bus_of(up) + 1
    return Fn(up, part, tuple(Fn(pci_address(bus, d), part, tuple(fns)) for d, fns in legs))


def chain(addrs: Sequence[str], part: Part, leaf: Fn) -> Fn:
    """Bridges one below the other, `leaf` below the last."""
    for addr in reversed(addrs):
        leaf = Fn(addr, part, (leaf,))
    return leaf


def digest(*parts: object) -> bytes:
    """Deterministic bytes for synthetic serials, UUIDs and counters."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def synthetic_uuid(*parts: object) -> str:
    h = digest(*parts).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def nvml_recording(m: Machine) -> dict[str, Any] | None:
    """`m`'s NVML recording: its `nvidia-smi -q` fixture with GPUs on `m`'s addresses."""
    if not m.nvidia or not m.nvidia.recording:
        return None
    text = resources.files(__package__).joinpath("data", m.nvidia.recording).read_text()
    recording = parse_smi_q(text)
    addresses = gpu_addresses(m)
    if len(addresses) != len(recording["devices"]):
        raise ValueError(f"{m.nvidia.recording}: not the GPU count of {m.hostname}")
    for device, address in zip(recording["devices"], addresses, strict=True):
        device["pci_bus_id"] = address
        if m.nvidia.nvlinks:
            device["nvlink_states"] = [True] * m.nvidia.nvlinks
    return recording


def gpu_addresses(m: Machine) -> list[str]:
    """NVIDIA display and 3D controllers, in bus order (the NVML / nvidia-smi order)."""
    found: list[str] = []
    pending = [fn for host in m.hosts for fn in host.ports]
    while pending:
        fn = pending.pop()
        if fn.part.ids.startswith("10de:") and fn.part.pci_class >> 8 in (0x0300, 0x0302):
            found.append(fn.addr)
        pending.extend(fn.below)
    return sorted(found)


# ------------------------------------------------------------------------- writing


class _Root:
    """Writes attribute files and kernel-style relative symlinks under one directory."""

    def __init__(self, path: Path) -> None:
        self.base = os.fspath(path)
        self._made: set[str] = set()
        os.makedirs(self.base, exist_ok=True)

    def mkdir(self, rel: str) -> None:
        if rel in self._made or not rel:
            return
        self.mkdir(os.path.dirname(rel))
        os.mkdir(f"{self.base}/{rel}")
        self._made.add(rel)

    def text(self, rel: str, content: str, mode: int = 0o644) -> None:
        self.mkdir(os.path.dirname(rel))
        fd = os.open(f"{self.base}/{rel}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, content.encode())
        finally:
            os.close(fd)

    def attrs(self, base: str, values: Mapping[str, object]) -> None:
        """One sysfs attribute per item: the value and a newline."""
        for name, value in values.items():
            self.text(f"{base}/{name}", f"{value}\n")

    def link(self, rel: str, target: str) -> None:
        """Symlink `rel` -> `target` (both relative to the root), as sysfs spells it."""
        parent = os.path.dirname(rel)
        self.mkdir(parent)
        os.symlink(_kernel_relpath(target, parent), f"{self.base}/{rel}")


def _kernel_relpath(target: str, link_dir: str) -> str:
    """kernfs_get_target_path(): up from the link's directory to the nearest ancestor of the
    target's parent, then down; so a link to an ancestor reads `../../../0000:18:00.0`."""
    target_parent = os.path.dirname(target)
    base, ups = link_dir, 0
    while base and not (target_parent == base or target_parent.startswith(base + "/")):
        base, ups = os.path.dirname(base), ups + 1
    return "../" * ups + target[len(base) + 1 if base else 0 :]


def _cpulist(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> `0-2,5`."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and spans[-1][1] == cpu - 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def _cpumask(cpus: Iterable[int], nbits: int) -> str:
    """The kernel's `%*pb` bitmap: 32-bit hex words, most significant first."""
    value = sum(1 << cpu for cpu in cpus)
    words = [(value >> (32 * i)) & 0xFFFFFFFF for i in reversed(range((nbits + 31) // 32))]
    top_digits = (nbits - 32 * (len(words) - 1) + 3) // 4
    return ",".join([f"{words[0]:0{top_digits}x}"] + [f"{w:08x}" for w in words[1:]])


@dataclass
class _Build:
    root: _Root
    machine: Machine
    driver: bool
    bound: set[str]
    ifindex: int = 1
    disk_minor: int = 0


def build_tree(m: Machine, dest: Path, *, nvml: bool, driver: bool) -> Path:
    """Write `m` into `dest` (empty or missing); `driver`: the NVIDIA module is loaded;
    `nvml`: write the NVML recording, if `m` has one."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: a machine root is built in an empty directory")
    b = _Build(_Root(dest), m, driver, set())
    _write_system(b)
    _write_cpus(b)
    _write_memory(b)
    for host in m.hosts:
        top = f"sys/devices/pci0000:{host.bus:02x}"
        _write_pci_bus(b, top, host.bus)
        for fn in host.ports:
            _write_function(b, top, fn, host.node, 0)
    _write_modules(b)
    if m.nvidia:
        _write_nvidia(b, m.nvidia, nvml=nvml)
    for rel, content in (m.files or {}).items():
        b.root.text(rel, content)
    return dest


def _write_system(b: _Build) -> None:
    m, r = b.machine, b.root
    dmi = "sys/devices/virtual/dmi/id"
    for name, value in m.dmi.items():
        root_only = name in ("product_serial", "product_uuid", "board_serial", "chassis_serial")
        r.text(f"{dmi}/{name}", f"{value}\n", 0o400 if root_only else 0o444)
    r.link("sys/class/dmi/id", dmi)
    r.attrs("sys/firmware/efi", {"fw_platform_size": 64})
    r.text("etc/hostname", f"{m.hostname}\n")
    r.text("etc/os-release", m.os_release)
    kernel = {"hostname": m.hostname, "osrelease": m.kernel, "version": m.kernel_version}
    r.attrs("proc/sys/kernel", kernel | {"arch": "x86_64", "numa_balancing": 1})
    r.text("proc/cmdline", f"{m.cmdline}\n")
    lo = "sys/devices/virtual/net/lo"
    r.attrs(lo, {"address": "00:00:00:00:00:00", "addr_len": 6, "type": 772, "mtu": 65536})
    r.attrs(lo, {"operstate": "unknown", "carrier": 1, "flags": "0x9", "ifindex": 1, "iflink": 1})
    r.link("sys/class/net/lo", lo)


_CPUINFO = (
    "processor\t: {n}\nvendor_id\t: {c.vendor}\ncpu family\t: {c.family}\nmodel\t\t: {c.model}\n"
    "model name\t: {c.name}\nstepping\t: {c.stepping}\nmicrocode\t: {c.microcode}\n"
    "cpu MHz\t\t: {c.mhz}\ncache size\t: {c.cache}\nphysical id\t: {socket}\n"
    "siblings\t: {siblings}\ncore id\t\t: {core}\ncpu cores\t: {c.cores}\napicid\t\t: {apicid}\n"
    "initial apicid\t: {apicid}\nfpu\t\t: yes\nfpu_exception\t: yes\n"
    "cpuid level\t: {c.cpuid_level}\nwp\t\t: yes\nflags\t\t: {c.flags}\nbugs\t\t: {c.bugs}\n"
    "bogomips\t: {c.bogomips}\n{c.tail}address sizes\t: {c.address_sizes}\n"
)


def _write_cpus(b: _Build) -> None:
    cpu, r = b.machine.cpu, b.root
    base, every = "sys/devices/system/cpu", _cpulist(range(cpu.count))
    r.attrs(base, {"online": every, "possible": every, "present": every, "offline": ""})
    r.attrs(f"{base}/cpuidle", {"current_driver": cpu.idle_driver, "current_governor": "menu"})
    packages = [_cpulist(cpu.node_cpus(s)) for s in range(cpu.sockets)]
    # cpu<N>/cpufreq is a link to ../cpufreq/policy<N> in the kernel; a directory reads alike
    freq: dict[str, object] = {
        "scaling_driver": cpu.scaling_driver,
        "scaling_governor": cpu.governor,
    }
    freq |= {"cpuinfo_max_freq": cpu.max_khz, "cpuinfo_min_freq": 800000}
    blocks = []
    for n in range(cpu.count):
        socket, core, thread = cpu.place(n)
        first = socket * cpu.cores + core
        siblings = f"{first},{first + cpu.sockets * cpu.cores}"
        topology: dict[str, object] = {"physical_package_id": socket, "die_id": 0, "core_id": core}
        topology |= {"thread_siblings_list": siblings, "core_cpus_list": siblings}
        topology |= {"package_cpus_list": packages[socket], "core_siblings_list": packages[socket]}
        r.attrs(f"{base}/cpu{n}/topology", topology)
        r.attrs(f"{base}/cpu{n}/cpufreq", freq)
        if n:  # cpu0 cannot be taken offline on x86: no `online` file
            r.attrs(f"{base}/cpu{n}", {"online": 1})
        apicid = (socket << (cpu.cores * 2 - 1).bit_length()) + core * 2 + thread
        blocks.append(
            _CPUINFO.format(
                n=n, c=cpu, socket=socket, core=core, siblings=cpu.cores * 2, apicid=apicid
            )
        )
    r.text("proc/cpuinfo", "\n".join(blocks) + "\n")


_NODE_MEMINFO = (
    "Node {n} MemTotal:       {total:>8} kB\nNode {n} MemFree:        {free:>8} kB\n"
    "Node {n} MemUsed:        {used:>8} kB\nNode {n} Active:         {active:>8} kB\n"
    "Node {n} Inactive:       {inactive:>8} kB\nNode {n} FilePages:      {cached:>8} kB\n"
    "Node {n} AnonPages:      {anon:>8} kB\nNode {n} Shmem:          {shmem:>8} kB\n"
    "Node {n} Slab:           {slab:>8} kB\nNode {n} HugePages_Total:     0\n"
    "Node {n} HugePages_Free:      0\nNode {n} HugePages_Surp:      0\n"
)
_MEMINFO = (
    "MemTotal:       {total:>8} kB\nMemFree:        {free:>8} kB\n"
    "MemAvailable:   {available:>8} kB\nBuffers:        {buffers:>8} kB\n"
    "Cached:         {cached:>8} kB\nSwapCached:            0 kB\nActive:         {active:>8} kB\n"
    "Inactive:       {inactive:>8} kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n"
    "Dirty:              1024 kB\nAnonPages:      {anon:>8} kB\nMapped:         {mapped:>8} kB\n"
    "Shmem:          {shmem:>8} kB\nSlab:           {slab:>8} kB\n"
    "PageTables:     {tables:>8} kB\nCommitLimit:    {commit:>8} kB\n"
    "Committed_AS:   {committed:>8} kB\nVmallocTotal:   13743895347199 kB\n"
    "HardwareCorrupted:     0 kB\nAnonHugePages:  {thp:>8} kB\nHugePages_Total:       0\n"
    "HugePages_Free:        0\nHugePages_Rsvd:        0\nHugePages_Surp:        0\n"
    "Hugepagesize:       2048 kB\nHugetlb:               0 kB\nDirectMap4k:     2355200 kB\n"
    "DirectMap2M:    98566144 kB\nDirectMap1G:    {direct1g:>8} kB\n"
)


def _memory(total: int) -> dict[str, int]:
    """Plausible usage of an idle server with `total` kB."""
    free, cached = total * 93 // 100, total // 30
    return {
        "total": total,
        "free": free,
        "used": total - free,
        "available": free + cached,
        "buffers": total // 2000,
        "cached": cached,
        "active": total // 50,
        "inactive": total // 40,
        "anon": total // 200,
        "mapped": total // 900,
        "shmem": total // 5000,
        "slab": total // 300,
        "tables": total // 20000,
        "commit": total // 2,
        "committed": total // 100,
        "thp": total // 400,
        "direct1g": total - total % 1048576,
    }


def _write_memory(b: _Build) -> None:
    m, r = b.machine, b.root
    nodes = range(m.cpu.sockets)
    base = "sys/devices/system/node"
    r.attrs(base, dict.fromkeys(("online", "possible", "has_cpu", "has_memory"), _cpulist(nodes)))
    for n in nodes:
        cpus = m.cpu.node_cpus(n)
        distance = " ".join("10" if n == k else str(m.remote_distance) for k in nodes)
        node = {"cpulist": _cpulist(cpus), "cpumap": _cpumask(cpus, m.cpu.count)}
        r.attrs(f"{base}/node{n}", node | {"distance": distance})
        r.text(f"{base}/node{n}/meminfo", _NODE_MEMINFO.format(n=n, **_memory(m.node_kib)))
        huge = dict.fromkeys(("nr_hugepages", "free_hugepages", "surplus_hugepages"), 0)
        r.attrs(f"{base}/node{n}/hugepages/hugepages-2048kB", huge)
        for cpu in cpus:
            r.link(f"{base}/node{n}/cpu{cpu}", f"sys/devices/system/cpu/cpu{cpu}")
    pools = ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")
    for size in ("2048kB", "1048576kB"):
        r.attrs(f"sys/kernel/mm/hugepages/hugepages-{size}", dict.fromkeys(pools, 0))
    thp = "sys/kernel/mm/transparent_hugepage"
    r.attrs(thp, {"enabled": "always [madvise] never"})
    r.attrs(thp, {"defrag": "always defer defer+madvise [madvise] never"})
    r.text("proc/meminfo", _MEMINFO.format(**_memory(m.node_kib * len(nodes))))


def _write_pci_bus(b: _Build, bridge_dir: str, bus: int) -> None:
    b.root.mkdir(f"{bridge_dir}/pci_bus/0000:{bus:02x}")
    b.root.link(f"sys/class/pci_bus/0000:{bus:02x}", f"{bridge_dir}/pci_bus/0000:{bus:02x}")


def _current_link(fn: Fn, depth: int) -> tuple[float, int]:
    """Root and switch downstream ports (even depth) report the link to the device below."""
    own = (fn.part.gts, fn.width or fn.part.width)
    if fn.part.is_bridge and depth % 2 == 0 and fn.below:
        below = _current_link(fn.below[0], depth + 1)
        return min(own[0], below[0]), min(own[1], below[1])
    return own


def _write_function(b: _Build, parent: str, fn: Fn, node: int, depth: int) -> int:
    """Write `fn` and everything below it; return the highest bus number used."""
    r, part, path = b.root, fn.part, f"{parent}/{fn.addr}"
    cpus = b.machine.cpu.node_cpus(node)
    ids = part.ids.split(":") + part.subsystem.split(":")
    fields = ("vendor", "device", "subsystem_vendor", "subsystem_device")
    values: dict[str, object] = {k: f"0x{v}" for k, v in zip(fields, ids, strict=True)}
    values |= {"class": f"0x{part.pci_class:06x}", "revision": f"0x{part.revision:02x}"}
    values |= {"numa_node": node if fn.numa is None else fn.numa, "enable": 1}
    values |= {"local_cpulist": _cpulist(cpus), "local_cpus": _cpumask(cpus, b.machine.cpu.count)}
    if part.gts:
        gts, width = _current_link(fn, depth)
        values |= {"current_link_speed": f"{gts:.1f} GT/s PCIe", "current_link_width": width}
        values |= {"max_link_speed": f"{part.gts:.1f} GT/s PCIe", "max_link_width": part.width}
    driver = part.driver if b.driver or part.driver != "nvidia" else None
    last = bus_of(fn.addr)
    if fn.below:
        secondary = bus_of(fn.below[0].addr)
        _write_pci_bus(b, path, secondary)
        for child in fn.below:
            last = max(last, _write_function(b, path, child, node, depth + 1))
        values |= {"secondary_bus_number": secondary, "subordinate_bus_number": last}
    r.attrs(path, values)
    up = [x.upper() for x in ids]
    cls = f"{part.pci_class:06X}"
    uevent = [f"DRIVER={driver}"] if driver else []
    uevent += [f"PCI_CLASS={part.pci_class:X}", f"PCI_ID={up[0]}:{up[1]}"]
    uevent += [f"PCI_SUBSYS_ID={up[2]}:{up[3]}", f"PCI_SLOT_NAME={fn.addr}"]
    uevent += ["MODALIAS=pci:v0000{}d0000{}sv0000{}sd0000{}".format(*up)]
    uevent[-1] += f"bc{cls[:2]}sc{cls[2:4]}i{cls[4:]}"
    r.text(f"{path}/uevent", "".join(f"{line}\n" for line in uevent))
    r.link(f"sys/bus/pci/devices/{fn.addr}", path)
    if driver:
        b.bound.add(driver)
        r.link(f"{path}/driver", f"sys/bus/pci/drivers/{driver}")
        r.link(f"sys/bus/pci/drivers/{driver}/{fn.addr}", path)
    if fn.port:
        _write_port(b, path, fn.port)
    if fn.nvme:
        _write_nvme(b, path, fn, node)
    return last


_RATES = {400: "4X NDR", 200: "4X HDR", 100: "4X EDR", 50: "2X HDR", 25: "1X EDR"}
_IPOIB_BROADCAST = "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff"
_COUNTERS = ("port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets")
_ERRORS = ("symbol_error", "link_downed", "link_error_recovery", "port_rcv_errors")


def _hexbytes(raw: bytes, group: int = 1) -> str:
    """Colon-separated hex, `group` bytes per field (MACs 1, GUIDs and GIDs 2)."""
    h = raw.hex()
    return ":".join(h[i : i + 2 * group] for i in range(0, len(h), 2 * group))


def _write_port(b: _Build, pci: str, port: Port) -> None:
    r, ib = b.root, port.infiniband
    up = port.ipoib_up if ib else port.up
    guid = port.guid.to_bytes(8, "big")
    mac = port.mac or _hexbytes(guid[:3] + guid[5:])  # a ConnectX MAC: GUID minus `03:00`
    b.ifindex += 1
    net = f"{pci}/net/{port.netdev}"
    if ib:  # flags byte, 24-bit QP number, port GID
        qpn = bytes([0, 0, 0x10, 0x40 + b.ifindex])
        address = _hexbytes(qpn + bytes.fromhex("fe80" + "00" * 6) + guid)
        values: dict[str, object] = {"address": address, "addr_len": 20, "type": 32}
        values |= {"broadcast": _IPOIB_BROADCAST, "tx_queue_len": 256}
    else:
        values = {"address": mac, "addr_len": 6, "type": 1, "broadcast": "ff:ff:ff:ff:ff:ff"}
        values |= {"tx_queue_len": 1000}
    values |= {"mtu": port.mtu, "operstate": "up" if up else "down", "dev_id": "0x0"}
    values |= {"flags": "0x1003" if up else "0x1002", "dev_port": 0}
    values |= {"ifindex": b.ifindex, "iflink": b.ifindex}
    if up:  # reading these fails with EINVAL on a down interface: absent here
        values |= {"carrier": 1, "speed": port.gbps * 1000, "duplex": "full"}
    if port.port_name:
        values["phys_port_name"] = port.port_name
    r.attrs(net, values)
    seed = digest(port.netdev, port.guid)
    octets = [int.from_bytes(seed[i : i + 5], "big") if up else 0 for i in (0, 5)]
    names = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    stats = dict(zip(names, [*octets, *(o // 4000 for o in octets)], strict=True))
    errors = dict.fromkeys(("rx_errors", "tx_errors", "rx_dropped"), 0)
    r.attrs(f"{net}/statistics", stats | errors)
    r.link(f"{net}/device", pci)
    r.link(f"sys/class/net/{port.netdev}", net)
    if port.ibdev:
        _write_ibdev(b, pci, port, mac)


def _write_ibdev(b: _Build, pci: str, port: Port, mac: str) -> None:
    r, card, ib = b.root, port.card, port.infiniband
    if card is None:
        raise ValueError(f"{port.ibdev}: an RDMA port needs its adapter card")
    dev = f"{pci}/infiniband/{port.ibdev}"
    guid = port.guid.to_bytes(8, "big")
    sys_guid = (port.sys_guid or port.guid).to_bytes(8, "big")
    values = {"node_guid": _hexbytes(guid, group=2), "sys_image_guid": _hexbytes(sys_guid, group=2)}
    values |= {"node_type": "1: CA", "node_desc": f"{b.machine.hostname} {port.ibdev}"}
    values |= {"fw_ver": card.fw_ver, "hca_type": card.hca_type, "board_id": card.board_id}
    r.attrs(dev, values | {"hw_rev": "0x0"})
    r.link(f"{dev}/device", pci)
    r.link(f"sys/class/infiniband/{port.ibdev}", dev)
    p = f"{dev}/ports/1"
    state: dict[str, object] = {"state": "4: ACTIVE", "phys_state": "5: LinkUp"}
    if not port.up:
        state = {"state": "1: DOWN", "phys_state": "3: Disabled"}
    state |= {"rate": f"{port.gbps} Gb/sec ({_RATES[port.gbps]})"}
    state |= {"link_layer": "InfiniBand" if ib else "Ethernet", "lid": f"0x{port.lid:x}"}
    state |= {"sm_lid": "0x1" if ib and port.up else "0x0", "sm_sl": 0, "lid_mask_count": 0}
    r.attrs(p, state | {"cap_mask": "0xa751e848" if ib else "0x04010000"})
    r.attrs(f"{p}/pkeys", {"0": "0xffff"})
    link_local = bytes.fromhex("fe80" + "00" * 6)
    if ib:
        gids = [(link_local + guid, "IB/RoCE v1")]
    else:  # RoCE: link-local GID from the MAC's EUI-64, then the IPv4 one; each v1 and v2
        raw = bytes.fromhex(mac.replace(":", ""))
        addrs = [link_local + bytes([raw[0] ^ 2]) + raw[1:3] + b"\xff\xfe" + raw[3:]]
        if port.ipv4:
            addrs.append(bytes(10) + b"\xff\xff" + bytes(int(x) for x in port.ipv4.split(".")))
        gids = [(a, kind) for a in addrs for kind in ("IB/RoCE v1", "RoCE v2")]
    for i, (gid, kind) in enumerate(gids):
        r.attrs(f"{p}/gids", {str(i): _hexbytes(gid, group=2)})
        r.attrs(f"{p}/gid_attrs/types", {str(i): kind})
        if not ib:  # reading ndevs/<i> of an InfiniBand port fails with EINVAL
            r.attrs(f"{p}/gid_attrs/ndevs", {str(i): port.netdev})
    seed = digest(port.ibdev, port.guid)
    words = [int.from_bytes(seed[i : i + 5], "big") if port.up else 0 for i in (0, 5)]
    traffic = [*words, *(w // 1024 for w in words)]  # data counts 4-octet words; ~4 KiB packets
    counters = dict(zip(_COUNTERS, traffic, strict=True)) | dict.fromkeys(_ERRORS, 0)
    r.attrs(f"{p}/counters", counters)


def _write_nvme(b: _Build, pci: str, fn: Fn, node: int) -> None:
    r, n = b.root, fn.nvme
    if n is None:
        return
    strings = {"model": n.model.ljust(40), "serial": n.serial.ljust(20)}
    strings["firmware_rev"] = n.firmware.ljust(8)
    ctrl = f"{pci}/nvme/nvme{n.ctrl}"
    values = {"transport": "pcie", "address": fn.addr, "state": "live", "subsysnqn": n.nqn}
    values |= {"numa_node": str(node if fn.numa is None else fn.numa), "cntlid": "6"}
    r.attrs(ctrl, strings | values)
    r.link(f"{ctrl}/device", pci)
    r.link(f"sys/class/nvme/nvme{n.ctrl}", ctrl)
    subsys = f"sys/devices/virtual/nvme-subsystem/nvme-subsys{n.subsys}"
    r.attrs(subsys, strings | {"subsysnqn": n.nqn, "iopolicy": "numa", "subsystype": "nvm"})
    r.link(f"{subsys}/nvme{n.ctrl}", ctrl)
    r.link(f"sys/class/nvme-subsystem/nvme-subsys{n.subsys}", subsys)
    if b.machine.multipath:  # head disk in the subsystem, hidden path in the controller
        _write_namespace(b, n, f"{subsys}/nvme{n.subsys}n1", head=True)
        _write_namespace(b, n, f"{ctrl}/nvme{n.subsys}c{n.ctrl}n1", head=False)
    else:
        _write_namespace(b, n, f"{ctrl}/nvme{n.ctrl}n1", head=True)


def _write_namespace(b: _Build, n: Nvme, path: str, *, head: bool) -> None:
    r = b.root
    wwid = "eui." + digest(n.serial).hex()[:32]
    r.attrs(path, {"size": n.sectors, "nsid": 1, "wwid": wwid, "ro": 0, "removable": 0})
    if head:  # a hidden multipath path has no block device number
        r.attrs(path, {"dev": f"259:{b.disk_minor}"})
        b.disk_minor += 1
    queue = {"logical_block_size": n.lba, "physical_block_size": n.lba}
    r.attrs(f"{path}/queue", queue | {"hw_sector_size": n.lba, "rotational": 0})
    r.link(f"{path}/device", os.path.dirname(path))
    name = os.path.basename(path)
    r.link(f"sys/block/{name}", path)
    r.link(f"sys/class/block/{name}", path)


# module: (size, modules using it)
_MODULES = {
    "nvidia_peermem": (16384, ()),
    "nvidia_uvm": (4911104, ()),
    "nvidia_modeset": (1552384, ()),
    "nvidia": (54005760, ("nvidia_uvm", "nvidia_peermem", "nvidia_modeset")),
    "mlx5_ib": (491520, ()),
    "ib_uverbs": (196608, ("nvidia_peermem", "mlx5_ib")),
    "ib_core": (466944, ("ib_uverbs", "mlx5_ib")),
    "mlx5_core": (2441216, ("mlx5_ib",)),
    "mlx_compat": (20480, ("mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs")),
    "ice": (1122304, ()),
    "ixgbe": (479232, ()),
    "nvme": (61440, ()),
    "nvme_core": (212992, ("nvme",)),
    "ast": (73728, ()),
}
_DRIVER_MODULES = {  # a bound driver and the modules loaded with it
    "nvidia": ("nvidia_peermem", "nvidia_uvm", "nvidia_modeset", "nvidia"),
    "mlx5_core": ("mlx5_ib", "ib_uverbs", "ib_core", "mlx5_core"),
    "nvme": ("nvme", "nvme_core"),
}


def _write_modules(b: _Build) -> None:
    """/proc/modules: `name size refcount users, state address (taint)`."""
    loaded = [mod for drv in sorted(b.bound) for mod in _DRIVER_MODULES.get(drv, (drv,))]
    if b.machine.ofed and "mlx5_core" in loaded:
        loaded.append("mlx_compat")
        b.root.text("sys/module/mlx5_core/version", f"{b.machine.ofed}\n")
        b.root.text(
            "usr/bin/ofed_info",
            '#!/bin/bash\nif [ "X$1" == "X-s" ]; then '
            f'echo "OFED-internal-{b.machine.ofed}:"; exit 0; fi\n'
            f'echo "OFED-internal-{b.machine.ofed}:"\n',
            0o755,
        )
    lines = []
    for name in (mod for mod in loaded if mod in _MODULES):
        size, users = _MODULES[name]
        using = [u for u in users if u in loaded]
        deps = "".join(f"{u}," for u in using) or "-"
        oot = name.startswith("nvidia") or (b.machine.ofed and name.startswith(("mlx", "ib_")))
        taint = " (OE)" if oot else ""
        lines.append(f"{name} {size} {len(using)} {deps} Live 0x0000000000000000{taint}\n")
    b.root.text("proc/modules", "".join(lines))


_PROCFS_INFORMATION = (  # nv-procfs.c's tab layout (data/proc_driver_..._H100.tabs)
    "Model: \t\t {model}\nIRQ:   \t\t {irq}\nGPU UUID: \t {uuid}\nVideo BIOS: \t {vbios}\n"
    "Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\n"
    "Bus Location: \t {bdf}\nDevice Minor: \t {minor}\nGPU Firmware: \t {firmware}\n"
    "GPU Excluded:\t No\n"
)


def _write_nvidia(b: _Build, nv: Nvidia, *, nvml: bool) -> None:
    r, m = b.root, b.machine
    recording = nvml_recording(m)
    if not b.driver:
        if nvml and recording:  # what NVML answers without the kernel module
            recording |= {"available": False, "error": "Driver Not Loaded", "devices": []}
            recording |= {"driver_version": "", "cuda_driver_version": ""}
            _write_probe(r, "nvml", recording)
        return
    r.text(
        "proc/driver/nvidia/version",
        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {nv.version}  Release Build"
        f"  {nv.build}\nGCC version:  {nv.gcc}\n",
    )
    devices = recording["devices"] if recording else []
    for minor, address in enumerate(gpu_addresses(m)):
        known = devices[minor] if devices else {}
        info = _PROCFS_INFORMATION.format(
            model=known.get("name", nv.model),
            irq=16 + minor * 2,
            uuid=known.get("uuid") or f"GPU-{synthetic_uuid(m.hostname, address)}",
            vbios=known.get("vbios_version", nv.vbios),
            bdf=address,
            minor=minor,
            firmware=nv.version,
        )
        r.text(f"proc/driver/nvidia/gpus/{address}/information", info)
    if nvml and recording:
        _write_probe(r, "nvml", recording)


def _write_probe(r: _Root, probe: str, recording: Mapping[str, Any]) -> None:
    r.text(f".nodeagent/probes/{probe}.json", json.dumps(recording, indent=2) + "\n")
