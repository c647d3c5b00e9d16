"""parse_smi_q against the five real `nvidia-smi -q` outputs kept as package data."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from testbed import normalise_pci_bus_id, parse_smi_q


def _recording(name: str) -> dict[str, Any]:
    data = resources.files("testbed").joinpath("data", f"nvidia-smi-q_{name}.txt")
    return parse_smi_q(data.read_text())


# fixture: (driver, cuda, GPU count, name, MiB, bus id of GPU 0, serial, uuid, module id)
CASES = {
    "H100SXMx8": (
        "565.57.01",
        "12.7",
        8,
        "NVIDIA H100 80GB HBM3",
        81559,
        "0000:18:00.0",
        "1654423001593",
        "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1",
        2,
    ),
    "H200x1_passthrough": (
        "550.90.12",
        "12.4",
        1,
        "NVIDIA H200",
        143771,
        "0000:03:00.0",
        "1753724031847",
        "GPU-cb3dfa52-e2f3-9ca4-a399-7d16041c3732",
        3,
    ),
    "A100SXMx4": (
        "555.42.02",
        "12.5",
        4,
        "NVIDIA A100-SXM4-80GB",
        81920,
        "0000:68:00.0",
        "1320222043305",
        "GPU-31515c3d-1414-7c2c-004a-f86a898946ac",
        3,
    ),
    "GH200": (
        "550.127.05",
        "12.4",
        1,
        "NVIDIA GH200 480GB",
        97871,
        "0000:dd:00.0",
        "1654523007052",
        "GPU-35d58415-1094-5ad1-64d1-b797587d33a7",
        1,
    ),
    "H100NVLx2": (
        "550.54.14",
        "12.4",
        2,
        "NVIDIA H100 NVL",
        95830,
        "0000:ad:00.0",
        "1650724004565",
        "GPU-806f8ea2-6428-1096-a076-bb687fb45fb0",
        4,
    ),
}


@pytest.mark.parametrize("fixture", CASES)
def test_recorded_values(fixture: str) -> None:
    driver, cuda, count, name, mib, bus_id, serial, uuid, module = CASES[fixture]
    rec = _recording(fixture)
    assert rec["probe"] == "nvml" and rec["version"] == 1
    assert rec["available"] is True and rec["error"] == "" and rec["nvml_version"] == ""
    assert (rec["driver_version"], rec["cuda_driver_version"]) == (driver, cuda)
    assert len(rec["devices"]) == count
    gpu = rec["devices"][0]
    assert gpu["index"] == 0
    assert gpu["name"] == name
    assert gpu["memory_total_bytes"] == mib * 1048576
    assert gpu["pci_bus_id"] == bus_id
    assert (gpu["serial"], gpu["uuid"], gpu["module_id"]) == (serial, uuid, module)
    assert gpu["persistence_mode"] is True and gpu["mig_mode"] is False
    assert gpu["ecc_mode"] is True and gpu["lost"] is False
    assert "nvlink_states" not in gpu


def test_h100_sxm_all_fields() -> None:
    rec = _recording("H100SXMx8")
    assert [d["pci_bus_id"] for d in rec["devices"]] == [
        f"0000:{b}:00.0" for b in ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")
    ]
    assert [d["index"] for d in rec["devices"]] == list(range(8))
    assert [d["module_id"] for d in rec["devices"]] == [2, 4, 1, 3, 6, 8, 5, 7]
    gpu = rec["devices"][0]
    assert gpu["memory_total_bytes"] == 85520809984
    assert gpu["board_part_number"] == "692-2G520-0200-000"
    assert gpu["vbios_version"] == "96.00.74.00.01"
    assert (gpu["architecture"], gpu["compute_capability"]) == ("hopper", "9.0")
    assert gpu["ecc_errors"] == dict.fromkeys(
        (
            "corrected_volatile",
            "uncorrected_volatile",
            "corrected_aggregate",
            "uncorrected_aggregate",
        ),
        0,
    )
    assert gpu["remapped_rows"] == {
        "correctable": 0,
        "uncorrectable": 0,
        "pending": False,
        "failure": False,
    }
    assert (gpu["temperature_celsius"], gpu["power_draw_watts"]) == (30.0, 100.89)
    assert gpu["power_limit_watts"] == 700.0
    assert gpu["pcie"] == {
        "current_generation": 5,
        "max_generation": 5,
        "current_width": 16,
        "max_width": 16,
    }
    assert gpu["fabric_state"] == "completed"


def test_h200_memory() -> None:
    gpu = _recording("H200x1_passthrough")["devices"][0]
    assert gpu["memory_total_bytes"] == 143771 * 1048576 == 150754820096
    assert gpu["vbios_version"] == "96.00.A5.00.03"
    assert gpu["board_part_number"] == "695-2G520-0280-000"


def test_not_available_fields_are_left_out() -> None:
    gh200 = _recording("GH200")["devices"][0]
    assert "fabric_state" not in gh200  # Fabric State: N/A
    assert gh200["pcie"]["current_width"] == 1  # what the C2C-attached GPU reports
    assert gh200["ecc_errors"]["uncorrected_aggregate"] == 1
    assert gh200["remapped_rows"]["uncorrectable"] == 1
    a100 = _recording("A100SXMx4")["devices"][0]
    assert "fabric_state" not in a100
    assert (a100["architecture"], a100["compute_capability"]) == ("ampere", "8.0")
    assert a100["pcie"]["max_generation"] == 4


def test_compute_capability_needs_a_known_product() -> None:
    text = (
        "Driver Version : 580.65.06\nCUDA Version : 13.0\nGPU 00000000:03:00.0\n"
        "    Product Name : NVIDIA RTX A6000\n    Product Architecture : Ampere\n"
        "    Serial Number : N/A\n"
    )
    gpu = parse_smi_q(text)["devices"][0]
    assert gpu["architecture"] == "ampere"
    assert "compute_capability" not in gpu  # GA102 is 8.6, not A100's 8.0
    assert "serial" not in gpu


@pytest.mark.parametrize(
    ("raw", "sysfs"),
    [
        ("00000000:18:00.0", "0000:18:00.0"),
        ("00000000:DB:00.0", "0000:db:00.0"),
        ("0001:0A:00.1", "0001:0a:00.1"),
    ],
)
def test_bus_id_normalisation(raw: str, sysfs: str) -> None:
    assert normalise_pci_bus_id(raw) == sysfs
