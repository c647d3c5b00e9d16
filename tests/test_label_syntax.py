"""Kubernetes label syntax: validity rules and sanitisers, property-tested."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent import label_syntax

# The apimachinery expressions, written out independently of the module under test.
K8S_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
K8S_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def k8s_valid_value(v: str) -> bool:
    return v == "" or (len(v) <= 63 and K8S_NAME.match(v) is not None and "\n" not in v)


def k8s_valid_key(k: str) -> bool:
    parts = k.split("/")
    if len(parts) > 2:
        return False
    name = parts[-1]
    if not (0 < len(name) <= 63 and K8S_NAME.match(name) and "\n" not in name):
        return False
    if len(parts) == 2:
        prefix = parts[0]
        return 0 < len(prefix) <= 253 and K8S_SUBDOMAIN.match(prefix) is not None
    return True


LABELISH = st.text(alphabet=st.sampled_from("aZ09-_./: ;+é\n\t\u00a0"), max_size=90)


@given(st.one_of(st.text(max_size=200), LABELISH))
def test_sanitize_value_always_valid(text: str) -> None:
    value = label_syntax.sanitize_value(text)
    assert k8s_valid_value(value), (text, value)
    assert label_syntax.is_valid_value(value)


@given(st.one_of(st.text(max_size=200), LABELISH))
def test_sanitize_name_always_valid_and_never_empty(text: str) -> None:
    name = label_syntax.sanitize_name(text)
    assert name and k8s_valid_key(name), (text, name)


@given(st.one_of(st.text(max_size=200), LABELISH))
def test_sanitize_is_idempotent(text: str) -> None:
    once = label_syntax.sanitize_value(text)
    assert label_syntax.sanitize_value(once) == once


@given(st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", fullmatch=True))
def test_valid_values_pass_unchanged(value: str) -> None:
    assert label_syntax.sanitize_value(value) == value


@given(st.text(max_size=300))
def test_validators_agree_with_apimachinery(text: str) -> None:
    assert label_syntax.is_valid_value(text) == k8s_valid_value(text)
    assert label_syntax.is_valid_key(text) == k8s_valid_key(text)


@given(st.text(min_size=64, max_size=200, alphabet="abc"))
def test_long_values_become_topograph_hash(text: str) -> None:
    value = label_syntax.sanitize_value(text)
    assert value == "x" + format(label_syntax.fnv64a(text.encode()), "x")


def test_fnv64a_matches_go_hash_fnv() -> None:
    # Test vectors of Go's hash/fnv (fnv_test.go golden64a)
    assert label_syntax.fnv64a(b"") == 0xCBF29CE484222325
    assert label_syntax.fnv64a(b"a") == 0xAF63DC4C8601EC8C
    assert label_syntax.fnv64a(b"ab") == 0x089C4407B545986A
    assert label_syntax.fnv64a(b"abc") == 0xE71FA2190541574B


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("MF0;A09-P1-IBLEAF-04-04:MQM9701/U1", "MF0-A09-P1-IBLEAF-04-04-MQM9701-U1"),
        ("0000:17:00.0", "0000-17-00.0"),
        ("  NVIDIA H100  ", "NVIDIA-H100"),
        ("-leading-and-trailing.", "leading-and-trailing"),
        ("", ""),
        (":::", ""),
    ],
)
def test_sanitize_examples(raw: str, clean: str) -> None:
    assert label_syntax.sanitize_value(raw) == clean


def test_keys_and_domains() -> None:
    assert label_syntax.key("gpu.nodeagent.io", "count") == "gpu.nodeagent.io/count"
    with pytest.raises(ValueError, match="DNS subdomain"):
        label_syntax.key("Nodeagent.io", "count")
    with pytest.raises(ValueError, match="not valid"):
        label_syntax.key("nodeagent.io", "-count")
    assert label_syntax.check_domain("example.com") == "example.com"
    for bad in ("", "Example.com", "a_b.io", "x." * 130, "-a.io", "a..io"):
        with pytest.raises(ValueError):
            label_syntax.check_domain(bad)
    assert label_syntax.problems({"a/b/c": "x", "ok.io/k": "bad value"}) == [
        "invalid label key 'a/b/c'",
        "invalid value 'bad value' for ok.io/k",
    ]
