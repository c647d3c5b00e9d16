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
