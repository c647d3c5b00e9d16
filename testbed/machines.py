"""Modelled machine roots: directory trees laid out like `/` of reference GPU servers.

`build_machine("dgx-h100", dest)` writes `sys/`, `proc/`, `etc/` and probe recordings of a
DGX H100 into an empty directory; discovery reads it through a HostRoot as it reads a live `/`.

What is recorded and what is modelled: PCIe layouts follow published lspci / `topo -m` dumps
and vendor guides (named per machine; the DGX H100 tree reproduces every PCIe cell of a real
`nvidia-smi topo -m`). GPU names, UUIDs, serials and VBIOS come from real `nvidia-smi -q`
outputs where a machine has an NVML recording (data/README.md). Serial numbers, GUIDs, MACs,
counters and the subsystem ids of some parts are synthetic: well formed and deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from testbed.tree import (
    Card,
    Cpu,
    Fn,
    Host,
    Machine,
    Nvidia,
    Nvme,
    Part,
    Port,
    build_tree,
    chain,
    digest,
    host_bridge,
    pci_address,
    switch,
    synthetic_uuid,
)

# ------------------------------------------------------------------------- parts catalogue
# Vendor/device ids, classes and revisions as in sysfs.md §3 and the lspci fixtures; root port
# and switch ids from public lspci dumps (8086:352a SPR, 1022:14ab Genoa, 1000:c030 PEX890xx).
# Subsystem ids other than the GPUs', NVSwitch's and the DGX ConnectX-7's are placeholders.

_port = "pcieport"
SPR_ROOT = Part("8086:352a", "8086:0000", 0x060400, 0x04, _port, 32.0, 16)
GENOA_ROOT = Part("1022:14ab", "1022:14ab", 0x060400, 0x01, _port, 32.0, 16)
CX7_SWITCH = Part("15b3:1979", "15b3:0055", 0x060400, 0x00, _port, 32.0, 16)
PEX890 = Part("1000:c030", "1000:100b", 0x060400, 0xB0, _port, 32.0, 16)
PEX880 = Part("1000:c010", "1000:100b", 0x060400, 0xB0, _port, 16.0, 16)
AST_BRIDGE = Part("1a03:1150", "1a03:1150", 0x060400, 0x06, _port, 5.0, 1)
AST_VGA = Part("1a03:2000", "1a03:2000", 0x030000, 0x52, "ast", 0, 0)  # behind a PCI bridge
H100 = Part("10de:2330", "10de:16c1", 0x030200, 0xA1, "nvidia", 32.0, 16)
NVSWITCH = Part("10de:22a3", "10de:1796", 0x068000, 0xA1, "nvidia", 16.0, 2)
RTX_PRO_6000 = Part("10de:2bb5", "10de:204e", 0x030200, 0xA1, "nvidia", 32.0, 16)
CX7 = Part("15b3:1021", "15b3:0026", 0x020000, 0x00, "mlx5_core", 32.0, 16)
CX7_IB = replace(CX7, pci_class=0x020700)
CX7_OSFP_IB = replace(CX7_IB, subsystem="15b3:0055")  # DGX network module (MCX750500B)
CX6_DX = Part("15b3:101d", "15b3:0016", 0x020000, 0x00, "mlx5_core", 16.0, 16)
BLUEFIELD3 = Part("15b3:a2dc", "15b3:0051", 0x020000, 0x01, "mlx5_core", 32.0, 16)
E810 = Part("8086:1592", "8086:0002", 0x020000, 0x02, "ice", 16.0, 16)
X550 = Part("8086:1563", "8086:0001", 0x020000, 0x01, "ixgbe", 8.0, 4)
PM9A3 = Part("144d:a80a", "144d:a813", 0x010802, 0x00, "nvme", 16.0, 4)
PM1733 = Part("144d:a824", "144d:a809", 0x010802, 0x00, "nvme", 16.0, 4)
B200 = Part("10de:2901", "10de:1999", 0x030200, 0xA1, "nvidia", 32.0, 16)
BLUEFIELD3_DPU = Part("15b3:a2dc", "15b3:0052", 0x020000, 0x01, "mlx5_core", 32.0, 16)
MICRON_7450 = Part("1344:51c3", "1344:4100", 0x010802, 0x01, "nvme", 16.0, 4)

CX7_OSFP_CARD = Card("MT4129", "28.39.1002", "MT_0000000838")
CX7_DUAL_CARD = Card("MT4129", "28.39.1002", "MT_0000000834")
CX6_DX_CARD = Card("MT4125", "22.39.1002", "MT_0000000359")
BF3_CARD = Card("MT41692", "32.39.3808", "MT_0000001070")

# ------------------------------------------------------------------------- CPUs and systems

_SPR_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
    "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon "
    "pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq "
    "dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 "
    "x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch "
    "cpuid_fault epb cat_l3 cat_l2 cdp_l3 invpcid_single intel_ppin cdp_l2 ssbd mba ibrs ibpb "
    "stibp ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 "
    "smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt "
    "clwb intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc "
    "cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect avx_vnni avx512_bf16 wbnoinvd "
    "dtherm ida arat pln pts hfi vnmi avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes "
    "vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid bus_lock_detect "
    "cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk pconfig arch_lbr ibt "
    "amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities"
)
_GENOA_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good amd_lbr_v2 "
    "nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 "
    "pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm "
    "extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext "
    "perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba "
    "perfmon_v2 ibrs ibpb stibp ibrs_enhanced vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid "
    "cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total "
    "cqm_mbm_local avx512_bf16 clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin cppc arat npt "
    "lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter "
    "pfthreshold avic v_vmsave_vmload vgif x2avic v_spec_ctrl vnmi avx512vbmi umip pku ospke "
    "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid "
    "overflow_recov succor smca fsrm flush_l1d"
)
XEON_8480C = Cpu(
    vendor="GenuineIntel",
    name="Intel(R) Xeon(R) Platinum 8480C",
    family=6,
    model=143,
    stepping=8,
    microcode="0x2b000590",
    mhz="2000.000",
    cache="107520 KB",
    bogomips="4000.00",
    address_sizes="46 bits physical, 57 bits virtual",
    cpuid_level=32,
    flags=_SPR_FLAGS,
    bugs="spectre_v1 spectre_v2 spec_store_bypass swapgs eibrs_pbrsb bhi",
    tail="clflush size\t: 64\ncache_alignment\t: 64\n",
    sockets=2,
    cores=56,
    max_khz=3800000,
    scaling_driver="intel_pstate",
    governor="performance",
    idle_driver="intel_idle",
)
XEON_8480P = replace(XEON_8480C, name="Intel(R) Xeon(R) Platinum 8480+", governor="powersave")
_AMD_TAIL = (
    "TLB size\t: 3584 4K pages\nclflush size\t: 64\ncache_alignment\t: 64\n"
    "power management: ts ttp tm hwpstate cpb eff_freq_ro [13] [14]\n"
)
EPYC_9554 = Cpu(
    vendor="AuthenticAMD",
    name="AMD EPYC 9554 64-Core Processor",
    family=25,
    model=17,
    stepping=1,
    microcode="0xa101148",
    mhz="3100.000",
    cache="1024 KB",
    bogomips="6190.74",
    address_sizes="52 bits physical, 57 bits virtual",
    cpuid_level=16,
    flags=_GENOA_FLAGS,
    bugs="sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso",
    tail=_AMD_TAIL,
    sockets=2,
    cores=64,
    max_khz=3762000,
    scaling_driver="acpi-cpufreq",
    governor="schedutil",
    idle_driver="acpi_idle",
)
EPYC_9654 = replace(
    EPYC_9554,
    name="AMD EPYC 9654 96-Core Processor",
    mhz="2400.000",
    bogomips="4792.55",
    sockets=1,
    cores=96,
    max_khz=3709000,
    scaling_driver="amd-pstate-epp",
    governor="performance",
)

_UBUNTU = (
    'HOME_URL="https://www.ubuntu.com/"\nSUPPORT_URL="https://help.ubuntu.com/"\n'
    'BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"\n'
    'PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"\n'
)
UBUNTU_2204 = (
    'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
    'VERSION="22.04.5 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n'
    f"{_UBUNTU}UBUNTU_CODENAME=jammy\n"
)
UBUNTU_2404 = (
    'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
    'VERSION="24.04.1 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n'
    f"{_UBUNTU}UBUNTU_CODENAME=noble\nLOGO=ubuntu-logo\n"
)
ORACLE_LINUX_8 = (
    'NAME="Oracle Linux Server"\nVERSION="8.10"\nID="ol"\nID_LIKE="fedora"\nVARIANT="Server"\n'
    'VARIANT_ID="server"\nVERSION_ID="8.10"\nPLATFORM_ID="platform:el8"\n'
    'PRETTY_NAME="Oracle Linux Server 8.10"\nANSI_COLOR="0;31"\n'
    'CPE_NAME="cpe:/o:oracle:linux:8:10:server"\nHOME_URL="https://linux.oracle.com/"\n'
    'BUG_REPORT_URL="https://github.com/oracle/oracle-linux"\n'
)


def _dmi(
    vendor: str, product: str, board: str, bios: str, date: str, **more: str
) -> dict[str, str]:
    serial = digest(vendor, product, "serial").hex()[:10].upper()
    values = {"sys_vendor": vendor, "product_name": product, "product_serial": serial}
    values |= {"product_uuid": synthetic_uuid(vendor, product), "board_vendor": vendor}
    values |= {"board_name": board, "board_serial": f"{serial}B", "chassis_vendor": vendor}
    values |= {"bios_vendor": "American Megatrends International, LLC.", "bios_version": bios}
    values |= {"bios_date": date, "chassis_type": "23", "chassis_serial": serial}
    return values | {"chassis_asset_tag": ""} | more


# kind: (model, firmware, 512-byte sectors, NQN model part)
_SAMSUNG = {
    "pm9a3-m2": ("SAMSUNG MZ1L21T9HCLS-00A07", "GDC7302Q", 3750748848, "PM9A3:M.2"),
    "pm9a3-u2": ("SAMSUNG MZQL21T9HCJR-00A07", "GDC5602Q", 3750748848, "PM9A3:2.5-inch"),
    "pm1733": ("SAMSUNG MZWLJ3T8HBLS-00007", "EPK9GB5Q", 7501476528, "PM1733:2.5-inch"),
}


def _samsung(kind: str, ctrl: int, machine: str, subsys: int | None = None, lba: int = 512) -> Nvme:
    model, firmware, sectors, nqn_model = _SAMSUNG[kind]
    serial = "S6" + digest(machine, ctrl).hex()[:12].upper()
    nqn = f"nqn.1994-11.com.samsung:nvme:{nqn_model}:{serial}"
    subsys = ctrl if subsys is None else subsys
    return Nvme(ctrl, subsys, model, serial, firmware, sectors, lba, nqn)


def _micron(ctrl: int, machine: str) -> Nvme:
    """Micron 7450 PRO 3.84 TB, formatted 4K; the drive reports no NQN, the kernel makes one."""
    model = "Micron_7450_MTFDKCC3T8TFR"
    serial = "2245" + digest(machine, ctrl).hex()[:8].upper()
    nqn = f"nqn.2014.08.org.nvmexpress:13441344{serial:<20}{model:<40}"
    return Nvme(ctrl, ctrl, model, serial, "E2MU200", 7501476528, 4096, nqn)


def _drives(host_bus: int, node: int, root: Part, part: Part, drives: Sequence[Nvme]) -> Host:
    """NVMe drives, each on its own root port (device 1, 2, ...) of one host bridge."""
    ports = ((d, 0, [Fn(pci_address(host_bus + d), part, nvme=n)]) for d, n in enumerate(drives, 1))
    return host_bridge(host_bus, node, root, *ports)


def _bmc_vga(bus: int) -> Fn:
    """The BMC's VGA function, behind its AST1150 PCIe-to-PCI bridge."""
    return Fn(pci_address(bus), AST_BRIDGE, (Fn(pci_address(bus + 1), AST_VGA),))


