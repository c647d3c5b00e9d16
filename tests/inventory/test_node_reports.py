"""What agents report beside their inventory (issue 15): their label map and addresses,
stored by the inventory; the Kubespray export built from them with no admin input; label
overrides decided in the inventory reaching the node's feature file; the fleet's tiers
and join hooks going down in heartbeat replies."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import reports
from nodeagent.inventory.store import Store
from nodeagent.labels import sinks
from testbed.agent_process import AgentProcess
from testbed.cli import nodeagent as cli
from testbed.ready import make_ready
from testbed.wait import wait_for
from tests.inventory.conftest import ServiceThread, enrol
from tests.inventory.test_kubespray_export import ansible_inventory, credentials
from tests.rootcopy import root_copy

__all__ = ["root_copy"]  # the fixture

S = ipb.NodeState


def _default_route() -> tuple[str, str]:
    """(interface, its first global IPv4 address) of this namespace's default route, from
    iproute2: the independent reading the agent's netlink report is checked against."""
    route = json.loads(
        subprocess.run(
            ["ip", "-j", "route", "show", "default"], capture_output=True, text=True, check=True
        ).stdout
    )
    dev = route[0]["dev"]
    addrs = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "addr", "show", "dev", dev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return dev, addrs[0]["addr_info"][0]["local"]


def _cluster(admin: object, name: str = "prod", node_network: str = "") -> None:
    cp = ipb.KubesprayHost(name="cp1", ip="192.0.2.250")
    admin.CreateCluster(  # type: ignore[attr-defined]
        ipb.Cluster(
            name=name,
            kubespray_dir="/opt/kubespray",
            control_plane=[cp],
            etcd=[cp],
            node_network=node_network,
        )
    )


def _export(env: dict[str, str], scratch: Path, cluster: str = "prod") -> tuple[Path, str]:
    hosts = scratch / f"{cluster}-hosts.yaml"
    done = cli("admin", "export", "kubespray", "--cluster", cluster, "-f", str(hosts), env=env)
    assert done.returncode in (0, 3), done.stderr
    return hosts, done.stdout + done.stderr


def test_agent_reports_labels_and_addresses_and_gets_overrides(
    service_factory: Callable[..., ServiceThread],
    root_copy: Callable[..., Path],
    scratch: Path,
) -> None:
    if subprocess.run(["ip", "route", "show", "default"], capture_output=True).stdout == b"":
        pytest.fail("this test needs a default route in the test's network namespace")
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    _cluster(admin)
    root = make_ready(root_copy("dgx-h100"))
    agent = AgentProcess(scratch / "agent", root, watch=svc.agent_settings(scratch)).start()
    try:
        wait_for(lambda: agent.node_id() != "", 30, "the agent to enrol")
        nid = agent.node_id()

        def node() -> ipb.Node:
            got: ipb.Node = admin.GetNode(ipb.GetNodeRequest(node_id=nid))
            return got

        wait_for(lambda: bool(node().network.interfaces), 20, "the addresses to arrive")
        wait_for(lambda: "own" in node().labels.families, 20, "the label map to arrive")
        dev, address = _default_route()
        shown = node()
        assert shown.network.default_route_interface == dev
        assert shown.network.default_route_address == address
        assert "lo" not in [i.name for i in shown.network.interfaces]
        own = dict(shown.labels.families["own"].labels)
        file_labels = sinks.parse_feature_file(agent.feature_file.read_text())
        assert own.items() <= file_labels.items(), "the report is the daemon's own map"
        assert own["rdma.nodeagent.io/rails-active"] == "8"
        assert shown.labels.domain == "nodeagent.io"
        wait_for(lambda: node().state == S.READY, 20, "the node to become READY")

        env = credentials(svc, scratch, "admin")
        assert cli("admin", "nodes", "update", nid, "--cluster", "prod", env=env).returncode == 0
        hosts, said = _export(env, scratch)
        doc = ansible_inventory("-i", str(hosts), "--list")
        hostvars = doc["_meta"]["hostvars"]  # type: ignore[index]
        entry = hostvars["dgx-h100-01"]
        assert (entry["ansible_host"], entry["ip"], entry["access_ip"]) == (address,) * 3
        # labels the node alone knows (rails, from its fabric observation) are exported
        assert entry["node_labels"]["rdma.nodeagent.io/rails-active"] == "8"
        assert entry["node_labels"] == own, said

        # an override decided in the inventory reaches the file within a heartbeat
        done = cli("admin", "nodes", "update", nid, "--label", "team.example.com/owner=ml", env=env)
        assert done.returncode == 0, done.stderr

        def file_has(key: str, value: str | None) -> bool:
            labels = sinks.parse_feature_file(agent.feature_file.read_text())
            return labels.get(key) == value

        wait_for(lambda: file_has("team.example.com/owner", "ml"), 10, "the override on the node")
        done = cli(
            "admin", "nodes", "update", nid, "--label", "team.example.com/tier=gold", env=env
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: file_has("team.example.com/tier", "gold"), 10, "the new override")
        assert file_has("team.example.com/owner", None), "a label no longer decided is gone"

        bad = cli("admin", "nodes", "update", nid, "--label", "Team Owner=ml", env=env)
        assert bad.returncode != 0
        assert "invalid label key 'Team Owner': a key is [prefix/]name" in bad.stderr
        assert file_has("team.example.com/tier", "gold")
    finally:
        agent.stop()
        agent.close()


