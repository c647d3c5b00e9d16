"""Shipped profiles validate; selection picks the right one; bad profiles name line and key."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.cli.main import main
from nodeagent.tuning import profiles
from nodeagent.tuning.loader import ProfileError, load_file, load_text

SHIPPED_FILES = sorted(profiles.SHIPPED.glob("*.yaml"))


def test_the_profiles_ship() -> None:
    assert {p.stem for p in SHIPPED_FILES} == {
        "ncp-base",
        "hgx-h100",
        "hgx-b200",
        "rtx-pro-6000",
        "oci-bm-gpu-h100-8",
        "cpu-node",
    }


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_shipped_profile_validates(path: Path) -> None:
    profile = load_file(path)
    assert profile.name == path.stem and profile.source == str(path)
    assert profile.abstract or profile.os.memlock == "unlimited"


def test_rtx_pro_6000_disables_hmm() -> None:
    profile = load_file(profiles.SHIPPED / "rtx-pro-6000.yaml")
    assert dict(profile.os.module_options["nvidia_uvm"].options) == {"uvm_disable_hmm": "1"}


def test_search_order_puts_site_profiles_before_the_shipped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, env = tmp_path / "flag", tmp_path / "env"
    monkeypatch.setenv("NODEAGENT_PROFILES_DIR", str(env))
    assert profiles.profile_dirs(flag) == [
        flag,
        env,
        Path("/etc/nodeagent/profiles"),
        profiles.SHIPPED,
    ]
    env.mkdir()
    (env / "cpu-node.yaml").write_text((profiles.SHIPPED / "cpu-node.yaml").read_text())
    found = profiles.find("cpu-node", profiles.profile_dirs())
    assert found.source == str(env / "cpu-node.yaml")
    every = {p.name: p.source for p in profiles.load_all(profiles.profile_dirs())}
    assert every["cpu-node"] == str(env / "cpu-node.yaml")
    assert every["hgx-h100"] == str(profiles.SHIPPED / "hgx-h100.yaml")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("dgx-h100", "hgx-h100"),
        ("oci-bm-gpu-h100-8", "oci-bm-gpu-h100-8"),
        ("rtx-pro-6000", "rtx-pro-6000"),
        ("cpu-node", "cpu-node"),
    ],
)
def test_selector_picks_profile(
    inventory_of: Callable[..., pb.HardwareInventory], machine: str, expected: str
) -> None:
    every = profiles.load_all([profiles.SHIPPED])
    assert profiles.select(every, inventory_of(machine)).name == expected


def test_assignment_wins_over_selector(inventory_of: Callable[..., pb.HardwareInventory]) -> None:
    every = profiles.load_all([profiles.SHIPPED])
    assert profiles.select(every, inventory_of("dgx-h100"), "hgx-b200").name == "hgx-b200"
    with pytest.raises(profiles.NoProfile, match="not installed"):
        profiles.select(every, inventory_of("dgx-h100"), "nonesuch")


def test_equal_matches_are_an_error(inventory_of: Callable[..., pb.HardwareInventory]) -> None:
    every = profiles.load_all([profiles.SHIPPED])
    twin = type(every[0])()
    twin.CopyFrom(next(p for p in every if p.name == "hgx-h100"))
    twin.name = "hgx-h100-copy"
    with pytest.raises(profiles.NoProfile, match="equally"):
        profiles.select([*every, twin], inventory_of("dgx-h100"))


GOOD = """\
name: test
os:
  sysctl:
    vm.swappiness: 1
  kernel_cmdline: [iommu=pt]
"""

# (yaml, line, key, words in the message)
BAD = [
    ("name: test\nos:\n  sysctls: {}\n", 3, "os.sysctls", "unknown key"),
    (
        "name: test\nos:\n  kernel_cmdline:\n    - iommu=pt\n    - 'quiet;reboot'\n",
        5,
        "os.kernel_cmdline[1]",
        "not allowed",
    ),
    (
        "name: test\nos:\n  sysctl:\n    'vm.swappiness\\nx': 1\n",
        4,
        "os.sysctl.vm.swappiness\\nx",
        "not a valid name",
    ),
    ("name: test\nos:\n  cpu_governor: turbo\n", 3, "os.cpu_governor", "not allowed"),
    ("name: test\nos:\n  numa_balancing: 0\n", 3, "os.numa_balancing", "boolean"),
    ("name: test\nos: {}\nname: again\n", 3, "name", "duplicate key"),
    ("name: test\n", 1, "os", "required"),
    ("name: other\nos: {}\n", 1, "name", "must match the file name"),
    (
        "name: test\nos:\n  sysctl:\n    net.ipv4.ip_forward: 0\n",
        4,
        "os.sysctl.net.ipv4.ip_forward",
        "Kubespray",
    ),
    ("name: test\nos:\n  modules: ['nvidia; rm -rf /']\n", 3, "os.modules[0]", "not allowed"),
    (
        "name: test\nos:\n  nvme_raid: {device: md0, level: 0, member_model: '*', members: 2,\n"
        "    mount_point: /etc, filesystem: ext4}\n",
        4,
        "os.nvme_raid.mount_point",
        "system directory",
    ),
    (
        "name: test\nos:\n  kernel_cmdline: [iommu=pt, iommu=off]\n",
        3,
        "os.kernel_cmdline[1]",
        "already given",
    ),
    ("name: test\nos:\n  memlock: -5\n", 3, "os.memlock", ""),
    ("name: test\nos: [\n", 3, "", "not valid YAML"),
]


def test_good_profile_loads() -> None:
    assert load_text(GOOD, "test.yaml", expect_name="test").os.sysctl["vm.swappiness"] == "1"


@pytest.mark.parametrize(("text", "line", "key", "words"), BAD, ids=[b[2] or "yaml" for b in BAD])
def test_bad_profile_names_line_and_key(text: str, line: int, key: str, words: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_text(text, "test.yaml", expect_name="test")
    err = info.value
    assert (err.line, err.key) == (line, key), str(err)
    assert words in str(err)
    assert str(err).startswith(f"test.yaml:{line}: ")


def test_mount_point_under_system_dir_is_refused() -> None:
    text = (
        "name: test\nos:\n  nvme_raid:\n    device: md0\n    level: 0\n    member_model: x\n"
        "    members: 2\n    mount_point: /usr/raid\n    filesystem: ext4\n"
    )
    with pytest.raises(ProfileError, match=r"test.yaml:8: key 'os.nvme_raid.mount_point'"):
        load_text(text, "test.yaml")


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""\
        name: bad
        os:
          sysctl:
            vm.swappiness: "1; reboot"
        """)
    )
    assert main(["tune", "validate", *map(str, SHIPPED_FILES)]) == 0
    assert main(["tune", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4: key 'os.sysctl.vm.swappiness'" in err


def test_cli_list_and_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "list", "--profiles-dir", str(profiles.SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "rtx-pro-6000" in out and "NVIDIA RTX PRO 6000*" in out
    assert main(["tune", "schema"]) == 0
    assert '"additionalProperties": false' in capsys.readouterr().out
