"""Clusters, the Kubespray inventory export and its validation, checked with the real
`ansible-inventory` (ansible-core 2.18, the range Kubespray v2.31 accepts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import json_format

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import kubespray
from testbed.cli import nodeagent as cli
from testbed.variants import variant
from tests.inventory.conftest import Client, ServiceThread, enrol

BIN = Path(sys.executable).parent
HOSTILE_NAMES = [
    "GPU_Node_2",
    "gpu node",
    "-e@evil.yml",
    "gpu;rm -rf /",
    "all",
    "kube_node",
    "gpu:1",
    "gpu[1:3]",
    "a" * 64,
    "gpu-1.",
    "gpü",
    "gpu,cp1",
    "x\nansible_host=1",
    "../etc",
    "",
    "Gpu-1",
]


def cluster_spec(**kw: object) -> ipb.Cluster:
    c = ipb.Cluster(
        name="prod",
        kubespray_dir="/opt/kubespray",
        ssh_user="deploy",
        ssh_key_path="/etc/nodeagent/ssh/id_ed25519",
        control_plane=[ipb.KubesprayHost(name="cp1", ip="10.0.0.1")],
        etcd=[ipb.KubesprayHost(name="cp1", ip="10.0.0.1")],
    )
    for key, value in kw.items():
        if isinstance(value, list):
            del getattr(c, key)[:]
            getattr(c, key).extend(value)
        else:
            setattr(c, key, value)
    return c


def entry(name: str, **kw: object) -> kubespray.NodeEntry:
    return kubespray.NodeEntry(node_id=f"id-{name}", name=name, ip="10.0.1.5", **kw)  # type: ignore[arg-type]


# --- validation rules ---------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_node_names_are_left_out_and_named(name: str) -> None:
    inv, problems = kubespray.build(cluster_spec(), [entry(name), entry("gpu-ok")])
    assert len(problems) == 1 and f"node id-{name}: host name" in problems[0], problems
    assert list(inv["all"]["hosts"]) == ["cp1", "gpu-ok"]
    assert list(inv["all"]["children"]["kube_node"]["hosts"]) == ["gpu-ok"]


def test_a_node_without_an_admin_address_is_left_out() -> None:
    named_only = kubespray.NodeEntry(node_id="id-1", name="gpu-1", access_ip="10.0.1.9")
    inv, problems = kubespray.build(cluster_spec(), [named_only, entry("gpu-2")])
    assert problems == [f"gpu-1: {kubespray.NO_ADDRESS}"]
    assert "gpu-1" not in inv["all"]["hosts"] and "gpu-2" in inv["all"]["hosts"]
    by_name = kubespray.NodeEntry(node_id="id-3", name="gpu-3", ansible_host="gpu-3.dc1")
    inv, problems = kubespray.build(cluster_spec(), [by_name])
    assert problems == []
    assert inv["all"]["hosts"]["gpu-3"]["ansible_host"] == "gpu-3.dc1", "the admin's, not gpu-3"


def test_good_inventory_has_no_problems() -> None:
    inv, problems = kubespray.build(cluster_spec(), [entry("gpu-001"), entry("gpu-002.dc1")])
    assert problems == []
    assert list(inv["all"]["children"]["kube_node"]["hosts"]) == ["gpu-001", "gpu-002.dc1"]


@pytest.mark.parametrize(
    ("group_vars", "needle"),
    [
        (
            {"kube_pods_subnet": "10.233.0.0/16"},
            "overlap",
        ),  # services inside pods: Kubespray misses it
        ({"kube_pods_subnet": "10.233.0.0/18"}, "same network"),
        ({"kube_service_addresses": "10.233.64.0/20"}, "overlap"),
        ({"kube_pods_subnet": "10.233.64.0/33"}, "not a network"),
        ({"kube_pods_subnet": "10.244.0.0/16", "kube_service_addresses": "10.96.0.0/12"}, ""),
        ({"ipv6_stack": True, "kube_pods_subnet_ipv6": "fd85:ee78:d8a6:8607::1000/116"}, "same"),
    ],
)
def test_pod_and_service_subnets(group_vars: dict[str, object], needle: str) -> None:
    c = cluster_spec()
    json_format.ParseDict(group_vars, c.group_vars)
    problems = kubespray.subnet_problems(json_format.MessageToDict(c.group_vars))
    if needle:
        assert any(needle in p for p in problems), problems
    else:
        assert problems == []


def test_control_plane_etcd_and_duplicate_names() -> None:
    three = [ipb.KubesprayHost(name=f"cp{i}", ip=f"10.0.0.{i}") for i in (1, 2, 3)]
    assert kubespray.cluster_problems(cluster_spec(etcd=three, control_plane=three)) == []
    even = kubespray.cluster_problems(cluster_spec(etcd=three[:2]))
    assert any("odd number" in p for p in even)
    assert any("odd number" in p for p in kubespray.cluster_problems(cluster_spec(etcd=[])))
    empty = kubespray.cluster_problems(cluster_spec(control_plane=[]))
    assert any("kube_control_plane is empty" in p for p in empty)
    twins = [entry("gpu-1"), kubespray.NodeEntry("other", "gpu-1", ip="10.0.1.6"), entry("gpu-2")]
    inv, dup = kubespray.build(cluster_spec(), twins)
    assert dup == [
        "gpu-1: node id-gpu-1 shares this name with another node",
        "gpu-1: node other shares this name with another node",
    ]
    assert list(inv["all"]["children"]["kube_node"]["hosts"]) == ["gpu-2"], "neither twin"
    inv, clash = kubespray.build(cluster_spec(), [entry("cp1")])
    assert clash == ["cp1: node id-cp1 has the name of a control-plane or etcd host"]
    assert inv["all"]["hosts"]["cp1"]["ip"] == "10.0.0.1", "the control-plane host keeps its entry"
    _, bad_ip = kubespray.build(cluster_spec(), [kubespray.NodeEntry("x", "gpu-1", ip="10.0.0")])
    assert any("not an IP address" in p for p in bad_ip)
    _, bad_label = kubespray.build(cluster_spec(), [entry("gpu-1", labels={"a b": "c"})])
    assert any("invalid label key" in p for p in bad_label)


# --- through the service ------------------------------------------------------------------


def ansible_inventory(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"},
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def ready_node(
    svc: ServiceThread, admin: Client, inv: pb.HardwareInventory, cluster: str, ip: str = ""
) -> str:
    node = enrol(svc, admin, inv)
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id,
            assignment=ipb.Assignment(cluster=cluster, pool="train"),
            fields=["cluster", "pool"],
        )
    )
    if ip:
        admin.SetNodeAddress(ipb.NodeAddress(node_id=node.id, ip=ip))
    node.client.close()
    return node.id


def credentials(svc: ServiceThread, scratch: Path, role: str) -> dict[str, str]:
    out = scratch / role
    out.mkdir()
    cert, key = svc.svc.ca.issue_client(f"{role}-user", role)
    (out / "c.crt").write_bytes(cert)
    (out / "c.key").write_bytes(key)
    (out / "ca.crt").write_bytes(svc.ca_pem)
    return {
        "NODEAGENT_INVENTORY": svc.address,
        "NODEAGENT_ADMIN_CERT": str(out / "c.crt"),
        "NODEAGENT_ADMIN_KEY": str(out / "c.key"),
        "NODEAGENT_ADMIN_CA": str(out / "ca.crt"),
    }


def test_export_checked_by_ansible_inventory(
    service_factory: Callable[..., ServiceThread],
    database: str,
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    spec = cluster_spec(
        control_plane=[ipb.KubesprayHost(name=f"cp{i}", ip=f"10.0.0.{i}") for i in (1, 2, 3)]
    )
    spec.etcd.extend(spec.control_plane[1:])
    json_format.ParseDict(
        {
            "kube_network_plugin": "calico",
            "kube_pods_subnet": "10.244.0.0/16",
            "kube_service_addresses": "10.96.0.0/12",
        },
        spec.group_vars,
    )
    spec.label_policy.labels["site"] = "dc1"
    created = admin.CreateCluster(spec)
    assert created.batch_size == 10 and created.label_policy.families == ["own"]
    assert created.label_policy.taints == ["nodeagent.io/validating=true:NoSchedule"]
    ids = [ready_node(svc, admin, variant(dgx_inventory, n), "prod", f"10.0.1.{n}") for n in (1, 2)]
    other = ready_node(svc, admin, variant(dgx_inventory, 3), "staging")
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=ids[1],
            assignment=ipb.Assignment(labels={"rack": "r7"}, taints=["gpu=true:NoSchedule"]),
            fields=["labels", "taints"],
        )
    )

    viewer = credentials(svc, scratch, "viewer")
    hosts, script = scratch / "hosts.yaml", scratch / "inventory.py"
    done = cli(
        "admin",
        "export",
        "kubespray",
        "--cluster",
        "prod",
        "-f",
        str(hosts),
        "--script",
        str(script),
        env=viewer,
    )
    assert done.returncode == 0, done.stderr
    assert os.access(script, os.X_OK)
    static = ansible_inventory("-i", str(hosts), "--list")
    dynamic = ansible_inventory("-i", str(script), "--list")
    assert static == dynamic
    groups = static
    assert groups["kube_control_plane"] == {"hosts": ["cp1", "cp2", "cp3"]}
    assert groups["etcd"] == {"hosts": ["cp1", "cp2", "cp3"]}
    assert sorted(groups["kube_node"]["hosts"]) == ["gpu-00001", "gpu-00002"]  # type: ignore[index]
    assert "k8s_cluster" in groups["all"]["children"]  # type: ignore[index]
    hostvars = groups["_meta"]["hostvars"]  # type: ignore[index]
    gpu2 = hostvars["gpu-00002"]
    assert gpu2["ansible_host"] == gpu2["ip"] == gpu2["access_ip"] == "10.0.1.2"
    assert gpu2["ansible_user"] == "deploy" and gpu2["kube_pods_subnet"] == "10.244.0.0/16"
    assert isinstance(gpu2["node_labels"], dict)
    labels = gpu2["node_labels"]
    assert labels["gpu.nodeagent.io/count"] == "8" and labels["nodeagent.io/pool"] == "train"
    assert labels["site"] == "dc1" and labels["rack"] == "r7"
    assert "nvidia.com/gpu.product" not in labels, "only the policy's families"
    assert gpu2["node_taints"] == ["nodeagent.io/validating=true:NoSchedule", "gpu=true:NoSchedule"]
    assert hostvars["gpu-00001"]["node_taints"] == ["nodeagent.io/validating=true:NoSchedule"]
    one = ansible_inventory("-i", str(script), "--host", "gpu-00001")
    assert one["ip"] == "10.0.1.1" and one["node_labels"] == hostvars["gpu-00001"]["node_labels"]
    graph = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(hosts), "--graph", "k8s_cluster"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "gpu-00001" in graph.stdout and "cp1" in graph.stdout
    text = hosts.read_text()
    assert text.startswith("# Kubespray inventory written by nodeagent")
    assert other not in text and "gpu-00003" not in text

    # the label cache follows the policy: a new family shows up on the next export
    admin_env = credentials(svc, scratch, "admin")
    changed = cli("admin", "clusters", "update", "prod", "--families", "own,gfd", env=admin_env)
    assert changed.returncode == 0, changed.stderr
    again = yaml.safe_load(
        cli("admin", "export", "kubespray", "--cluster", "prod", env=viewer).stdout
    )
    assert again["all"]["hosts"]["gpu-00001"]["node_labels"]["nvidia.com/gpu.count"] == "8"
    assert again["all"]["hosts"]["gpu-00001"]["node_labels"]["site"] == "dc1", "kept by update"
    admin.close()


def test_bad_names_are_refused_at_assignment_and_one_bad_node_is_left_out(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    admin.CreateCluster(cluster_spec())

    # a node whose own host name breaks the rules is not assigned to a cluster
    hostile = variant(dgx_inventory, 7)
    hostile.system.hostname = "GPU_Node;rm -rf /"
    refused = enrol(svc, admin, hostile)
    with pytest.raises(grpc.RpcError) as err:
        admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=refused.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a lower-case RFC 1123 name" in (err.value.details() or "")
    assert admin.GetNode(ipb.GetNodeRequest(node_id=refused.id)).assignment.cluster == ""
    pooled = admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=refused.id, assignment=ipb.Assignment(pool="train"), fields=["pool"]
        )
    )
    assert pooled.assignment.pool == "train", "only a cluster needs a node name"

    # assigned while its name was good, then renamed by its own heartbeat
    ready_node(svc, admin, variant(dgx_inventory, 1), "prod", "10.0.1.1")
    rogue = enrol(svc, admin, variant(dgx_inventory, 2))
    rogue.client.Heartbeat(ipb.HeartbeatRequest(node_id=rogue.id, phase="READY"))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=rogue.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )
    admin.SetNodeAddress(ipb.NodeAddress(node_id=rogue.id, ip="10.0.1.2"))
    ready_node(svc, admin, variant(dgx_inventory, 3), "prod")  # no address set by an admin
    renamed = variant(dgx_inventory, 2)
    renamed.system.hostname = "gpu-00002 ansible_host=10.9.9.9"
    rogue.client.Heartbeat(
        ipb.HeartbeatRequest(
            node_id=rogue.id, phase="READY", inventory_hash="renamed", inventory=renamed
        )
    )
    rogue.client.close()
    now = admin.GetNode(ipb.GetNodeRequest(node_id=rogue.id))
    assert (now.hostname, now.state) == (renamed.system.hostname, ipb.READY)

    env = credentials(svc, scratch, "viewer")
    out = scratch / "hosts.yaml"
    done = cli("admin", "export", "kubespray", "--cluster", "prod", "-f", str(out), env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: left out: node {rogue.id}: host name 'gpu-00002 ansible_host=10.9.9.9' "
        "is not a lower-case RFC 1123 name (dot-separated labels of a-z, 0-9 and '-', "
        "starting and ending alphanumeric)",
        f"warning: left out: gpu-00003: {kubespray.NO_ADDRESS}",
    ]
    assert "1 node(s) in kube_node" in done.stderr
    exported = ansible_inventory("-i", str(out), "--list")
    assert exported["kube_node"] == {"hosts": ["gpu-00001"]}
    hostvars = exported["_meta"]["hostvars"]  # type: ignore[index]
    assert sorted(hostvars) == ["cp1", "gpu-00001"]
    assert hostvars["gpu-00001"]["ansible_host"] == "10.0.1.1"
    assert "gpu-00003" not in out.read_text() and "10.9.9.9" not in out.read_text()

    # the cluster's own problems still block it: overlapping subnets, in Kubespray's names
    admin_env = credentials(svc, scratch, "admin")
    gv = scratch / "gv.yaml"
    gv.write_text("kube_pods_subnet: 10.233.0.0/16\n")
    assert (
        cli(
            "admin", "clusters", "update", "prod", "--group-vars", str(gv), env=admin_env
        ).returncode
        == 0
    )
    with pytest.raises(grpc.RpcError) as err:
        list(admin.stub.ExportKubespray(ipb.ExportKubesprayRequest(cluster="prod"), timeout=10))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "kube_service_addresses 10.233.0.0/18 and kube_pods_subnet 10.233.0.0/16 overlap" in (
        err.value.details() or ""
    )
    admin.close()


def test_cluster_rbac_and_input_checks(
    service_factory: Callable[..., ServiceThread], scratch: Path
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin, operator, viewer = svc.admin(), svc.admin("operator", "olga"), svc.admin("viewer", "v")
    for client in (operator, viewer):
        with pytest.raises(grpc.RpcError) as err:
            client.CreateCluster(cluster_spec())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin.CreateCluster(cluster_spec())
    assert [c.name for c in viewer.ListClusters(ipb.ListClustersRequest()).clusters] == ["prod"]
    assert viewer.GetCluster(ipb.GetClusterRequest(name="prod")).ssh_user == "deploy"
    with pytest.raises(grpc.RpcError) as err:
        viewer.StartJoin(ipb.StartJoinRequest(cluster="prod"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        operator.StartJoin(ipb.StartJoinRequest(cluster="prod"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # nothing READY to join
    for bad in (
        cluster_spec(name="Prod!"),
        cluster_spec(name="x", kubespray_dir="relative"),
        cluster_spec(name="y", control_plane=[ipb.KubesprayHost(name="cp 1")]),
        cluster_spec(name="z", ssh_user="root;id"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            admin.CreateCluster(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        admin.CreateCluster(cluster_spec())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        admin.GetCluster(ipb.GetClusterRequest(name="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for c in (admin, operator, viewer):
        c.close()


def test_an_empty_export_says_why(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    """'0 node(s)' alone left the admin guessing: the export says which of its reasons it is."""
    svc = service_factory(f"sqlite:///{scratch / 'empty.db'}")
    admin = svc.admin()
    admin.CreateCluster(cluster_spec())
    env = credentials(svc, scratch, "viewer")

    def why(*flags: str) -> str:
        done = cli("admin", "export", "kubespray", "--cluster", "prod", *flags, env=env)
        assert done.returncode == 0, done.stderr
        return done.stderr.strip().splitlines()[-1]

    assert why() == (
        "nodeagent: no node exported: no node is assigned to cluster prod "
        "(nodeagent admin nodes update NODE --cluster prod)"
    )
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )
    assert why() == (
        "nodeagent: no node exported: 1 node(s) assigned to cluster prod, none READY, JOINING "
        "or JOINED (they are DISCOVERED; nodeagent admin nodes list --cluster prod shows why)"
    )
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    assert why("-f", str(scratch / "hosts.yaml")) == (
        "nodeagent: no node exported: 1 node(s) of cluster prod left out "
        "(the warnings above say why)"
    )
    # with an address it is exported; -o picks the format: the same inventory as JSON
    admin.SetNodeAddress(ipb.NodeAddress(node_id=node.id, ip="10.0.1.1"))
    assert why("-f", str(scratch / "hosts.yaml")).endswith(": 1 node(s) in kube_node")
    as_json = cli("admin", "export", "kubespray", "--cluster", "prod", "-o", "json", env=env)
    exported = json.loads(as_json.stdout)
    assert exported == yaml.safe_load((scratch / "hosts.yaml").read_text())
    assert list(exported["all"]["children"]["kube_node"]["hosts"]) == ["gpu-00001"]
    node.client.close()
    admin.close()
