"""Edges the happy paths never reach: label lengths at 63 and 253, lone surrogates, CPU
lists at their range limit, os-release quirks, and PCI domains other than 0000."""

from __future__ import annotations

import pytest

from nodeagent import label_syntax as syntax
from nodeagent.hardware import parse


@pytest.mark.parametrize("length", [1, 62, 63])
def test_names_and_values_up_to_63_characters(length: int) -> None:
    text = "a" * length
    assert syntax.is_valid_name(text) and syntax.is_valid_value(text)
    assert syntax.sanitize_value(text) == text


def test_64_characters_is_one_too_many() -> None:
    text = "a" * 64
    assert not syntax.is_valid_name(text) and not syntax.is_valid_value(text)
    hashed = syntax.sanitize_value(text)
    assert hashed == f"x{syntax.fnv64a(text.encode()):x}" and syntax.is_valid_value(hashed)
    assert syntax.sanitize_value("-" + "a" * 63 + "-") == "a" * 63  # trimmed ends fit


def test_prefix_boundary_at_253_characters() -> None:
    prefix = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(prefix) == 253 and syntax.is_valid_prefix(prefix)
    assert syntax.is_valid_key(f"{prefix}/x")
    assert not syntax.is_valid_prefix(prefix + "c")
    assert not syntax.is_valid_key(f"{prefix}c/x")
    with pytest.raises(ValueError, match="not a DNS subdomain"):
        syntax.key(prefix + "c", "x")


@pytest.mark.parametrize(
    "prefix", ["abc-.io", "-abc.io", "abc..io", "ABC.io", "a_b.io", "a" * 64 + ".io", ""]
)
def test_bad_prefixes(prefix: str) -> None:
    assert not syntax.is_valid_prefix(prefix)
    assert not syntax.is_valid_key(f"{prefix}/x")


@pytest.mark.parametrize("text", ["\ud800", "gpu\udfff", "\ud800" * 100, "a\ud83d\ude00b"])
def test_sanitize_value_never_raises_on_lone_surrogates(text: str) -> None:
    value = syntax.sanitize_value(text)
    assert syntax.is_valid_value(value)
    assert syntax.is_valid_name(syntax.sanitize_name(text))


def test_cpulist_range_limit() -> None:
    assert parse.parse_cpulist("0-65536") == list(range(65537))
    with pytest.raises(ValueError, match="cpulist: bad range '0-70000'"):
        parse.parse_cpulist("0-70000")
    with pytest.raises(ValueError, match="bad range '5-3'"):
        parse.parse_cpulist("5-3")
    with pytest.raises(ValueError, match="bad range '-1'"):
        parse.parse_cpulist("-1")
    assert parse.parse_cpulist(" 0-1,4 \n") == [0, 1, 4]


def test_os_release_comments_empty_and_quoted_values() -> None:
    text = (
        "# a comment\n"
        'NAME="Ubuntu"\n'
        "  # indented comment\n"
        'VERSION_ID=""\n'
        "ID=ubuntu\n"
        "PRETTY_NAME='Ubuntu 24.04 LTS'\n"
        "BROKEN LINE\n"
        'LONE="\n'
    )
    assert parse.parse_os_release(text) == {
        "NAME": "Ubuntu",
        "VERSION_ID": "",
        "ID": "ubuntu",
        "PRETTY_NAME": "Ubuntu 24.04 LTS",
        "LONE": '"',
    }


@pytest.mark.parametrize(
    ("bus_id", "bdf"),
    [
        ("00000000:18:00.0", "0000:18:00.0"),
        ("0000:1B:00.0", "0000:1b:00.0"),
        ("10000:e0:06.0", "10000:e0:06.0"),  # Intel VMD domain
        ("00010000:E0:06.0", "10000:e0:06.0"),
    ],
)
def test_pci_domains_other_than_0000(bus_id: str, bdf: str) -> None:
    assert parse.normalize_bdf(bus_id) == bdf
    assert parse.is_bdf(bdf)


