"""Profile inheritance (`extends:`), the ncp-base profile and its declared deviations, and the
2-8-5-200 / 2-8-9-400 reference designs verified on modelled servers."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.cli.main import main
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.tuning import profiles
from nodeagent.tuning.loader import ProfileError, load_file
from nodeagent.tuning.verify import verify

SHIPPED = profiles.SHIPPED
BASE = textwrap.dedent(
    """\
    name: base
    abstract: true
    bios:
      intents: {iommu: enabled, c_states: disabled}
    os:
      cpu_governor: performance
      transparent_hugepages: always
      kernel_cmdline: [iommu=pt]
      sysctl: {vm.swappiness: 1}
    """
)


def write(d: Path, name: str, text: str) -> Path:
    path = d / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    write(tmp_path, "base", BASE)
    return tmp_path


# ------------------------------------------------------------------ merging


def test_maps_merge_lists_replace_null_removes(pdir: Path) -> None:
    path = write(
        pdir,
        "child",
        """\
        name: child
        extends: base
        deviations:
          - {setting: os.kernel_cmdline, base: [iommu=pt], value: [init_on_alloc=0], reason: r}
          - {setting: bios.intents.c_states, base: disabled, value: null, reason: r}
        bios:
          intents: {sriov: enabled, c_states: null}
        os:
          kernel_cmdline: [init_on_alloc=0]
          sysctl: {vm.max_map_count: 262144}
        """,
    )
    p = load_file(path)
    assert p.extends == "base" and not p.abstract
    assert (p.bios.intents.iommu, p.bios.intents.sriov, p.bios.intents.c_states) == (
        "enabled",
        "enabled",
        "",
    )
    assert list(p.os.kernel_cmdline) == ["init_on_alloc=0"]
    assert dict(p.os.sysctl) == {"vm.swappiness": "1", "vm.max_map_count": "262144"}
    assert p.os.cpu_governor == "performance"


def test_adding_to_a_base_list_is_not_a_deviation(pdir: Path) -> None:
    path = write(
        pdir, "child", "name: child\nextends: base\nos:\n  kernel_cmdline: [iommu=pt, x=1]\n"
    )
    assert list(load_file(path).os.kernel_cmdline) == ["iommu=pt", "x=1"]


def test_undeclared_deviation_fails_at_its_line(pdir: Path) -> None:
    path = write(
        pdir, "child", "name: child\nextends: base\nos:\n  transparent_hugepages: madvise\n"
    )
    with pytest.raises(ProfileError) as err:
        load_file(path)
    assert (err.value.source, err.value.line, err.value.key) == (
        str(path),
        4,
        "os.transparent_hugepages",
    )
    assert "changes base's value (always -> madvise) without declaring it" in str(err.value)


def test_undeclared_deviation_from_ncp_base_fails(tmp_path: Path) -> None:
    text = (SHIPPED / "rtx-pro-6000.yaml").read_text()
    assert "value: madvise" in text
    cut = text.index("deviations:")
    stripped = text[:cut] + text[text.index("bios:", cut) :]  # the declaration removed
    path = tmp_path / "rtx-pro-6000.yaml"
    path.write_text(stripped)
    with pytest.raises(ProfileError, match=r"os\.transparent_hugepages.*changes ncp-base's value"):
        load_file(path)


@pytest.mark.parametrize(
    ("deviation", "message"),
    [
        (
            "{setting: os.transparent_hugepages, base: never, value: madvise, reason: r}",
            "base sets os.transparent_hugepages to always, not never",
        ),
        (
            "{setting: os.transparent_hugepages, base: always, value: never, reason: r}",
            "this profile sets os.transparent_hugepages to madvise, not never",
        ),
        ("{setting: os.no_such, base: a, value: b, reason: r}", "base sets no os.no_such"),
    ],
)
def test_a_declared_deviation_must_be_true(pdir: Path, deviation: str, message: str) -> None:
    path = write(
        pdir,
        "child",
        f"name: child\nextends: base\ndeviations:\n  - {deviation}\n"
        "os:\n  transparent_hugepages: madvise\n",
    )
    with pytest.raises(ProfileError, match=message) as err:
        load_file(path)
    assert err.value.line == 4


def test_a_deviation_that_changes_nothing_is_refused(pdir: Path) -> None:
    path = write(
        pdir,
        "child",
        "name: child\nextends: base\ndeviations:\n"
        "  - {setting: os.cpu_governor, base: performance, value: performance, reason: r}\n"
        "os:\n  numa_balancing: false\n",
    )
    with pytest.raises(ProfileError, match="is base's value \\(performance\\): not a deviation"):
        load_file(path)


def test_schema_error_in_the_base_names_the_base_file(pdir: Path) -> None:
    write(pdir, "base", BASE + "  no_such_key: 1\n")
    path = write(pdir, "child", "name: child\nextends: base\nos: {}\n")
    with pytest.raises(ProfileError) as err:
        load_file(path)
    assert (err.value.source, err.value.line, err.value.key) == (
        str(pdir / "base.yaml"),
        10,
        "os.no_such_key",
    )


def test_cycle_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a", "name: a\nextends: b\nos: {}\n")
    write(tmp_path, "b", "name: b\nextends: a\nos: {}\n")
    with pytest.raises(ProfileError, match="inheritance cycle: a -> b -> a") as err:
        load_file(tmp_path / "a.yaml")
    assert err.value.source == str(tmp_path / "b.yaml") and err.value.line == 2


def test_missing_base_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a", "name: a\nextends: b\nos: {}\n")
    write(tmp_path, "b", "name: b\nextends: gone\nos: {}\n")
    with pytest.raises(
        ProfileError, match=r"base profile 'gone' not found \(chain: a -> b -> gone"
    ):
        load_file(tmp_path / "a.yaml")


# ------------------------------------------------------------------ shipped profiles


GPU_PROFILES = ("hgx-b200", "hgx-h100", "oci-bm-gpu-h100-8", "rtx-pro-6000")


def test_ncp_base_is_the_ncp_list_with_sources() -> None:
    base = load_file(SHIPPED / "ncp-base.yaml")
    assert base.abstract
    i = base.bios.intents
    assert (i.performance_profile, i.c_states, i.aspm, i.virtualization, i.iommu) == (
        "maximum",
        "disabled",
        "disabled",
        "disabled",
        "enabled",
    )
    assert (base.os.cpu_governor, base.os.transparent_hugepages) == ("performance", "always")
    assert list(base.os.kernel_cmdline) == ["iommu=pt"]
    assert base.expected_hardware.gpu_numa_affinity
    assert set(base.sources) == {
        "bios.intents.performance_profile",
        "bios.intents.c_states",
        "bios.intents.sub_numa_clustering",
        "expected_hardware.gpu_numa_affinity",
        "bios.intents.aspm",
        "bios.intents.virtualization",
        "os.cpu_governor",
        "os.transparent_hugepages",
        "bios.intents.iommu",
        "os.kernel_cmdline",
    }


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_every_gpu_profile_extends_ncp_base(name: str) -> None:
    assert load_file(SHIPPED / f"{name}.yaml").extends == "ncp-base"


def test_hgx_deviations_are_declared_with_reasons() -> None:
    p = load_file(SHIPPED / "hgx-b200.yaml")
    assert {(d.setting, d.base, d.value) for d in p.deviations} == {
        ("bios.intents.iommu", "enabled", "disabled"),
        ("os.kernel_cmdline", '["iommu=pt"]', '["init_on_alloc=0"]'),
        ("os.transparent_hugepages", "always", "madvise"),
    }
    assert all(d.reason for d in p.deviations)


def test_abstract_base_is_never_selected_or_applied(
    inventory_of: Callable[..., pb.HardwareInventory],
) -> None:
    assert "ncp-base" not in {p.name for p in profiles.load_all([SHIPPED])}
    with pytest.raises(profiles.NoProfile, match="abstract base"):
        profiles.resolve("ncp-base", inventory_of("cpu-node"), [SHIPPED])


@pytest.mark.parametrize("driver_mode", ["modprobe", "gpu-operator"])
def test_rtx_pro_6000_keeps_uvm_disable_hmm(driver_mode: str) -> None:
    # one profile for both driver modes: the requirement is the running parameter, which a
    # modprobe.d option or the GPU Operator's kernel-module ConfigMap sets alike
    p = load_file(SHIPPED / "rtx-pro-6000.yaml")
    assert dict(p.os.module_options["nvidia_uvm"].options) == {"uvm_disable_hmm": "1"}


def test_reference_support_matrix() -> None:
    b200, rtx = (load_file(SHIPPED / f"{n}.yaml").support for n in ("hgx-b200", "rtx-pro-6000"))
    assert (list(b200.vbios), list(b200.firmware_bundles), b200.rdma_stack) == (
        ["97.00.6E.00.07"],
        ["25.09.1"],
        "inbox",
    )
    for s in (b200, rtx):
        assert (list(s.nvidia_drivers), list(s.cuda), list(s.kernels), s.rdma_stack) == (
            ["580.82.07"],
            ["13.0"],
            ["6.8.0-85-generic"],
            "inbox",
        )


# ------------------------------------------------------------------ CLI


def test_cli_show_resolved_and_diff(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "show", "rtx-pro-6000", "--resolved"]) == 0
    out = capsys.readouterr().out
    assert "performance_profile: maximum" in out  # from ncp-base
    assert "# deviations from ncp-base: 1" in out
    assert "#   os.transparent_hugepages: always -> madvise" in out
    assert main(["tune", "diff", "ncp-base", "hgx-b200"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["os.transparent_hugepages"] == ["always", "madvise"]
    assert rows["bios.intents.iommu"] == ["enabled", "disabled"]
    assert "os.cpu_governor" not in rows


def test_cli_validate_every_shipped_profile(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in SHIPPED.glob("*.yaml"))
    assert main(["tune", "validate", *files]) == 0
    assert capsys.readouterr().out.count(": ok (profile ") == len(files)


# ------------------------------------------------------------------ reference designs


def report_for(machine_root: Callable[..., Path], machine: str, profile: str) -> tpb.TuningReport:
    root = HostRoot(machine_root(machine))
    return verify(root, profiles.find(profile, [SHIPPED]), discover(root))


@pytest.mark.parametrize(
    ("machine", "profile"),
    [("rtx-pro-2-8-5-200", "rtx-pro-6000"), ("hgx-b200-2-8-9-400", "hgx-b200")],
)
def test_reference_server_matches_its_design(
    machine_root: Callable[..., Path], machine: str, profile: str
) -> None:
    report = report_for(machine_root, machine, profile)
    assert list(report.hardware) == []
    support = {s.setting: s for s in report.settings if s.category == "support"}
    assert support["support:rdma_stack"].status == tpb.SETTING_OK
    assert support["support:rdma_stack"].actual == "inbox"
    assert support["support:nvidia_driver"].status == tpb.SETTING_OK
    assert support["support:kernel"].status == tpb.SETTING_OK


def test_b200_vbios_and_firmware_bundle(machine_root: Callable[..., Path]) -> None:
    report = report_for(machine_root, "hgx-b200-2-8-9-400", "hgx-b200")
    support = {s.setting: s for s in report.settings}
    assert (support["support:vbios"].status, support["support:vbios"].actual) == (
        tpb.SETTING_OK,
        "97.00.6E.00.07",
    )
    bundle = support["support:firmware_bundle"]
    assert bundle.status == tpb.SETTING_UNKNOWN and "without nvfwupd" in bundle.detail


def test_ofed_is_not_the_reference_rdma_stack(machine_root: Callable[..., Path]) -> None:
    report = report_for(machine_root, "hgx-b200-2-8-9-400-ofed", "hgx-b200")
    stack = next(s for s in report.settings if s.setting == "support:rdma_stack")
    assert (stack.status, stack.expected, stack.actual) == (tpb.SETTING_DRIFT, "inbox", "ofed")
    assert list(report.hardware) == []


def test_rtx_missing_adapter_names_the_rail(machine_root: Callable[..., Path]) -> None:
    reasons = [
        h.reason
        for h in report_for(machine_root, "rtx-pro-2-8-5-200-missing-rail", "rtx-pro-6000").hardware
    ]
    assert reasons == [
        "3 of 4 compute rails",
        "rail missing for GPU 4 (0000:83:00.0): no RDMA adapter on its PCIe switch",
        "rail missing for GPU 5 (0000:84:00.0): no RDMA adapter on its PCIe switch",
        "150 Gb/s of compute bandwidth per GPU (1200 Gb/s over 8 GPUs), the design gives 200",
    ]


def test_rtx_rail_at_200g_is_a_mismatch(machine_root: Callable[..., Path]) -> None:
    reasons = [
        h.reason
        for h in report_for(machine_root, "rtx-pro-2-8-5-200-rail-at-200g", "rtx-pro-6000").hardware
    ]
    assert reasons == [
        "rail mlx5_1/1 at 200 Gb/s",
        "175 Gb/s of compute bandwidth per GPU (1400 Gb/s over 8 GPUs), the design gives 200",
    ]


def test_b200_missing_adapter_names_the_rail(machine_root: Callable[..., Path]) -> None:
    reasons = [
        h.reason
        for h in report_for(machine_root, "hgx-b200-2-8-9-400-missing-rail", "hgx-b200").hardware
    ]
    assert reasons == [
        "7 of 8 compute rails",
        "rail missing for GPU 5 (0000:63:00.0): no RDMA adapter on its PCIe switch",
        "350 Gb/s of compute bandwidth per GPU (2800 Gb/s over 8 GPUs), the design gives 400",
    ]


def test_b200_rail_at_200g_is_a_mismatch(machine_root: Callable[..., Path]) -> None:
    reasons = [
        h.reason
        for h in report_for(machine_root, "hgx-b200-2-8-9-400-rail-at-200g", "hgx-b200").hardware
    ]
    assert reasons == [
        "rail mlx5_3/1 at 200 Gb/s",
        "375 Gb/s of compute bandwidth per GPU (3000 Gb/s over 8 GPUs), the design gives 400",
    ]


def test_the_old_two_rail_rtx_server_is_a_2_8_5_200_mismatch(
    machine_root: Callable[..., Path],
) -> None:
    reasons = [h.reason for h in report_for(machine_root, "rtx-pro-6000", "rtx-pro-6000").hardware]
    assert "2 of 4 compute rails" in reasons
    assert "0 of 1 north-south adapters (none found)" in reasons