def _nvswitches(up_bus: int) -> Fn:
    """Four NVSwitches behind a management PCIe switch (Gen4 x2 links)."""
    legs = ((d, [Fn(pci_address(up_bus + 2 + d), NVSWITCH)]) for d in range(4))
    return switch(pci_address(up_bus), PEX880, *legs)


def _ib(
    netdev: str, ibdev: str, card: Card, guid: int, lid: int, up: bool, card_guid: int = 0
) -> Port:
    """An NDR InfiniBand port; `up`: its IPoIB netdev is configured (datagram mode)."""
    return Port(
        netdev, 400, ibdev, card, True, guid, lid=lid, ipoib_up=up, mtu=4092, sys_guid=card_guid
    )


def _roce(
    netdev: str,
    ibdev: str,
    card: Card,
    gbps: int,
    guid: int,
    ipv4: str,
    *,
    fn: int = 0,
    card_guid: int = 0,
    mtu: int = 9000,
) -> Port:
    """Port `fn` of an mlx5 adapter in Ethernet mode (RoCE), with one IPv4 address."""
    return Port(
        netdev,
        gbps,
        ibdev,
        card,
        guid=guid,
        ipv4=ipv4,
        mtu=mtu,
        sys_guid=card_guid,
        port_name=f"p{fn}",
    )


