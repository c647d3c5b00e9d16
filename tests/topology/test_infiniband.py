"""InfiniBand probe: infiniband-diags output parsing, and tiers for a two-level fat tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.hardware.discover import discover
from nodeagent.hardware.probes import infiniband
from nodeagent.host import HostRoot
from nodeagent.topology import tiers
from nodeagent.topology.config import FabricConfig
from nodeagent.topology.observe import observe
from tests.rootcopy import record, rewrite
from tests.topology import ibfabric

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "infiniband"
DGX_COMPUTE = ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]
TREE = ibfabric.FatTree()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_generator_renders_the_reviewed_fixtures() -> None:
    assert ibfabric.nodeinfo(TREE, 0, 0, 1) == fixture("smpquery-nodeinfo.txt")
    assert ibfabric.nodedesc(TREE, 0, 0) == fixture("smpquery-nodedesc.txt")
    assert ibfabric.iblinkinfo(TREE, 0, 0) == fixture("iblinkinfo.txt")


def test_nodeinfo_and_nodedesc() -> None:
    info = infiniband.parse_nodeinfo(fixture("smpquery-nodeinfo.txt"))
    assert info["NodeType"] == "Switch"
    assert info["SystemGuid"] == "0xfc6a1c0300e5a000"
    assert info["LocalPort"] == "1"
    assert info["NumPorts"] == "64"
    assert infiniband.parse_nodedesc(fixture("smpquery-nodedesc.txt")) == (
        "MF0;su1-ibleaf-r0:MQM9700/U1"
    )
    # A description of 32 characters or more gets one dot (smpquery.c node_desc)
    long = "MF0;A09-P1-IBLEAF-04-04:MQM9701/U1"
    assert infiniband.parse_nodedesc(f"Node Description:.{long}\n") == long


def test_iblinkinfo_lines() -> None:
    links = infiniband.parse_iblinkinfo(fixture("iblinkinfo.txt"))
    assert len(links) == 5 * 64
    leaf = [lk for lk in links if lk["guid"] == "fc6a1c0300e5a000"]
    up = [lk for lk in leaf if "remote_guid" in lk]
    assert [lk["port"] for lk in up] == [1, 2, 3, 4, 33, 34, 35, 36]
    assert up[0] == {
        "guid": "fc6a1c0300e5a000",
        "desc": "MF0;su1-ibleaf-r0:MQM9700/U1",
        "lid": 1,
        "port": 1,
        "link": "4X 106.25 Gbps Active/ LinkUp",
        "remote_guid": "946dae0300d10000",
        "remote_lid": 100,
        "remote_port": 1,
        "remote_desc": "dgx-su1-01 mlx5_0",
    }
    assert leaf[4]["link"] == "Down/ Polling" and "remote_guid" not in leaf[4]
    spine_port2 = next(lk for lk in links if lk["guid"] == "fc6a1c0300f0b000" and lk["port"] == 2)
    assert "remote_guid" not in spine_port2  # "Port not available": outside the scan


def test_first_hop_names_leaf_and_spines() -> None:
    hop = infiniband.first_hop(
        {
            "device": "mlx5_0",
            "port": 1,
            "nodeinfo": fixture("smpquery-nodeinfo.txt"),
            "nodedesc": fixture("smpquery-nodedesc.txt"),
            "iblinkinfo": fixture("iblinkinfo.txt"),
        }
    )
    assert hop["errors"] == []
    assert hop["leaf"] == {
        "id": "fc6a1c0300e5a000",
        "guid": "fc6a1c0300e5a000",
        "name": "MF0;su1-ibleaf-r0:MQM9700/U1",
        "port": "1",
    }
    assert hop["spines"] == [
        {"id": f"fc6a1c0300f0b00{k}", "name": f"MF0;ibspine-0{k + 1}:MQM9700/U1", "port": "1"}
        for k in range(4)
    ]


def test_switch_two_hops_out_is_not_a_spine() -> None:
    # Partial scans can reach one hop further than asked; a leaf found that way is
    # printed too, but our leaf has no link to it.
    other_leaf = "\n".join(ibfabric.leaf_lines(TREE, 1, 0))
    hop = infiniband.first_hop(
        {
            "nodeinfo": fixture("smpquery-nodeinfo.txt"),
            "nodedesc": fixture("smpquery-nodedesc.txt"),
            "iblinkinfo": fixture("iblinkinfo.txt") + other_leaf + "\n",
        }
    )
    assert [s["id"] for s in hop["spines"]] == [f"fc6a1c0300f0b00{k}" for k in range(4)]


@pytest.mark.parametrize(
    ("record_", "error"),
    [
        (
            {
                "nodeinfo": "",
                "errors": [
                    "nodeinfo: smpquery: iberror: failed: operation "
                    "NodeInfo: node info query failed"
                ],
            },
            "node info query failed",
        ),
        (
            {"nodeinfo": "NodeType:........................Channel Adapter\n"},
            "first hop is a Channel Adapter, not a switch",
        ),
        (
            {"nodeinfo": "NodeType:........................Switch\nGuid:..........0x0\n"},
            "no SystemGuid or Guid",
        ),
        ({"nodeinfo": "garbage\n\x00\xff"}, "no NodeInfo fields"),
    ],
)
def test_first_hop_failures_are_errors(record_: dict[str, object], error: str) -> None:
    hop = infiniband.first_hop(record_)
    assert hop["leaf"] is None
    assert any(error in e for e in hop["errors"]), hop["errors"]


def test_unavailable_probe_gives_no_neighbours() -> None:
    data = {"probe": "infiniband", "available": False, "error": "smpquery not found"}
    assert infiniband.neighbours(data) == {}
    assert infiniband.neighbours(None) == {}
    assert infiniband.neighbours({"ports": [{"device": "mlx5_0"}, "junk"]}) == {}


def _dgx(root_copy: Callable[..., Path], su: int, i: int) -> Path:
    root = root_copy("dgx-h100")
    record(root, "infiniband", ibfabric.recording(TREE, su, i, DGX_COMPUTE))
    return root


def _observe(root: Path, name: str) -> object:
    host = HostRoot(root)
    return observe(host, discover(host), FabricConfig(node_name=name))


def test_dgx_on_a_fat_tree_gets_leaf_group_and_spine_group(
    root_copy: Callable[..., Path],
) -> None:
    su1 = _observe(_dgx(root_copy, 0, 0), "dgx-su1-01")
    su2 = _observe(_dgx(root_copy, 1, 2), "dgx-su2-03")
    assert [r.name for r in su1.rails] == [f"{d}/1" for d in DGX_COMPUTE]
    assert all(r.neighbour_source == "infiniband" and len(r.spines) == 4 for r in su1.rails)
    assert su1.rails[1].leaf.name == "MF0;su1-ibleaf-r1:MQM9700/U1"
    assert su2.rails[1].leaf.port == "3"
    t1, t2 = tiers.node_tiers(su1), tiers.node_tiers(su2)
    leaves1 = [f"{TREE.leaf_guid(0, r):016x}" for r in range(8)]
    spines = [f"{TREE.spine_guid(k):016x}" for k in range(4)]
    assert t1.tier_0 == tiers.set_id("lg-", leaves1) and list(t1.leaf_ids) == leaves1
    assert t1.tier_1 == tiers.set_id("sg-", spines) == t2.tier_1
    assert t1.tier_0 != t2.tier_0
    assert (t1.tier_2, t1.fabric, t1.source) == ("unknown", "unknown", "observed")
    assert not t1.degraded and t1.rails_active == 8


def test_pulled_cable_keeps_tier_and_degrades(root_copy: Callable[..., Path]) -> None:
    healthy = tiers.node_tiers(_observe(_dgx(root_copy, 0, 0), "dgx-su1-01"))
    tree = ibfabric.FatTree(down={("dgx-su1-01", 1)})
    root = root_copy("dgx-h100")
    record(root, "infiniband", ibfabric.recording(tree, 0, 0, DGX_COMPUTE))
    rewrite(root, "sys/class/infiniband/mlx5_3/ports/1/state", "1: DOWN\n")
    rewrite(root, "sys/class/infiniband/mlx5_3/ports/1/phys_state", "2: Polling\n")
    obs = _observe(root, "dgx-su1-01")
    alone = tiers.node_tiers(obs)
    assert alone.tier_0 != healthy.tier_0  # 7 leaves hash differently ...
    kept = tiers.node_tiers(obs, healthy)  # ... which the last-good rule prevents
    assert (kept.tier_0, kept.tier_1, kept.source) == (healthy.tier_0, healthy.tier_1, "last-good")
    assert kept.degraded and kept.rails_active == 7 and kept.rails_expected == 8
    assert kept.degraded_reasons == ["7 of 8 compute rails active (down: mlx5_3/1)"]


def _stand_in(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_live_queries_run_the_documented_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No InfiniBand here: stand-ins on PATH replay the recorded outputs, and log the
    # command lines so the test can check what the probe asks for.
    log = tmp_path / "calls"
    _stand_in(
        tmp_path,
        "smpquery",
        f'echo "smpquery $*" >> {log}\n'
        f'case "$*" in *mlx5_9*) echo "ibwarn: [42] mad_rpc: _do_madrpc failed" >&2; '
        f"exit 255;; esac\n"
        f'case "$*" in *nodeinfo*) cat {FIXTURES}/smpquery-nodeinfo.txt;; '
        f"*) cat {FIXTURES}/smpquery-nodedesc.txt;; esac\n",
    )
    _stand_in(
        tmp_path, "iblinkinfo", f'echo "iblinkinfo $*" >> {log}\ncat {FIXTURES}/iblinkinfo.txt\n'
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    data = infiniband.read_live([("mlx5_0", 1), ("mlx5_9", 1)], timeout=10)
    assert log.read_text().splitlines()[:3] == [
        "smpquery -C mlx5_0 -P 1 -D nodeinfo 0,1",
        "smpquery -C mlx5_0 -P 1 -D nodedesc 0,1",
        "iblinkinfo -C mlx5_0 -P 1 -D 0,1 -a --switches-only -l",
    ]
    hops = infiniband.neighbours(data)
    assert hops[("mlx5_0", 1)]["leaf"]["name"] == "MF0;su1-ibleaf-r0:MQM9700/U1"
    assert hops[("mlx5_9", 1)]["leaf"] is None
    assert "nodeinfo: ibwarn: [42] mad_rpc: _do_madrpc failed" in hops[("mlx5_9", 1)]["errors"]


def test_without_infiniband_diags_the_probe_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no smpquery anywhere
    data = infiniband.read_live([("mlx5_0", 1)])
    assert data["available"] is False and "install infiniband-diags" in data["error"]
