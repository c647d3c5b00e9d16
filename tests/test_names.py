"""Host names a node chooses: the RFC 1123 rule, and that every accepted name is a plain
token in the formats we write (topology.conf, hosts.yaml, Kubernetes node names)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent import names

# what a Slurm, Ansible or Kubernetes parser would read as syntax rather than as a name
SYNTAX = set(" \t\r\n=,#:;[]'\"/\\") | {"\x85", "\u2028"}


@pytest.mark.parametrize(
    "name", ["gpu-00001", "a", "0", "gpu-1.dc1.example.com", "x" * 63, ".".join(["a" * 63] * 3)]
)
def test_host_names_that_keep_the_rules(name: str) -> None:
    assert names.hostname_problem(name) == ""
    assert names.check_hostname(name, "hostname") == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "is empty"),
        ("gpu1\nSwitchName=evil", "not a lower-case RFC 1123 name"),
        ("gpu 1", "not a lower-case RFC 1123 name"),
        ("GPU-1", "not a lower-case RFC 1123 name"),
        ("gpu_1", "not a lower-case RFC 1123 name"),
        ("-gpu", "not a lower-case RFC 1123 name"),
        ("gpu-", "not a lower-case RFC 1123 name"),
        ("gpu..dc1", "not a lower-case RFC 1123 name"),
        ("gpu.", "not a lower-case RFC 1123 name"),
        ("gpü", "not a lower-case RFC 1123 name"),
        ("x" * 64, "label longer than 63 characters"),
        (".".join(["a" * 63] * 4), "longer than 253 characters"),
    ],
)
def test_host_names_that_break_a_rule_say_which(name: str, rule: str) -> None:
    assert rule in names.hostname_problem(name)
    with pytest.raises(ValueError, match=f"^hostname: .*{rule}"):
        names.check_hostname(name, "hostname")


def test_the_name_is_shown_escaped_and_bounded() -> None:
    problem = names.hostname_problem("gpu\nSwitchName=evil" + "x" * 300)
    assert "\n" not in problem and "'gpu\\nSwitchName=evil" in problem and len(problem) < 200


@given(st.text(alphabet=st.sampled_from(sorted({*"az09-.AZ_ü", *SYNTAX})), max_size=12))
def test_an_accepted_name_holds_no_syntax(text: str) -> None:
    """Mostly name characters, so accepted names come up often beside refused ones."""
    if names.is_hostname(text):
        assert not SYNTAX & set(text) and text == text.lower() and text.isascii()