# ------------------------------------------------------------------------- DGX H100

DGX_NIC_BUSES = (0x18, 0x40, 0x4F, 0x5E, 0x9A, 0xC0, 0xCE, 0xDC)
DGX_NIC_NAMES = (0, 3, 4, 5, 6, 9, 10, 11)


def _dgx_module(k: int) -> Host:
    """Compute network module k (sysfs.md §11; the Lenovo SD665-N V3 lspci shows the same
    ConnectX-7): own host bridge, root port -> the ConnectX-7's integrated switch; the NIC at
    bus b below one downstream port, the GPU at b+3 below two more bridges."""
    b, mlx = DGX_NIC_BUSES[k], DGX_NIC_NAMES[k]
    guid = 0xA088C20300B25C6E + 0x1000 * k
    port = _ib(f"ibp{b}s0", f"mlx5_{mlx}", CX7_OSFP_CARD, guid, 0x2A + k, up=k % 2 == 0)
    gpu = chain([pci_address(b + 1), pci_address(b + 2)], CX7_SWITCH, Fn(pci_address(b + 3), H100))
    nic = Fn(pci_address(b), CX7_OSFP_IB, port=port)
    module = switch(pci_address(b - 2), CX7_SWITCH, (0, [nic]), (2, [gpu]))
    return host_bridge(b - 3, k // 4, SPR_ROOT, (1, 0, [module]))


def _dgx_storage(bus: int, node: int, first: int, guid: int) -> Host:
    """A dual-port storage ConnectX-7 (port 1 InfiniBand, port 2 RoCE) on its own root port."""
    card = CX7_DUAL_CARD
    ib = _ib(f"ibp{bus}s0f0", f"mlx5_{first}", card, guid, 0x11 + first, True, guid)
    ipv4 = f"10.130.{node}.21"
    eth = _roce(
        f"enp{bus}s0f1np1", f"mlx5_{first + 1}", card, 200, guid + 1, ipv4, fn=1, card_guid=guid
    )
    pair = [Fn(pci_address(bus, 0, 0), CX7_IB, port=ib), Fn(pci_address(bus, 0, 1), CX7, port=eth)]
    return host_bridge(bus - 1, node, SPR_ROOT, (1, 0, pair))


def dgx_h100() -> Machine:
    """NVIDIA DGX H100: 2x Xeon 8480C, 8 H100 SXM5 each behind its compute ConnectX-7 (IB NDR),
    2 dual-port storage ConnectX-7, E810 + X550 management, 4 NVSwitches, BMC VGA, 2 boot + 8
    data NVMe with native multipath (DGX H100/H200 User Guide tables 5-6;
    data/nvidia-smi-topo-m_DGX-H100_12nic.txt)."""
    name = "dgx-h100-01"
    boot = [_samsung("pm9a3-m2", c, name) for c in (0, 1)]
    # probes of the data drives completed out of order: controller nvme2 is nvme-subsys3, ...
    data = [
        _samsung("pm1733", c, name, subsys=c + 1 if c % 2 == 0 else c - 1) for c in range(2, 10)
    ]
    eno3 = Port("eno3", 10, mac="5c:ff:35:7e:4a:10")
    legacy = host_bridge(
        0x00,
        0,
        SPR_ROOT,
        (0x01, 0, [_nvswitches(0x03)]),
        (0x1C, 0, [_bmc_vga(0x09)]),
        (0x1C, 4, [Fn(pci_address(0x0B), X550, port=eno3)]),
        *((0x1D, 4 * i, [Fn(pci_address(0x0C + i), PM9A3, nvme=n)]) for i, n in enumerate(boot)),
    )
    e810 = [
        Fn(
            pci_address(0x82, 0, f),
            E810,
            port=Port(f"ens6f{f}", 100, mac=f"b4:96:91:c2:1e:{f:02x}", up=f == 0),
        )
        for f in (0, 1)
    ]
    hosts = [
        legacy,
        *(_dgx_module(k) for k in range(8)),
        _dgx_storage(0x29, 0, 1, 0xA088C20300B25D10),
        _dgx_storage(0xAA, 1, 7, 0xA088C20300B25D20),
        host_bridge(0x81, 1, SPR_ROOT, (1, 0, e810)),
        _drives(0x6A, 0, SPR_ROOT, PM1733, data[:4]),
        _drives(0xE4, 1, SPR_ROOT, PM1733, data[4:]),
    ]
    return Machine(
        hostname=name,
        dmi=_dmi("NVIDIA", "DGXH100", "DGXH100", "1.5.1", "09/13/2023", product_family="DGX"),
        cpu=XEON_8480C,
        node_kib=1056429832,
        remote_distance=21,
        os_release=UBUNTU_2204,
        kernel="5.15.0-1063-nvidia",
        kernel_version="#64-Ubuntu SMP Mon Aug 19 14:21:29 UTC 2024",
        cmdline="BOOT_IMAGE=/boot/vmlinuz-5.15.0-1063-nvidia root=/dev/md0 ro console=tty0 "
        "console=ttyS0,115200n8 rd.driver.blacklist=nouveau nouveau.modeset=0 init_on_alloc=0",
        hosts=tuple(sorted(hosts, key=lambda h: h.bus)),
        multipath=True,
        # Recorded values of a real HGX H100 (buses 18,2a,3a,5d,9a,ab,ba,db), placed in order
        # on the DGX H100 GPU addresses 1b,43,52,61,9d,c3,d1,df; 18 active NVLinks per GPU.
        nvidia=Nvidia("565.57.01", _R565_BUILD, "nvidia-smi-q_H100SXMx8.txt", nvlinks=18),
        files={"etc/dgx-release": _DGX_RELEASE},
    )


_R565_BUILD = "(dvs-builder@U16-I3-B03-4-3)  Fri Oct 11 17:08:34 UTC 2024"
_DGX_RELEASE = (
    'DGX_NAME="DGX Server"\nDGX_PRETTY_NAME="NVIDIA DGX Server"\nDGX_SWBUILD_VERSION="6.3.1"\n'
    'DGX_PLATFORM="DGX Server for DGX H100"\n'
)

# ------------------------------------------------------------------------- OCI BM.GPU.H100.8

OCI_GPU_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
OCI_RDMA_TOPOLOGY = {
    "customerHPCIslandId": "ocid1.hpcisland.oc1.iad.anuwcljrg5pyaeycajoqlss",
    "customerNetworkBlock": "ocid1.networkblock.oc1.iad.anuwcljrp7hnzdqc4pbhxoqqf",
    "customerLocalBlock": "ocid1.localblock.oc1.iad.anuwcljrv5xpuyqcnp7nxaaiz",
    "customerHostId": "ocid1.computebaremetalhost.oc1.iad.anuwcljrmwqgnbqcm4vjkwmwf",
}


def _oci_gpu_switch(i: int, name: str) -> Fn:
    """GPU i's second-level PCIe switch: the GPU at bus g, its dual-port ConnectX-7 (RoCE
    rdma<2i>, rdma<2i+1>) at g+1, two NVMe at g+2 and g+3."""
    g, guid = OCI_GPU_BUSES[i], 0x946DAE0300C81A00 + 0x10 * i
    nics = []
    for f in (0, 1):
        k = 2 * i + f
        ipv4 = f"10.224.{k}.17"
        port = _roce(
            f"rdma{k}",
            f"mlx5_{k}",
            CX7_DUAL_CARD,
            200,
            guid + f,
            ipv4,
            fn=f,
            card_guid=guid,
            mtu=4220,
        )
        nics.append(Fn(pci_address(g + 1, 0, f), CX7, port=port))
    nvme = [_samsung("pm1733", 2 * i + d, name, lba=4096) for d in (0, 1)]
    drives = [Fn(pci_address(g + 2 + d), PM1733, nvme=n) for d, n in enumerate(nvme)]
    legs = (0, [Fn(pci_address(g), H100)]), (1, nics), (2, drives[:1]), (3, drives[1:])
    return switch(pci_address(g - 2), PEX890, *legs)


def _oci_gpu_pair(host_bus: int, node: int, first: int, name: str) -> Host:
    """GPUs `first` and `first + 1` on one host bridge, as on the HPE XD670 HGX H100
    (data/nvidia-smi-topo-m_HPE-XD670_...): root port -> PCIe switch -> a switch per GPU.
    GPU <-> own NICs PIX, <-> the other GPU's NICs PXB."""
    legs = ((k, [_oci_gpu_switch(first + k, name)]) for k in (0, 1))
    return host_bridge(
        host_bus, node, SPR_ROOT, (1, 0, [switch(pci_address(host_bus + 1), PEX890, *legs)])
    )


def oci_bm_gpu_h100_8() -> Machine:
    """OCI BM.GPU.H100.8-like: HGX H100 with discrete PCIe switches, 2x Xeon 8480+, 16 RoCE
    ConnectX-7 ports (2 per GPU, 200 Gb/s), a ConnectX-6 Dx front-end port, 16 local NVMe
    without native multipath, OCI instance metadata recorded."""
    name = "gpu-h100-0017"
    frontend = _roce("ens300np0", "mlx5_16", CX6_DX_CARD, 100, 0xB83FD20300A1B2C4, "10.0.64.17")
    hosts = (
        host_bridge(0x00, 0, SPR_ROOT, (1, 0, [_nvswitches(0x03)]), (0x1C, 0, [_bmc_vga(0x09)])),
        _oci_gpu_pair(0x13, 0, 0, name),
        _oci_gpu_pair(0x35, 0, 2, name),
        _oci_gpu_pair(0x95, 1, 4, name),
        _oci_gpu_pair(0xB5, 1, 6, name),
        host_bridge(0xE8, 1, SPR_ROOT, (1, 0, [Fn(pci_address(0xE9), CX6_DX, port=frontend)])),
    )
    kernel = "5.15.0-208.159.3.2.el8uek.x86_64"
    oci = {"probe": "oci", "version": 1, "rdmaTopologyData": OCI_RDMA_TOPOLOGY}
    return Machine(
        hostname=name,
        dmi=_dmi(
            "Oracle Corporation",
            "BM.GPU.H100.8",
            "X9-2c",
            "2.1.7",
            "05/21/2024",
            chassis_asset_tag="OracleCloud.com",
        ),
        cpu=XEON_8480P,
        node_kib=1056429832,
        remote_distance=21,
        os_release=ORACLE_LINUX_8,
        kernel=kernel,
        kernel_version="#2 SMP Wed Jul 17 11:24:46 PDT 2024",
        cmdline=f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{kernel} root=/dev/mapper/ocivolume-root ro "
        "netroot=iscsi:169.254.0.2:::1:iqn.2015-02.oracle.boot:uefi net.ifnames=1 "
        "nvme_core.multipath=N nvme_core.shutdown_timeout=10 intel_iommu=on iommu=pt",
        hosts=hosts,
        multipath=False,
        # GPUs at the recording's own addresses: it applies unchanged
        nvidia=Nvidia(
            "565.57.01",
            _R565_BUILD,
            "nvidia-smi-q_H100SXMx8.txt",
            nvlinks=18,
            gcc="gcc version 8.5.0 20210514 (Red Hat 8.5.0-22.0.1) (GCC) ",
        ),
        files={".nodeagent/probes/oci.json": json.dumps(oci, indent=2) + "\n"},
    )


# ------------------------------------------------------------------------- RTX PRO 6000


def _rtx_switch(host_bus: int, node: int, leaves: Sequence[Fn]) -> Host:
    """AMD root port -> PEX890xx switch; leaf k below downstream port k, at bus h+3+k."""
    legs = ((d, [leaf]) for d, leaf in enumerate(leaves))
    return host_bridge(
        host_bus, node, GENOA_ROOT, (1, 1, [switch(pci_address(host_bus + 1), PEX890, *legs)])
    )


def rtx_pro_6000() -> Machine:
    """8x RTX PRO 6000 Blackwell Server Edition (Supermicro AS -5126GS-TNRT-like): 2x EPYC
    9554, 4 GPUs per socket behind PCIe switches, 2 BlueField-3 SuperNICs, 4 NVMe. GPU 5 has
    trained down to x8; GPU 6's firmware gives no NUMA proximity (numa_node -1)."""
    name = "rtx-pro-01"

    def gpu(bus: int, width: int | None = None, numa: int | None = None) -> Fn:
        return Fn(pci_address(bus), RTX_PRO_6000, width=width, numa=numa)

    def supernic(k: int, bus: int) -> Fn:
        port = _roce(
            f"enp{bus}s0np0", f"mlx5_{k}", BF3_CARD, 400, 0x5C25730300E4C1A0 + k, f"10.150.{k}.11"
        )
        return Fn(pci_address(bus), BLUEFIELD3, port=port)

    drives = [_micron(c, name) for c in range(4)]
    return Machine(
        hostname=name,
        dmi=_dmi(
            "Supermicro", "AS -5126GS-TNRT", "H13DSG-O-CPU", "1.8", "06/14/2024", chassis_type="17"
        ),
        cpu=EPYC_9554,
        node_kib=792302516,
        remote_distance=32,
        os_release=UBUNTU_2404,
        kernel=_NOBLE[0],
        kernel_version=_NOBLE[1],
        cmdline=_NOBLE[2],
        hosts=(
            _rtx_switch(0x00, 0, [gpu(0x03), gpu(0x04), supernic(0, 0x05)]),
            _rtx_switch(0x20, 0, [gpu(0x23), gpu(0x24)]),
            _drives(0x40, 0, GENOA_ROOT, MICRON_7450, drives[:2]),
            host_bridge(0x60, 0, GENOA_ROOT, (5, 2, [_bmc_vga(0x61)])),
            _rtx_switch(0x80, 1, [gpu(0x83), gpu(0x84, width=8), supernic(1, 0x85)]),
            _rtx_switch(0xA0, 1, [gpu(0xA3, numa=-1), gpu(0xA4)]),
            _drives(0xC0, 1, GENOA_ROOT, MICRON_7450, drives[2:]),
        ),
        multipath=True,
        # driver loaded, but no NVML recording exists for this machine
        nvidia=Nvidia(
            "580.65.06",
            "(dvs-builder@U22-I3-AF03-09-1)  Sun Jul 27 06:54:38 UTC 2025",
            model="NVIDIA RTX PRO 6000 Blackwell Server Edition",
            vbios="98.02.52.00.02",
        ),
    )


# ------------------------------------------------------------------------- reference designs
# The RUN:AI/OSMO-on-Kubespray reference's worker nodes: Ubuntu 24.04, 6.8.0-85-generic,
# driver 580.82.07 from the GPU Operator, inbox RDMA drivers (no OFED/MOFED).

_NOBLE_85 = (
    "6.8.0-85-generic",
    "#85-Ubuntu SMP PREEMPT_DYNAMIC Thu Sep 18 15:26:59 UTC 2025",
    "BOOT_IMAGE=/vmlinuz-6.8.0-85-generic root=/dev/mapper/ubuntu--vg-ubuntu--lv ro",
)
_R580_82 = "(dvs-builder@U22-I3-AF03-09-1)  Thu Aug 28 16:27:04 UTC 2025"
BF3_DPU_CARD = Card("MT41692", "32.45.1020", "MT_0000001116")
CX7_400_CARD = Card("MT4129", "28.45.1020", "MT_0000000838")


def _gpu_switch(host_bus: int, node: int, root: Part, leaves: Sequence[Fn]) -> Host:
    """Root port -> PEX890xx switch; leaf k below downstream port k, at bus h+3+k."""
    legs = ((d, [leaf]) for d, leaf in enumerate(leaves))
    return host_bridge(
        host_bus, node, root, (1, 1, [switch(pci_address(host_bus + 1), PEX890, *legs)])
    )


def _north_south(k: int, bus: int, node: int, root: Part) -> Host:
    """The north-south BlueField-3 DPU on a root port of its own: no GPU shares its switch."""
    port = _roce(
        f"enp{bus}s0f0np0", f"mlx5_{k}", BF3_DPU_CARD, 200, 0x5C25730300F0A100 + k, "10.10.0.21"
    )
    return host_bridge(
        bus - 1, node, root, (1, 0, [Fn(pci_address(bus), BLUEFIELD3_DPU, port=port)])
    )


def rtx_pro_2_8_5_200(*, missing: int | None = None, slow: int | None = None) -> Machine:
    """NVIDIA 2-8-5-200 RTX PRO Server (the reference's rtxprosrv1): 2x EPYC 9554, 8 RTX PRO
    6000 Blackwell Server Edition, two per PCIe switch, with a BlueField-3 SuperNIC at 400 Gb/s
    on each switch (4 east-west rails, 200 Gb/s per GPU) and a BlueField-3 DPU north-south.
    `missing`: east-west adapter k is absent; `slow`: adapter k runs at 200 Gb/s."""
    name = "rtxprosrv1"

    def gpu(bus: int) -> Fn:
        return Fn(pci_address(bus), RTX_PRO_6000)

    def supernic(k: int, bus: int) -> list[Fn]:
        if k == missing:
            return []
        gbps = 200 if k == slow else 400
        port = _roce(
            f"enp{bus}s0np0", f"mlx5_{k}", BF3_CARD, gbps, 0x5C25730300E4C2A0 + k, f"10.150.{k}.21"
        )
        return [Fn(pci_address(bus), BLUEFIELD3, port=port)]

    drives = [_micron(c, name) for c in range(4)]
    hosts = [
        _gpu_switch(0x00, 0, GENOA_ROOT, [gpu(0x03), gpu(0x04), *supernic(0, 0x05)]),
        _gpu_switch(0x20, 0, GENOA_ROOT, [gpu(0x23), gpu(0x24), *supernic(1, 0x25)]),
        _drives(0x40, 0, GENOA_ROOT, MICRON_7450, drives[:2]),
        _north_south(4, 0x51, 0, GENOA_ROOT),
        host_bridge(0x60, 0, GENOA_ROOT, (5, 2, [_bmc_vga(0x61)])),
        _gpu_switch(0x80, 1, GENOA_ROOT, [gpu(0x83), gpu(0x84), *supernic(2, 0x85)]),
        _gpu_switch(0xA0, 1, GENOA_ROOT, [gpu(0xA3), gpu(0xA4), *supernic(3, 0xA5)]),
        _drives(0xC0, 1, GENOA_ROOT, MICRON_7450, drives[2:]),
    ]
    return Machine(
        hostname=name,
        dmi=_dmi(
            "Supermicro", "AS -5126GS-TNRT", "H13DSG-O-CPU", "3.1", "04/11/2025", chassis_type="17"
        ),
        cpu=EPYC_9554,
        node_kib=792302516,
        remote_distance=32,
        os_release=UBUNTU_2404,
        kernel=_NOBLE_85[0],
        kernel_version=_NOBLE_85[1],
        cmdline=_NOBLE_85[2],
        hosts=tuple(hosts),
        multipath=True,
        nvidia=Nvidia(
            "580.82.07",
            _R580_82,
            model="NVIDIA RTX PRO 6000 Blackwell Server Edition",
            vbios="98.02.52.00.02",
        ),
    )


def hgx_b200_2_8_9_400(
    *, missing: int | None = None, slow: int | None = None, ofed: str = ""
) -> Machine:
    """NVIDIA 2-8-9-400 HGX B200 (the reference's b200-1): 2x Xeon, 8 B200 on NVLink, each
    behind a PCIe switch it shares with its own 400 Gb/s ConnectX-7 (8 east-west rails, 400
    Gb/s per GPU), a BlueField-3 DPU north-south, 2 boot + 8 data NVMe. The VBIOS is the
    reference's 97.00.6E.00.07; the firmware bundle (25.09.1) lives in the HMC, not on the
    host. `missing`/`slow`: rail k absent / at 200 Gb/s; `ofed`: MLNX_OFED instead of inbox."""
    name = "b200-1"

    def module(k: int) -> Host:
        h = 0x10 + 0x10 * k
        leaves = [Fn(pci_address(h + 3), B200)]
        if k != missing:
            gbps = 200 if k == slow else 400
            port = _roce(
                f"enp{h + 4}s0np0",
                f"mlx5_{k}",
                CX7_400_CARD,
                gbps,
                0x946DAE0300D81B00 + k,
                f"10.160.{k}.31",
            )
            leaves.append(Fn(pci_address(h + 4), CX7, port=port))
        return _gpu_switch(h, k // 4, SPR_ROOT, leaves)

    boot = [_samsung("pm9a3-m2", c, name) for c in (0, 1)]
    data = [_samsung("pm1733", c, name) for c in range(2, 10)]
    legacy = host_bridge(
        0x00,
        0,
        SPR_ROOT,
        (0x1C, 0, [_bmc_vga(0x09)]),
        *((0x1D, 4 * i, [Fn(pci_address(0x0B + i), PM9A3, nvme=n)]) for i, n in enumerate(boot)),
    )
    hosts = [
        legacy,
        *(module(k) for k in range(8)),
        _drives(0x9A, 1, SPR_ROOT, PM1733, data[:4]),
        _north_south(8, 0xA9, 1, SPR_ROOT),
        _drives(0xB0, 1, SPR_ROOT, PM1733, data[4:]),
    ]
    return Machine(
        hostname=name,
        dmi=_dmi("Supermicro", "SYS-A22GA-NBRT", "X14DBG-AP", "1.3", "03/20/2025"),
        cpu=replace(XEON_8480C, name="INTEL(R) XEON(R) PLATINUM 8570"),
        node_kib=1056429832,
        remote_distance=21,
        os_release=UBUNTU_2404,
        kernel=_NOBLE_85[0],
        kernel_version=_NOBLE_85[1],
        cmdline=_NOBLE_85[2],
        hosts=tuple(sorted(hosts, key=lambda h: h.bus)),
        multipath=True,
        nvidia=Nvidia("580.82.07", _R580_82, model="NVIDIA B200", vbios="97.00.6E.00.07"),
        ofed=ofed,
    )


_NOBLE = (
    "6.8.0-48-generic",
    "#48-Ubuntu SMP PREEMPT_DYNAMIC Fri Sep 27 14:04:52 UTC 2024",
    "BOOT_IMAGE=/vmlinuz-6.8.0-48-generic root=/dev/mapper/ubuntu--vg-ubuntu--lv ro",
)

# ------------------------------------------------------------------------- CPU node


def cpu_node() -> Machine:
    """A CPU-only node: 1x EPYC 9654, a dual-port ConnectX-6 Dx (RoCE), 2 NVMe, BMC VGA."""
    name, guid = "cpu-node-01", 0xB83FD20300A1C3E0
    cx6 = []
    for f in (0, 1):
        ipv4 = f"10.40.{f}.5"
        port = _roce(
            f"enp65s0f{f}np{f}", f"mlx5_{f}", CX6_DX_CARD, 100, guid + f, ipv4, fn=f, card_guid=guid
        )
        cx6.append(Fn(pci_address(0x41, 0, f), CX6_DX, port=port))
    drives = [_samsung("pm9a3-u2", c, name) for c in (0, 1)]
    return Machine(
        hostname=name,
        dmi=_dmi("Supermicro", "AS -1115CS-TNR", "H13SSW", "1.6", "02/29/2024", chassis_type="17"),
        cpu=EPYC_9654,
        node_kib=791644196,
        remote_distance=32,
        os_release=UBUNTU_2404,
        kernel=_NOBLE[0],
        kernel_version=_NOBLE[1],
        cmdline=_NOBLE[2],
        hosts=(
            _drives(0x00, 0, GENOA_ROOT, PM9A3, drives),
            host_bridge(0x40, 0, GENOA_ROOT, (1, 1, cx6)),
            host_bridge(0x60, 0, GENOA_ROOT, (5, 2, [_bmc_vga(0x61)])),
        ),
        multipath=True,
    )


# ------------------------------------------------------------------------- public API

DESCRIPTIONS: dict[str, Callable[[], Machine]] = {
    "dgx-h100": dgx_h100,
    "oci-bm-gpu-h100-8": oci_bm_gpu_h100_8,
    "rtx-pro-6000": rtx_pro_6000,
    "cpu-node": cpu_node,
    "rtx-pro-2-8-5-200": rtx_pro_2_8_5_200,
    "hgx-b200-2-8-9-400": hgx_b200_2_8_9_400,
}
# Departures from the reference designs, for tests that must see a mismatch: built by
# build_machine like the rest, but not in MACHINES (which every per-machine test walks).
VARIANTS: dict[str, Callable[[], Machine]] = {
    "rtx-pro-2-8-5-200-missing-rail": lambda: rtx_pro_2_8_5_200(missing=2),
    "rtx-pro-2-8-5-200-rail-at-200g": lambda: rtx_pro_2_8_5_200(slow=1),
    "hgx-b200-2-8-9-400-missing-rail": lambda: hgx_b200_2_8_9_400(missing=5),
    "hgx-b200-2-8-9-400-rail-at-200g": lambda: hgx_b200_2_8_9_400(slow=3),
    "hgx-b200-2-8-9-400-ofed": lambda: hgx_b200_2_8_9_400(ofed="24.10-1.1.4"),
}


def _builder(describe: Callable[[], Machine]) -> Callable[..., Path]:
    def build(dest: Path, *, nvml: bool = True, driver: bool = True) -> Path:
        return build_tree(describe(), dest, nvml=nvml, driver=driver)

    build.__doc__ = describe.__doc__
    return build


MACHINES: dict[str, Callable[..., Path]] = {n: _builder(d) for n, d in DESCRIPTIONS.items()}


def build_machine(name: str, dest: Path, *, nvml: bool = True, driver: bool = True) -> Path:
    """Build machine `name` into the empty (or missing) directory `dest`; return `dest`.

    `driver=False`: the NVIDIA kernel module is not loaded (no /proc/driver/nvidia, GPUs
    unbound; an NVML recording then says "Driver Not Loaded"). `nvml=False`: no NVML
    recording. Machines without recorded NVML data (rtx-pro-6000, cpu-node) never have one.
    """
    if name in VARIANTS:
        return _builder(VARIANTS[name])(dest, nvml=nvml, driver=driver)
    if name not in MACHINES:
        raise ValueError(f"unknown machine {name!r}; known: {', '.join([*MACHINES, *VARIANTS])}")
    return MACHINES[name](dest, nvml=nvml, driver=driver)
