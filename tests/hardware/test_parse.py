from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.hardware import affinity, parse, rdma


def test_cpulist_round_trip_examples() -> None:
    assert parse.parse_cpulist("0-55,112-167") == [*range(56), *range(112, 168)]
    assert parse.format_cpulist([*range(56), *range(112, 168)]) == "0-55,112-167"
    assert parse.parse_cpulist("") == []
    assert parse.format_cpulist({3, 1, 2, 7}) == "1-3,7"


@given(st.sets(st.integers(min_value=0, max_value=4096)))
def test_cpulist_round_trip(cpus: set[int]) -> None:
    assert parse.parse_cpulist(parse.format_cpulist(cpus)) == sorted(cpus)


@pytest.mark.parametrize("text", ["0-", "a-b", "5-2", "1,,2", "0-99999999"])
def test_cpulist_garbage_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_cpulist(text)


@pytest.mark.parametrize(
    ("text", "speed", "gen"),
    [
        ("32.0 GT/s PCIe", 32.0, 5),
        ("16 GT/s", 16.0, 4),
        ("2.5 GT/s PCIe", 2.5, 1),
        ("Unknown", 0.0, 0),
        ("64.0 GT/s PCIe", 64.0, 6),
    ],
)
def test_link_speed(text: str, speed: float, gen: int) -> None:
    assert parse.parse_link_speed(text) == speed
    assert parse.pcie_generation(speed) == gen


def test_bdf_normalisation() -> None:
    assert parse.normalize_bdf("00000000:1B:00.0") == "0000:1b:00.0"
    assert parse.normalize_bdf("0000:1b:00.0") == "0000:1b:00.0"
    assert parse.is_bdf("0000:1b:00.0") and not parse.is_bdf("virtio0")


def test_guid_and_enums() -> None:
    assert parse.sysfs_guid("a088:c203:00b2:5c6e\n") == "a088c20300b25c6e"
    with pytest.raises(ValueError):
        parse.sysfs_guid("zz:zz")
    assert parse.parse_enum_attr("4: ACTIVE") == "ACTIVE"
    assert parse.parse_enum_attr("5: LinkUp") == "LinkUp"
    assert parse.parse_bracketed_choice("always [madvise] never") == "madvise"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400 Gb/sec (4X NDR)", (400.0, 4, "NDR")),
        ("200 Gb/sec (2X NDR)", (200.0, 2, "NDR")),
        ("25 Gb/sec (1X EDR)", (25.0, 1, "EDR")),
        ("10 Gb/sec (4X)", (10.0, 4, "")),
        ("800 Gb/sec (4X XDR)", (800.0, 4, "XDR")),
        ("40 Gb/sec (4X QDR)", (40.0, 4, "QDR")),
    ],
)
def test_ib_rate(text: str, expected: tuple[float, int, str]) -> None:
    assert rdma.parse_rate(text) == expected


def test_os_release_quoting() -> None:
    text = "ID=ubuntu\nVERSION_ID=\"22.04\"\nPRETTY_NAME='Ubuntu 22.04.4 LTS'\n# c\n"
    fields = parse.parse_os_release(text)
    assert fields == {"ID": "ubuntu", "VERSION_ID": "22.04", "PRETTY_NAME": "Ubuntu 22.04.4 LTS"}


DGX_GPU0 = [
    "pci0000:15",
    "0000:15:01.0",
    "0000:16:00.0",
    "0000:17:02.0",
    "0000:19:00.0",
    "0000:1a:00.0",
    "0000:1b:00.0",
]
DGX_NIC0 = ["pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:00.0", "0000:18:00.0"]


def test_affinity_levels() -> None:
    # A GPU behind the ConnectX-7's integrated switch is PXB to that NIC (as nvidia-smi says).
    assert affinity.pcie_level(DGX_GPU0, DGX_NIC0, 0, 0) == "PXB"
    port0 = ["pci0000:28", "0000:28:01.0", "0000:29:00.0"]
    port1 = ["pci0000:28", "0000:28:01.0", "0000:29:00.1"]
    assert affinity.pcie_level(port0, port1, 0, 0) == "PIX"
    assert affinity.pcie_level(DGX_GPU0, port0, 0, 0) == "NODE"
    assert affinity.pcie_level(DGX_GPU0, port0, 0, 1) == "SYS"
    assert affinity.pcie_level(DGX_GPU0, port0, -1, -1) == "SYS"
    flat_a, flat_b = ["pci0000:00", "0000:00:05.0"], ["pci0000:00", "0000:00:06.0"]
    assert affinity.pcie_level(flat_a, flat_b, 0, 0) == "PHB"  # a VM's flat bus
    assert affinity.nearest(["NODE", "PXB", "SYS", "PXB"]) == [1, 3]
    assert affinity.nearest(["SYS", "SYS"]) == []