def _heartbeat(node: object, **fields: object) -> ipb.HeartbeatResponse:
    resp: ipb.HeartbeatResponse = node.client.Heartbeat(  # type: ignore[attr-defined]
        ipb.HeartbeatRequest(node_id=node.id, **fields)  # type: ignore[attr-defined]
    )
    return resp


def _ready_in_prod(svc: ServiceThread, admin: object, inv: pb.HardwareInventory) -> object:
    node = enrol(svc, admin, inv)  # type: ignore[arg-type]
    _heartbeat(node, phase="READY")
    admin.UpdateAssignment(  # type: ignore[attr-defined]
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )
    return node


def test_export_picks_reported_addresses_and_refuses_link_local(
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
    scratch: Path,
) -> None:
    from testbed.variants import variant

    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    _cluster(admin)
    _cluster(admin, "lab", node_network="10.20.0.0/16")
    env = credentials(svc, scratch, "admin")
    nodes = [_ready_in_prod(svc, admin, variant(dgx_inventory, n)) for n in (1, 2, 3, 4)]
    two_networks = ipb.NodeNetwork(
        interfaces=[
            ipb.InterfaceAddresses(name="eno1", addresses=["192.0.2.41/24", "fe80::1/64"], up=True),
            ipb.InterfaceAddresses(name="ens2", addresses=["10.20.3.4/16"], up=True),
        ],
        default_route_interface="eno1",
        default_route_address="192.0.2.41",
    )
    link_local = ipb.NodeNetwork(
        interfaces=[
            ipb.InterfaceAddresses(name="eno1", addresses=["169.254.3.3/16", "fe80::2/64"])
        ],
    )
    _heartbeat(nodes[0], phase="READY", network=two_networks)
    _heartbeat(nodes[1], phase="READY", network=link_local)
    _heartbeat(nodes[2], phase="READY", network=two_networks)
    admin.SetNodeAddress(ipb.NodeAddress(node_id=nodes[2].id, ip="198.51.100.7"))  # type: ignore[attr-defined]
    # nodes[3] reports nothing: left out as before, never reached by its host name

    hosts, said = _export(env, scratch)
    hostvars = ansible_inventory("-i", str(hosts), "--list")["_meta"]["hostvars"]  # type: ignore[index]
    assert hostvars["gpu-00001"]["ip"] == "192.0.2.41"  # the default route's address
    assert hostvars["gpu-00003"]["ip"] == "198.51.100.7"  # the admin's wins
    assert "gpu-00002" not in hostvars and "gpu-00004" not in hostvars
    assert (
        "gpu-00002: reported only loopback or link-local addresses; no address reported by "
        "its agent or set by an admin" in said
    )
    assert "gpu-00004: no address reported by its agent or set by an admin" in said

    admin.UpdateAssignment(  # type: ignore[attr-defined]
        ipb.UpdateAssignmentRequest(
            node_id=nodes[0].id, assignment=ipb.Assignment(cluster="lab"), fields=["cluster"]
        )
    )
    hosts, _ = _export(env, scratch, "lab")
    lab = ansible_inventory("-i", str(hosts), "--list")["_meta"]["hostvars"]  # type: ignore[index]
    assert lab["gpu-00001"]["ip"] == "10.20.3.4"  # inside the cluster's node_network

    bad = ipb.NodeNetwork(interfaces=[ipb.InterfaceAddresses(name="eno1", addresses=["nope"])])
    with pytest.raises(Exception) as info:
        _heartbeat(nodes[0], phase="READY", network=bad)
    assert "network: eno1: 'nope' is not address/prefix" in str(info.value)


def test_fleet_tiers_go_down_only_when_they_differ(
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}", report_poll_seconds=0.2)
    admin = svc.admin()
    _cluster(admin)
    node = _ready_in_prod(svc, admin, dgx_inventory)
    assert not _heartbeat(node, phase="READY").HasField("fleet_tiers")
    tiers = fpb.FabricTiers(fabric="f1", tier_2="s2", tier_1="sg-1", tier_0="lg-1", source="fleet")
    store = Store.open(svc.config.database_url)
    with store.tx() as cur:
        cur.execute(
            store.q(
                "INSERT INTO fabric (node_id, observation, tiers, updated_at, tiers_at) "
                "VALUES (?, '{}', ?, 1, ?)"
            ),
            (node.id, json_format.MessageToJson(tiers, indent=None), 4e9),  # type: ignore[attr-defined]
        )
    store.close()
    wait_for(
        lambda: _heartbeat(node, phase="READY").HasField("fleet_tiers"), 10, "the fleet's tiers"
    )
    sent = _heartbeat(node, phase="READY").fleet_tiers
    assert sent == tiers
    held = reports.tiers_hash(sent)
    assert not _heartbeat(node, phase="READY", fleet_tiers_hash=held).HasField("fleet_tiers")
