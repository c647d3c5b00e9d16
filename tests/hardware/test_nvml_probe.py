"""The live NVML code path, driven by a replay of recorded `nvidia-smi -q` data.

Reading NVML through the replay must give back exactly the recording: that is
what makes replayed discovery on a snapshot equal to live discovery.
"""

from __future__ import annotations

from typing import Any

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import _settle_health, merge_nvml
from nodeagent.hardware.probes import nvml
from testbed import TESTBED_DATA
from testbed.smi_q import parse_smi_q
from tests.hardware.nvml_replay import ReplayNvml

DATA = TESTBED_DATA
FIXTURES = sorted(p.name for p in DATA.glob("nvidia-smi-q_*.txt"))


def _recording(name: str) -> dict[str, Any]:
    return parse_smi_q((DATA / name).read_text())


def _normalised(rec: dict[str, Any]) -> dict[str, Any]:
    for dev in rec["devices"]:
        if dev.get("lost") is False:
            del dev["lost"]
    return rec


@pytest.mark.parametrize("fixture", FIXTURES)
def test_live_read_reproduces_the_recording(fixture: str) -> None:
    recorded = _recording(fixture)
    fake = ReplayNvml(recorded)
    assert nvml.read_live(fake) == _normalised(_recording(fixture))
    assert not fake.initialised, "nvmlShutdown must follow nvmlInit"


def test_fields_nvml_does_not_support_are_left_out() -> None:
    recorded = _recording("nvidia-smi-q_H100SXMx8.txt")
    for key in ("serial", "module_id", "remapped_rows", "ecc_errors", "ecc_mode"):
        recorded["devices"][3].pop(key)
    live = nvml.read_live(ReplayNvml(recorded))
    dev = live["devices"][3]
    assert "serial" not in dev and "module_id" not in dev and "ecc_errors" not in dev
    assert dev["uuid"] == recorded["devices"][3]["uuid"]


def test_a_lost_gpu_fails_alone() -> None:
    recorded = _recording("nvidia-smi-q_H100SXMx8.txt")
    live = nvml.read_live(ReplayNvml(recorded, lost={5}))
    assert live["devices"][5] == {"index": 5, "pci_bus_id": "0000:ab:00.0", "lost": True}
    assert live["devices"][6]["name"] == "NVIDIA H100 80GB HBM3"
    inv = pb.HardwareInventory()
    for i, dev in enumerate(recorded["devices"]):
        inv.gpus.add(index=i, pci_address=dev["pci_bus_id"], vendor_id="10de", vendor="nvidia")
    errors: list[str] = []
    merge_nvml(inv, live, errors)
    for g in inv.gpus:
        _settle_health(g)
    assert not errors
    assert inv.gpus[5].health == pb.HEALTH_FAILED
    assert "lost" in inv.gpus[5].health_reasons[0]
    assert all(g.health == pb.HEALTH_OK for i, g in enumerate(inv.gpus) if i != 5)


def test_no_library_means_sysfs_only_not_an_error() -> None:
    live = nvml.read_live(ReplayNvml({}, init_error=True))
    assert live["available"] is False and "Not Found" in live["error"]
    inv = pb.HardwareInventory()
    inv.gpus.add(pci_address="0000:18:00.0", model="NVIDIA H100 80GB HBM3")
    errors: list[str] = []
    merge_nvml(inv, live, errors)
    assert not errors and inv.gpus[0].model_source == ""


def test_health_from_nvml_facts() -> None:
    recorded = _recording("nvidia-smi-q_H100SXMx8.txt")
    recorded["devices"][0]["remapped_rows"]["pending"] = True
    recorded["devices"][1]["nvlink_states"] = [True] * 16 + [False] * 2
    recorded["devices"][2]["ecc_errors"]["uncorrected_volatile"] = 3
    recorded["devices"][3]["remapped_rows"]["failure"] = True
    inv = pb.HardwareInventory()
    for i, dev in enumerate(recorded["devices"]):
        inv.gpus.add(index=i, pci_address=dev["pci_bus_id"], vendor_id="10de")
    merge_nvml(inv, recorded, [])
    for g in inv.gpus:
        _settle_health(g)
    g = inv.gpus
    assert (g[0].health, g[0].health_reasons[:]) == (
        pb.HEALTH_DEGRADED,
        ["row remapping pending: GPU reset needed"],
    )
    assert g[1].health_reasons[:] == ["NVLink 16 of 18 links active"]
    assert g[2].health_reasons[:] == ["3 uncorrected ECC errors since boot"]
    assert g[3].health == pb.HEALTH_FAILED
    assert g[4].health == pb.HEALTH_OK and g[4].model == "NVIDIA H100 80GB HBM3"
    assert g[4].memory_bytes == 85520809984 and g[4].model_source == "nvml"


def test_garbage_recording_is_an_error_not_a_crash() -> None:
    inv = pb.HardwareInventory()
    inv.gpus.add(pci_address="0000:18:00.0")
    errors: list[str] = []
    bad = [{"pci_bus_id": 7}, "junk", {"pci_bus_id": "0000:18:00.0", "memory_total_bytes": "x"}]
    merge_nvml(inv, {"available": True, "devices": bad}, errors)
    assert len(errors) == 3
