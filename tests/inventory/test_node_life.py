"""One node's whole life in its cluster, end to end: enrol, READY, a join over real SSH (the
Kubespray stand-in), the API double reporting the Node Ready, JOINED, validation, a fatal
XID, quarantine, release, retirement (drain, remove-node.yml, the Node deleted).

The Kubernetes API is testbed/kubeapi.py's DOUBLE (no kube-apiserver can run here), talked
to by the official client through the kubeconfig Kubespray's stand-in leaves in the job's
artifacts. On PostgreSQL two replicas serve one database, and the double's request log
shows that no change was made twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.kubeapi import KubeApiDouble
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory import sshhosts
from tests.inventory.conftest import Client, ServiceThread, enrol
from tests.inventory.test_join import FAST, STANDIN, finished

S = ipb.NodeState
NAME = "gpu-00001"
QUICK = {**FAST, "kube_reconcile_seconds": 0.2, "kube_drain_timeout_seconds": 5.0}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshhosts.SshHosts]:
    why = sshhosts.available()
    if why:
        pytest.fail(f"node life tests: {why}")
    h = sshhosts.SshHosts(tmp_path_factory.mktemp("ssh"), ["cp1", NAME]).start()
    yield h
    h.close()


@pytest.fixture
def kubeapi() -> Iterator[KubeApiDouble]:
    double = KubeApiDouble().start()
    yield double
    double.close()


def make_cluster(admin: Client, hosts: sshhosts.SshHosts, scratch: Path, conf: Path) -> None:
    kubespray_dir = scratch / "kubespray"
    shutil.copytree(STANDIN, kubespray_dir)
    cp = ipb.KubesprayHost(name="cp1", ip=hosts.addresses["cp1"])
    spec = ipb.Cluster(
        name="prod",
        kubespray_dir=str(kubespray_dir),
        control_plane=[cp],
        etcd=[cp],
        ssh_user="root",
        ssh_key_path=str(hosts.key),
        batch_size=1,
    )
    json_format.ParseDict(
        {
            "kube_pods_subnet": "10.244.0.0/16",
            "kube_service_addresses": "10.96.0.0/12",
            "standin_admin_conf": str(conf),
        },
        spec.group_vars,
    )
    admin.CreateCluster(spec)


def state(admin: Client, node_id: str) -> int:
    return int(admin.GetNode(ipb.GetNodeRequest(node_id=node_id)).state)


def test_a_node_lives_and_retires(
    database: str,
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    hosts.reset()
    svc = service_factory(database, **QUICK)
    replicas = [svc]
    if database.startswith("postgresql"):
        replicas.append(service_factory(database, **QUICK))
    admin = svc.admin()
    conf = scratch / "admin.conf"
    conf.write_text(kubeapi.kubeconfig())
    make_cluster(admin, hosts, scratch, conf)

    node = enrol(svc, admin, variant(dgx_inventory, 1))
    beat = node.client.Heartbeat
    beat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )
    admin.SetNodeAddress(ipb.NodeAddress(node_id=node.id, ip=hosts.addresses[NAME]))
    # the kubelet registers during kubeadm join, not Ready until its network plugin runs
    kubeapi.add_node(NAME, ip=hosts.addresses[NAME], ready=False)
    kubeapi.add_pod("web-0", NAME, labels={"app": "web"})
    kubeapi.add_pod("node-exporter", NAME, daemonset=True)

    job = admin.StartJoin(ipb.StartJoinRequest(cluster="prod"))
    done = finished(admin, job.id)
    assert done.state == ipb.JOB_SUCCEEDED, [n.message for n in done.nodes]
    cluster = admin.GetCluster(ipb.GetClusterRequest(name="prod"))
    assert cluster.kubeconfig_set and cluster.api_server == kubeapi.url
    assert cluster.kubeconfig_source == f"kubespray artifacts/admin.conf of job {job.id}"
    assert "token" not in json_format.MessageToJson(cluster)
    assert not (
        Path(svc.config.data_dir) / "jobs" / job.id / "inventory" / "artifacts" / "admin.conf"
    ).exists()
    # scale.yml succeeded, but the Node is not Ready: the node waits in JOINING
    assert state(admin, node.id) == S.JOINING

    kubeapi.set_ready(NAME)
    wait_for(lambda: state(admin, node.id) == S.JOINED, 20, "JOINED once the Node is Ready")
    shown = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert shown.kube.node_name == NAME and shown.kube.ready and not shown.kube.validated
    assert any(
        e.to_state == S.JOINED and e.reason.startswith(f"Node {NAME} is Ready: KubeletReady")
        for e in shown.events
    )

    def taints() -> list[dict[str, str]]:
        return list(kubeapi.nodes[NAME]["spec"].get("taints") or [])

    assert taints() == [{"key": "nodeagent.io/validating", "value": "true", "effect": "NoSchedule"}]
    beat(ipb.HeartbeatRequest(node_id=node.id, phase="JOINED", devices_ok=True, devices_set=True))
    wait_for(lambda: taints() == [], 20, "the validating taint removed")
    wait_for(
        lambda: admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.validated, 10, "validated"
    )

    # a replayed fatal XID: quarantined, cordoned, tainted with the reason
    beat(
        ipb.HeartbeatRequest(
            node_id=node.id, phase="JOINED", xids=[ipb.XidCount(gpu="3", code=79, count=1)]
        )
    )
    assert state(admin, node.id) == S.QUARANTINED
    reason = admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).state_reason
    assert reason == "xid: XID 79 (GPU has fallen off the bus) on GPU 3"
    slug = "xid-xid-79-gpu-has-fallen-off-the-bus-on-gpu-3"
    wanted = [{"key": "nodeagent.io/quarantined", "value": slug, "effect": "NoSchedule"}]
    wait_for(lambda: taints() == wanted, 20, "the quarantine taint")
    assert kubeapi.nodes[NAME]["spec"]["unschedulable"] is True

    # release: back to JOINED, uncordoned, the taint gone
    admin.ReleaseNode(ipb.NodeActionRequest(node_id=node.id, reason="GPU reseated"))
    assert state(admin, node.id) == S.JOINED
    wait_for(lambda: taints() == [], 20, "the quarantine taint removed")
    assert kubeapi.nodes[NAME]["spec"]["unschedulable"] is False

    # retire: drained, remove-node.yml, the Node deleted
    admin.RetireNode(ipb.NodeActionRequest(node_id=node.id, reason="decommissioned"))
    wait_for(lambda: NAME not in kubeapi.nodes, 90, "the Node deleted")
    assert [p["metadata"]["name"] for p in kubeapi.pods] == ["node-exporter"]
    assert f'"node": "{NAME}"' in hosts.record(NAME, "removed.json")
    assert hosts.record("cp1", "post-remove.log").strip() == f"delete {NAME}"
    jobs = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs
    remove = [j for j in jobs if j.kind == "remove"]
    assert len(remove) == 1 and remove[0].state == ipb.JOB_SUCCEEDED
    assert remove[0].nodes[0].state == ipb.JOB_NODE_REMOVED

    # no step twice, across replicas: each change is one request
    patches = [body["spec"] for _, _, body in kubeapi.writes("PATCH")]
    assert patches == [
        {"taints": []},
        {"unschedulable": True, "taints": wanted},
        {"unschedulable": False, "taints": []},
        {"unschedulable": True},
    ]
    assert len(kubeapi.writes("POST", "/eviction")) == 1
    assert len(kubeapi.writes("DELETE", "/nodes/")) == 1
    events = [
        e.reason for e in admin.GetNode(ipb.GetNodeRequest(node_id=node.id, events=200)).events
    ]
    assert sum(r.startswith(f"Node {NAME}: cordoned") for r in events) == 2
    assert sum(r == f"Node {NAME} deleted" for r in events) == 1
