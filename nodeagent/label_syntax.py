"""Kubernetes label syntax, and sanitisers that turn any text into a valid value.

The rules are those of k8s.io/apimachinery `pkg/util/validation/validation.go`: a key
is `[prefix/]name`, the prefix a DNS-1123 subdomain (<= 253 characters), the name and
the value <= 63 characters of `[-A-Za-z0-9_.]` with an alphanumeric at both ends (a
value may be empty). Sanitising never raises: a garbled sysfs string or metadata field
must not stop a node from being labelled. Values longer than 63 characters become
`x` + the FNV-64a hex of the original text, as Topograph does, so two long inputs
that differ only past character 63 still get different values.
"""

from __future__ import annotations

import re

MAX_NAME = 63
MAX_PREFIX = 253
_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"  # RFC 1123: at most 63
_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_INVALID_RUN = re.compile(r"[^-A-Za-z0-9_.]+")
_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def is_valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and _NAME_RE.fullmatch(name) is not None


def is_valid_value(value: str) -> bool:
    return value == "" or is_valid_name(value)


def is_valid_prefix(prefix: str) -> bool:
    return 0 < len(prefix) <= MAX_PREFIX and _SUBDOMAIN_RE.fullmatch(prefix) is not None


def is_valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if not slash:
        return is_valid_name(key)
    return is_valid_prefix(prefix) and is_valid_name(name)


KEY_RULE = (
    "a key is [prefix/]name: prefix a DNS subdomain (lower case, <= 253), name <= 63 of "
    "A-Z a-z 0-9 - _ . beginning and ending alphanumeric"
)
VALUE_RULE = "a value is empty or <= 63 of A-Z a-z 0-9 - _ . beginning and ending alphanumeric"


def problems_with_rules(labels: dict[str, str]) -> list[str]:
    """As `problems`, each line naming the rule broken: for a person who typed it."""
    out = []
    for key, value in labels.items():
        if not is_valid_key(key):
            out.append(f"invalid label key {key!r}: {KEY_RULE}")
        if not is_valid_value(value):
            out.append(f"invalid value {value!r} for {key}: {VALUE_RULE}")
    return out


def problems(labels: dict[str, str]) -> list[str]:
    """Every invalid key or value in `labels`, one line each (empty when all are valid)."""
    out = []
    for key, value in labels.items():
        if not is_valid_key(key):
            out.append(f"invalid label key {key!r}")
        if not is_valid_value(value):
            out.append(f"invalid value {value!r} for {key}")
    return out


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bit (Go's hash/fnv New64a)."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


def _hashed(text: str) -> str:
    return f"x{fnv64a(text.encode('utf-8', 'surrogatepass')):x}"


def sanitize_value(text: str) -> str:
    """`text` if it is a valid value, else a valid value made from it.

    Runs of characters a value may not hold become one `-`, the ends are trimmed to
    alphanumerics, and a result still over 63 characters is replaced by its hash.
    """
    if is_valid_value(text):
        return text
    cleaned = _EDGES.sub("", _INVALID_RUN.sub("-", text))
    return _hashed(text) if len(cleaned) > MAX_NAME else cleaned


def sanitize_name(text: str) -> str:
    """Like sanitize_value, but never empty (a key's name part must have a character)."""
    value = sanitize_value(text)
    return value or _hashed(text)


def key(prefix: str, name: str) -> str:
    """`prefix/name`, checked: a bad domain in configuration is an error, not a silent fix."""
    if not is_valid_prefix(prefix):
        raise ValueError(
            f"label prefix {prefix!r} is not a DNS subdomain (lower case, dots, <= 253)"
        )
    if not is_valid_name(name):
        raise ValueError(f"label name {name!r} is not valid")
    return f"{prefix}/{name}"


def check_domain(domain: str) -> str:
    """The label domain, validated with the longest prefix built on it (`storage.<domain>`)."""
    if not is_valid_prefix(f"storage.{domain}"):
        raise ValueError(
            f"label domain {domain!r} is not a DNS subdomain of at most "
            f"{MAX_PREFIX - len('storage.')} characters (lower case letters, digits, '-', '.')"
        )
    return domain
