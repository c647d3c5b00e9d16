"""Snapshot capture carries every registered probe's recording, the fabric ones too, so
the fabric observation of the archive is the node's own."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import discover
from nodeagent.hardware.probes import infiniband
from nodeagent.hardware.probes.registry import PROBES
from nodeagent.hardware.snapshot import capture
from nodeagent.host import PROBES_DIR, HostRoot, open_root
from nodeagent.topology.config import FabricConfig, RailSelector
from nodeagent.topology.observe import observe
from testbed.machines import OCI_RDMA_TOPOLOGY
from tests.rootcopy import record
from tests.topology import ibfabric
from tests.topology.test_infiniband import DGX_COMPUTE
from tests.topology.test_lldp import interface
from tests.topology.test_lldp import recording as lldp_recording

# The DGX's compute InfiniBand rails and its two storage RoCE ports: every probe counts.
CONFIG = FabricConfig(
    node_name="dgx-su1-01", rails=RailSelector(devices=(*DGX_COMPUTE, "mlx5_2", "mlx5_8"))
)


def _fabric_root(root_copy: Callable[..., Path]) -> Path:
    root = root_copy("dgx-h100")
    record(root, "infiniband", ibfabric.recording(ibfabric.FatTree(), 0, 0, DGX_COMPUTE))
    record(
        root,
        "lldp",
        lldp_recording(
            interface("enp41s0f1np1", "1c:34:da:00:00:0a", "storage-a", "swp3"),
            interface("enp170s0f1np1", "1c:34:da:00:00:0b", "storage-b", "swp3"),
        ),
    )
    record(root, "oci", {"probe": "oci", "version": 1, "rdmaTopologyData": OCI_RDMA_TOPOLOGY})
    return root


def test_capture_carries_every_probe_and_replays_the_same_fabric(
    root_copy: Callable[..., Path], tmp_path: Path
) -> None:
    root = HostRoot(_fabric_root(root_copy))
    archive = tmp_path / "dgx.tar.gz"
    result = capture(root, str(archive))
    assert result.probes == sorted(p.name for p in PROBES) == ["infiniband", "lldp", "nvml", "oci"]
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {f"{PROBES_DIR}/{p}.json" for p in result.probes} <= names
    direct = observe(root, discover(root), CONFIG)
    assert {r.neighbour_source for r in direct.rails} == {"infiniband", "lldp"}
    assert direct.cloud.available and not direct.errors
    with open_root(archive) as replayed:
        assert observe(replayed, discover(replayed), CONFIG) == direct


def test_a_damaged_fabric_recording_is_archived_as_it_is(
    root_copy: Callable[..., Path], tmp_path: Path
) -> None:
    root = _fabric_root(root_copy)
    (root / PROBES_DIR / "lldp.json").write_text("{not json")
    archive = tmp_path / "dgx.tar.gz"
    assert capture(HostRoot(root), str(archive)).probes == ["infiniband", "nvml", "oci"]
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"{PROBES_DIR}/lldp.json")
        assert member is not None and member.read() == b"{not json"


def test_infiniband_asks_about_every_active_port_and_nothing_without_one(
    machine_root: Callable[..., Path],
) -> None:
    dgx = discover(HostRoot(machine_root("dgx-h100")))
    asked = [f"{device}/{port}" for device, port in infiniband.active_ports(dgx)]
    assert asked == [f"mlx5_{n}/1" for n in (0, 1, 3, 4, 5, 6, 7, 9, 10, 11)]  # 2, 8: RoCE
    no_ib = pb.HardwareInventory()
    assert infiniband.PROBE.record(HostRoot("/"), no_ib, infiniband.Options()) is None
