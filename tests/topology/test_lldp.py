"""LLDP probe: lldpcli json0 parsing, and replay through observe()."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeagent.hardware.discover import discover
from nodeagent.hardware.probes import lldp
from nodeagent.host import HostRoot
from nodeagent.topology import tiers
from nodeagent.topology.config import FabricConfig
from nodeagent.topology.observe import observe
from tests.rootcopy import record

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "lldp" / "lldpcli-json0.json"


def interface(name: str, chassis_id: str, chassis_name: str, port: str) -> dict[str, Any]:
    """One neighbour as lldpcli 1.0.16 prints it with -f json0 (a Cumulus-like leaf)."""
    return {
        "name": name,
        "via": "LLDP",
        "rid": "1",
        "age": "0 day, 00:02:11",
        "chassis": [
            {
                "id": [{"type": "mac", "value": chassis_id}],
                "name": [{"value": chassis_name}],
                "descr": [{"value": "Cumulus Linux version 5.9.1 running on Nvidia SN5600"}],
                "capability": [{"type": "Bridge", "enabled": True}],
            }
        ],
        "port": [
            {
                "id": [{"type": "ifname", "value": port}],
                "descr": [{"value": port}],
                "ttl": [{"value": "120"}],
            }
        ],
    }


def recording(*ifaces: dict[str, Any]) -> dict[str, Any]:
    return {
        "probe": "lldp",
        "version": 1,
        "available": True,
        "error": "",
        "lldpcli": {"lldp": [{"interface": list(ifaces)}]},
    }


def test_real_lldpd_output() -> None:
    # Captured from lldpd 1.0.16 (Debian 12) in the network-namespace fabric of
    # test_lldp_netns.py: a node with two rails, each cabled to its own leaf.
    data = {"probe": "lldp", "available": True, "lldpcli": json.loads(FIXTURE.read_text())}
    heard = lldp.neighbours(data)
    assert sorted(heard) == ["rail0", "rail1"]
    assert heard["rail0"] == [
        {
            "chassis_id": "0c:42:a1:00:00:01",
            "chassis_name": "leaf-a1",
            "port_id": "swp1",
            "port_descr": "swp1",
        }
    ]
    assert heard["rail1"][0]["chassis_name"] == "leaf-a2"


def test_shapes_lldpcli_prints_without_neighbours_and_broken_input() -> None:
    assert lldp.neighbours({"lldpcli": {"lldp": [{}]}}) == {}
    assert lldp.neighbours({"lldpcli": {}}) == {}
    assert lldp.neighbours({"available": False, "lldpcli": {"lldp": "x"}}) == {}
    assert lldp.neighbours(None) == {}
    partial = {"name": "eth1", "chassis": [{"id": [{"value": "AA:BB:CC:00:00:01"}]}]}
    no_id = {"name": "eth2", "chassis": [{"name": [{"value": "mystery"}]}]}
    heard = lldp.neighbours(recording(partial, no_id, {"chassis": "junk"}))
    assert heard == {
        "eth1": [
            {"chassis_id": "aa:bb:cc:00:00:01", "chassis_name": "", "port_id": "", "port_descr": ""}
        ]
    }
    # plain -f json flattens single-item lists into objects; tolerated too
    flat = {"lldp": {"interface": {"name": "eth3", "chassis": {"id": {"value": "x"}}}}}
    assert list(lldp.neighbours({"lldpcli": flat})) == ["eth3"]


def test_missing_lldpcli_is_unavailable_not_an_error() -> None:
    data = lldp.read_live(lldpcli="/nonexistent/lldpcli")
    assert data["available"] is False and "not found" in data["error"]


def test_replayed_neighbours_give_roce_rails_their_leaves(
    root_copy: Callable[..., Path],
) -> None:
    root = root_copy("cpu-node")  # two RoCE ports, enp65s0f0np0 and enp65s0f1np1
    record(
        root,
        "lldp",
        recording(
            interface("enp65s0f0np0", "1c:34:da:00:00:0a", "leaf-a", "swp11"),
            interface("enp65s0f1np1", "1c:34:da:00:00:0b", "leaf-b", "swp11"),
            interface("eno1", "1c:34:da:00:00:ff", "mgmt", "swp48"),  # not a compute rail
        ),
    )
    host = HostRoot(root)
    obs = observe(host, discover(host), FabricConfig())
    assert [
        (r.netdev, r.leaf.id, r.leaf.name, r.leaf.port, r.neighbour_source) for r in obs.rails
    ] == [
        ("enp65s0f0np0", "1c:34:da:00:00:0a", "leaf-a", "swp11", "lldp"),
        ("enp65s0f1np1", "1c:34:da:00:00:0b", "leaf-b", "swp11", "lldp"),
    ]
    t = tiers.node_tiers(obs)
    assert t.tier_0 == tiers.set_id("lg-", ["1c:34:da:00:00:0a", "1c:34:da:00:00:0b"])
    assert t.tier_1 == "unknown"  # LLDP sees one hop only
