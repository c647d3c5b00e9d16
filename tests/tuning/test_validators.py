"""Allow-lists: what reaches a file, a command line or a shell is a plain word (property tests)."""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.tuning import commands, validators

# Kinds whose values end up in files, on the kernel command line or in argv.
SHELL_BOUND = [
    "cmdline_token",
    "sysctl_key",
    "module",
    "module_param",
    "module_value",
    "service",
    "governor",
    "thp",
    "memlock",
    "md_device",
    "filesystem",
    "mount_point",
    "aspm_policy",
    "wwid",
    "profile_name",
]
DANGEROUS = set(" \t\n\r\x00;&|$`'\"\\<>(){}*?!#~")


@pytest.mark.parametrize("kind", SHELL_BOUND)
@given(text=st.text(max_size=80))
def test_accepted_values_are_plain_words(kind: str, text: str) -> None:
    if validators.is_valid(kind, text):
        assert text and shlex.quote(text) == text
        assert not DANGEROUS & set(text)


@given(text=st.text(alphabet=st.characters(codec="ascii"), max_size=60))
def test_cmdline_token_never_breaks_grub_quoting(text: str) -> None:
    if validators.is_valid("cmdline_token", text):
        assert not set('"$`;\\ \n') & set(text)
        line = f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {text}"'
        assert shlex.split(line) == [f"GRUB_CMDLINE_LINUX=$GRUB_CMDLINE_LINUX {text}"]


@given(
    value=st.from_regex(re.compile(r"[A-Za-z0-9_.:,/-]{1,10}( [0-9]{1,6}){0,3}"), fullmatch=True)
)
def test_sysctl_values_with_several_numbers_pass(value: str) -> None:
    assert validators.is_valid("sysctl_value", value)
    assert "\n" not in value


@given(text=st.text(max_size=40))
def test_check_agrees_with_is_valid(text: str) -> None:
    for kind in ("sysctl_value", "bios_value", "glob", "bmc_url"):
        if validators.is_valid(kind, text):
            assert validators.check(kind, text) == text
        else:
            with pytest.raises(validators.UnsafeValue):
                validators.check(kind, text)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("cmdline_token", "pci=disable_acs_redir=a;b"),
        ("cmdline_token", "x=$(reboot)"),
        ("sysctl_value", "1\nkernel.panic = 0"),
        ("module", "nvidia peermem"),
        ("mount_point", "/"),
        ("mount_point", "/etc"),
        ("mount_point", "/raid/../etc"),
        ("bmc_url", "https://admin:secret@10.0.0.5"),
        ("service", "-x.service"),
        ("memlock", "0"),
        ("wwid", "../../etc/passwd"),
    ],
)
def test_known_bad_values(kind: str, value: str) -> None:
    assert not validators.is_valid(kind, value)


def test_unit_names() -> None:
    assert validators.service_unit("nvidia-persistenced") == "nvidia-persistenced.service"
    assert validators.service_unit("raid.mount") == "raid.mount"
    assert validators.mount_unit("/mnt/local_disk") == "mnt-local_disk.mount"


def test_commands_map_must_be_argv_of_plain_words() -> None:
    assert commands.check({"sysctl": ["/opt/bin/sysctl"]})["sysctl"] == ["/opt/bin/sysctl"]
    with pytest.raises(commands.CommandsError, match="plain word"):
        commands.check({"sysctl": ["sysctl; reboot"]})
    with pytest.raises(commands.CommandsError, match="unknown"):
        commands.check({"rm": ["rm"]})
    with pytest.raises(commands.CommandsError, match="non-empty list"):
        commands.check({"sysctl": "sysctl -p"})


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        # each refused for its own reason: the newline alone, with no '=' to lean on
        ("sysctl_value", "1\n0"),
        ("sysctl_value", "1\r0"),
        ("module", "-evil"),  # would reach modprobe as an option
        ("module", "-r"),
        ("mount_point", "/boot"),
        ("mount_point", "/var"),
        ("mount_point", "/var/lib/raid"),
        ("mount_point", "/usr/local"),
        ("bmc_url", "file:///etc/passwd"),
        ("bmc_url", "ftp://10.0.0.5"),
        ("bios_value", "Enabled;reboot"),
        ("bios_value", "a\nb"),
        ("bios_attribute", "ProcCStates;x"),
        ("cmdline_token", 'a="b"'),
        ("glob", "NVIDIA\n*"),
        ("profile_name", "-hgx"),
        ("profile_name", "HGX"),
    ],
)
def test_known_bad_values_for_their_own_reason(kind: str, value: str) -> None:
    assert not validators.is_valid(kind, value)
    with pytest.raises(validators.UnsafeValue, match=f"is not a valid {kind} "):
        validators.check(kind, value)


# a value of exactly max_len that the pattern allows, per kind with an open-ended pattern
LONGEST = {
    "profile_name": "a" * 63,
    "cmdline_token": "a" * 256,
    "sysctl_key": "a." + "b" * 126,
    "sysctl_value": "1" * 128,
    "module": "m" * 56,
    "module_param": "p" * 64,
    "module_value": "v" * 128,
    "service": "s" * 128,
    "memlock": "1" * 12,
    "md_device": "md999",
    "mount_point": "/" + "r" * 127,
    "wwid": "w" * 128,
    "glob": "g" * 128,
    "bios_attribute": "B" * 96,
    "bios_value": "v" * 128,
    "bmc_url": "https://" + "h" * 248,
}


@pytest.mark.parametrize("kind", sorted(LONGEST))
def test_each_kind_takes_exactly_its_max_length(kind: str) -> None:
    value = LONGEST[kind]
    assert len(value) == validators.KINDS[kind].max_len
    assert validators.check(kind, value) == value
    longer = value + value[-1]
    assert not validators.is_valid(kind, longer)
    with pytest.raises(validators.UnsafeValue, match=f"at most {len(value)} characters"):
        validators.check(kind, longer)


def test_check_refuses_what_is_not_a_string() -> None:
    for value in (1, None, b"performance", ["performance"]):
        with pytest.raises(validators.UnsafeValue):
            validators.check("governor", value)


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("nvidia-persistenced", "nvidia-persistenced.service"),
        ("x.service", "x.service"),
        ("x.socket", "x.socket"),
        ("x.timer", "x.timer"),
        ("x.mount", "x.mount"),
        ("x.path", "x.path"),
        ("x.target", "x.target"),
        ("x.slice", "x.slice.service"),
        ("getty@tty1", "getty@tty1.service"),
    ],
)
def test_service_unit_keeps_unit_types_and_names_services(name: str, unit: str) -> None:
    assert validators.service_unit(name) == unit


def test_mount_unit_and_module_file_name() -> None:
    assert validators.mount_unit("/raid") == "raid.mount"
    assert validators.mount_unit("/data/raid0") == "data-raid0.mount"
    assert validators.mount_unit("/mnt/x") == "mnt-x.mount"
    with pytest.raises(validators.UnsafeValue):
        validators.mount_unit("/var/x")
    assert validators.module_file_name("nvidia-peermem") == "nvidia_peermem"
    assert validators.module_file_name("mlx5_core") == "mlx5_core"
    assert validators.module_file_name("a-b-c") == "a_b_c"
    with pytest.raises(validators.UnsafeValue, match="is not a valid module"):
        validators.module_file_name("-x")
