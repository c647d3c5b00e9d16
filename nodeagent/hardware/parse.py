"""Parsers for the value formats of sysfs and procfs.

Each raises ValueError with the offending text, so a collector can record a
garbled file as its error instead of crashing or reporting a wrong value.
"""

from __future__ import annotations

import re

_SPEED_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*GT/s")
# PCIe generation by per-lane transfer rate.
_GEN_BY_SPEED = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


def parse_int(text: str, what: str, base: int = 10) -> int:
    try:
        return int(text.strip(), base)
    except ValueError:
        raise ValueError(f"{what}: expected an integer, got {text.strip()[:40]!r}") from None


def parse_hex(text: str, what: str) -> int:
    """A `0x`-prefixed (or bare) hex attribute such as PCI `vendor`."""
    return parse_int(text, what, 16)


def parse_cpulist(text: str, what: str = "cpulist") -> list[int]:
    """`0-55,112-167` -> [0..55, 112..167]. Empty text is an empty list."""
    cpus: list[int] = []
    text = text.strip()
    if not text:
        return cpus
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            start = int(lo)
            end = int(hi) if sep else start
        except ValueError:
            raise ValueError(f"{what}: bad range {part!r}") from None
        if start < 0 or end < start or end - start > 1 << 16:
            raise ValueError(f"{what}: bad range {part!r}")
        cpus.extend(range(start, end + 1))
    return cpus


def format_cpulist(cpus: list[int] | set[int]) -> str:
    """The inverse of parse_cpulist, with ranges collapsed."""
    out: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_link_speed(text: str) -> float:
    """`16.0 GT/s PCIe` (or `8 GT/s` on old kernels) -> 16.0; `Unknown` -> 0."""
    m = _SPEED_RE.match(text)
    return float(m.group(1)) if m else 0.0


def pcie_generation(speed_gts: float) -> int:
    return _GEN_BY_SPEED.get(speed_gts, 0)


def parse_key_values(text: str, sep: str = ":") -> dict[str, str]:
    """`Key: value` lines (meminfo, /proc/driver/nvidia/...); first separator splits."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            out[key.strip()] = value.strip()
    return out


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value with optional shell quoting."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def parse_enum_attr(text: str) -> str:
    """IB `4: ACTIVE` -> `ACTIVE`; a bare word stays as it is."""
    _, sep, name = text.partition(":")
    return name.strip() if sep else text.strip()


def parse_bracketed_choice(text: str) -> str:
    """`always [madvise] never` -> `madvise`."""
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def normalize_bdf(bus_id: str) -> str:
    """NVML `00000000:18:00.0` or `0000:18:00.0` -> sysfs `0000:18:00.0`."""
    domain, sep, rest = bus_id.strip().partition(":")
    if not sep:
        raise ValueError(f"not a PCI address: {bus_id!r}")
    return f"{int(domain, 16):04x}:{rest.lower()}"


_BDF_RE = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def is_bdf(name: str) -> bool:
    return bool(_BDF_RE.match(name))


def sysfs_guid(text: str) -> str:
    """IB `a088:c203:00b2:5c6e` -> `a088c20300b25c6e` (label-safe, as ibstat without 0x)."""
    value = text.strip().replace(":", "").lower()
    if value and not re.fullmatch(r"[0-9a-f]{16}", value):
        raise ValueError(f"bad GUID {text.strip()[:40]!r}")
    return value