def test_not_a_pci_address() -> None:
    assert not parse.is_bdf("10000:e0:06")
    with pytest.raises(ValueError, match="not a PCI address"):
        parse.normalize_bdf("e0.06.0")


def test_integers_and_hex_attributes() -> None:
    assert parse.parse_int(" 42\n", "numa_node") == 42
    assert parse.parse_int("-1", "numa_node") == -1
    assert parse.parse_hex("0x10de\n", "vendor") == 0x10DE
    assert parse.parse_hex("15b3", "vendor") == 0x15B3
    with pytest.raises(ValueError) as err:
        parse.parse_int(" garbage" + "x" * 60, "numa_node")
    assert str(err.value) == f"numa_node: expected an integer, got {('garbage' + 'x' * 60)[:40]!r}"
    with pytest.raises(ValueError, match="vendor: expected an integer, got 'zz'"):
        parse.parse_hex("zz", "vendor")


def test_key_value_lines_split_at_the_first_separator() -> None:
    text = "MemTotal:  1024 kB\nno separator here\nModel: \t NVIDIA H100: SXM \n\n"
    assert parse.parse_key_values(text) == {"MemTotal": "1024 kB", "Model": "NVIDIA H100: SXM"}
    assert parse.parse_key_values("a=b=c\nd=e", sep="=") == {"a": "b=c", "d": "e"}


def test_enum_attributes_and_bracketed_choices() -> None:
    assert parse.parse_enum_attr("4: ACTIVE\n") == "ACTIVE"
    assert parse.parse_enum_attr("5: LinkUp: extra") == "LinkUp: extra"
    assert parse.parse_enum_attr(" Polling ") == "Polling"
    assert parse.parse_bracketed_choice("always [madvise] never\n") == "madvise"
    assert parse.parse_bracketed_choice(" madvise \n") == "madvise"


def test_link_speeds_and_generations() -> None:
    assert parse.parse_link_speed("16.0 GT/s PCIe") == 16.0
    assert parse.parse_link_speed("8 GT/s") == 8.0
    assert parse.parse_link_speed("Unknown") == 0.0
    assert [parse.pcie_generation(s) for s in (2.5, 5.0, 8.0, 16.0, 32.0, 64.0, 3.0)] == [
        1,
        2,
        3,
        4,
        5,
        6,
        0,
    ]


def test_guids() -> None:
    assert parse.sysfs_guid("A088:C203:00B2:5C6E\n") == "a088c20300b25c6e"
    assert parse.sysfs_guid("") == ""
    with pytest.raises(ValueError) as err:
        parse.sysfs_guid(" a088:c203 ")
    assert str(err.value) == "bad GUID 'a088:c203'"


def test_cpulist_collapses_back() -> None:
    assert parse.format_cpulist([3, 0, 1, 2, 7, 9, 8]) == "0-3,7-9"
    assert parse.format_cpulist(set()) == ""
    assert parse.format_cpulist([5]) == "5"
    assert parse.parse_cpulist("0-65536,70000") == [*range(65537), 70000]


def test_short_prefixes_names_and_the_domain_rule() -> None:
    assert syntax.is_valid_prefix("a") and syntax.is_valid_key("a/b")
    assert syntax.sanitize_name("gpu model!") == "gpu-model"
    assert syntax.sanitize_name("!!!") == f"x{syntax.fnv64a(b'!!!'):x}", "never empty"
    assert syntax.check_domain("nodeagent.io") == "nodeagent.io"
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 53])
    assert len(longest) == 245 and syntax.check_domain(longest) == longest
    with pytest.raises(ValueError) as err:
        syntax.check_domain(longest + "d")
    assert str(err.value) == (
        f"label domain {longest + 'd'!r} is not a DNS subdomain of at most 245 characters "
        "(lower case letters, digits, '-', '.')"
    )
