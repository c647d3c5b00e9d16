"""Join jobs end to end: the inventory service runs `facts.yml` and `scale.yml --limit` through
ansible-runner over real SSH against hosts in network namespaces.

The Kubespray directory here is a STAND-IN (tests/inventory/kubespray_standin, see its
README): small real playbooks at Kubespray's paths that record on each host what they
were asked to do. No Kubernetes runs. What is real: the inventory the service writes,
ansible-core 2.18 and ansible-runner, SSH, the per-cluster lease, the lifecycle.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import clusters, config, joins
from nodeagent.inventory.store import Store
from testbed.cli import nodeagent as cli
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory import sshhosts
from tests.inventory.conftest import Client, ServiceThread
from tests.inventory.test_kubespray_export import credentials, ready_node
from tests.inventory.test_resilience import InventoryProcess

STANDIN = Path(__file__).resolve().parent / "kubespray_standin"
NODES = ["gpu-00001", "gpu-00002", "gpu-00003"]
FAST = {"join_poll_seconds": 0.2, "join_lease_seconds": 3.0}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshhosts.SshHosts]:
    why = sshhosts.available()
    if why:
        pytest.fail(f"join tests: {why}")
    h = sshhosts.SshHosts(tmp_path_factory.mktemp("ssh"), ["cp1", *NODES]).start()
    yield h
    h.close()


@pytest.fixture
def fresh(hosts: sshhosts.SshHosts) -> sshhosts.SshHosts:
    hosts.reset()
    return hosts


def make_cluster(
    admin: Client, hosts: sshhosts.SshHosts, scratch: Path, batch_size: int = 2
) -> Path:
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
        batch_size=batch_size,
    )
    json_format.ParseDict(
        {"kube_pods_subnet": "10.244.0.0/16", "kube_service_addresses": "10.96.0.0/12"},
        spec.group_vars,
    )
    admin.CreateCluster(spec)
    return kubespray_dir


def add_nodes(
    svc: ServiceThread | InventoryProcess,
    admin: Client,
    hosts: sshhosts.SshHosts,
    inv: pb.HardwareInventory,
    count: int,
) -> dict[str, str]:
    ids = {}
    for n in range(1, count + 1):
        name = f"gpu-{n:05d}"
        ids[name] = ready_node(svc, admin, variant(inv, n), "prod", hosts.addresses[name])  # type: ignore[arg-type]
    return ids


def finished(admin: Client, job_id: str, timeout: float = 120) -> ipb.Job:
    box: list[ipb.Job] = []

    def done() -> bool:
        box[:] = [admin.GetJob(ipb.GetJobRequest(id=job_id))]
        return box[0].state in joins.FINISHED

    wait_for(done, timeout, f"job {job_id} to finish")
    return box[0]


def events(admin: Client, job_id: str) -> list[ipb.JobEvent]:
    stream = admin.stub.WatchJob(ipb.WatchJobRequest(id=job_id), timeout=30)
    return list(stream)


def leftovers(marker: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(cmdline)
    return found


def test_join_in_batches_one_host_fails_then_retry(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}", **FAST)
    admin = svc.admin()
    make_cluster(admin, fresh, scratch, batch_size=2)
    ids = add_nodes(svc, admin, fresh, dgx_inventory, 3)
    (fresh.roots["gpu-00002"] / "fail-join").write_text("injected by the test")
    env = credentials(svc, scratch, "operator")

    run = cli("admin", "join", "start", "--cluster", "prod", env=env)
    assert run.returncode == 3, run.stdout + run.stderr  # ran, and a node failed
    out = run.stdout
    assert "job-started" in out and "scale.yml --limit=gpu-00001,gpu-00002" in out
    assert "scale.yml --limit=gpu-00003" in out
    assert "playbooks/facts.yml: Gather minimal facts" in out
    assert "batch 1: gpu-00001 JOINED" in out
    assert (
        "batch 1: gpu-00002 FAILED  kubeadm | Check the join: kubeadm join failed: "
        "injected by the test" in out
    )
    assert "batch 2: gpu-00003 JOINED" in out and "job-finished: 2/3 joined" in out

    job = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs[0]
    assert job.state == ipb.JOB_FAILED and job.batches == 2 and job.attempts == 1
    by_host = {n.hostname: n for n in job.nodes}
    assert by_host["gpu-00002"].state == ipb.JOB_NODE_FAILED
    assert by_host["gpu-00002"].failed_task == "kubeadm | Check the join"
    assert by_host["gpu-00002"].message == "kubeadm join failed: injected by the test"
    states = {name: admin.GetNode(ipb.GetNodeRequest(node_id=i)) for name, i in ids.items()}
    assert {n: ipb.NodeState.Name(s.state) for n, s in states.items()} == {
        "gpu-00001": "JOINED",
        "gpu-00002": "FAILED",
        "gpu-00003": "JOINED",
    }
    assert "kubeadm | Check the join" in states["gpu-00002"].state_reason
    transitions = [
        (ipb.NodeState.Name(e.from_state), ipb.NodeState.Name(e.to_state))
        for e in states["gpu-00001"].events
        if e.from_state != e.to_state
    ]
    assert transitions[-2:] == [("READY", "JOINING"), ("JOINING", "JOINED")]

    # what the stand-in playbooks were asked to do, on each host
    for name in ["cp1", *NODES]:
        assert f"facts {name}" in fresh.record(name, "facts.log"), f"facts ran on {name}"
    assert fresh.record("cp1", "joined.json") == "", "the control plane is not a worker"
    assert fresh.record("gpu-00002", "joined.json") == ""
    joined = json.loads(fresh.record("gpu-00001", "joined.json"))
    assert joined["node"] == "gpu-00001" and joined["ip"] == fresh.addresses["gpu-00001"]
    assert joined["node_taints"] == ["nodeagent.io/validating=true:NoSchedule"]
    assert joined["node_labels"]["gpu.nodeagent.io/count"] == "8"
    assert joined["node_labels"]["gpu.nodeagent.io/model"] == "NVIDIA-H100-80GB-HBM3"
    assert joined["control_plane"] == ["cp1"] and joined["kube_pods_subnet"] == "10.244.0.0/16"
    workdir = Path(svc.config.data_dir) / "jobs" / job.id
    written = (workdir / "inventory" / "hosts.yaml").read_text()
    assert "gpu-00003" in written and "node_taints" in written
    assert sorted(p.name for p in (workdir / "artifacts").iterdir()) == [
        "facts-a1",
        "scale-b1-a1",
        "scale-b2-a1",
    ]

    # retry: only the failed node, FAILED -> READY -> JOINING -> JOINED
    (fresh.roots["gpu-00002"] / "fail-join").unlink()
    again = cli("admin", "join", "retry", job.id, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    retried = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs[0]
    assert retried.retry_of == job.id and [n.hostname for n in retried.nodes] == ["gpu-00002"]
    assert retried.state == ipb.JOB_SUCCEEDED
    node = admin.GetNode(ipb.GetNodeRequest(node_id=ids["gpu-00002"]))
    assert node.state == ipb.JOINED
    assert json.loads(fresh.record("gpu-00002", "joined.json"))["node"] == "gpu-00002"
    shown = cli("admin", "join", "show", retried.id, env=env)
    assert "SUCCEEDED" in shown.stdout and "JOINED" in shown.stdout
    admin.close()


def test_cancel_stops_the_run(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}", **FAST)
    admin = svc.admin()
    make_cluster(admin, fresh, scratch, batch_size=1)
    ids = add_nodes(svc, admin, fresh, dgx_inventory, 2)
    (fresh.roots["gpu-00001"] / "slow-join").write_text("120")
    job = admin.StartJoin(ipb.StartJoinRequest(cluster="prod"))

    def joining() -> bool:
        return any("kubeadm | Join to cluster" in m for m in _messages(admin, job.id))

    wait_for(joining, 60, "the slow join to start")
    marker = str(Path(svc.config.data_dir) / "jobs" / job.id)
    assert leftovers(marker), "the playbook is running"
    started = time.monotonic()
    cancelled = admin.CancelJob(ipb.JobActionRequest(id=job.id, reason="change window closed"))
    assert cancelled.cancel_requested
    done = finished(admin, job.id, 30)
    assert time.monotonic() - started < 15, "cancel stops the playbook, it does not wait for it"
    assert done.state == ipb.JOB_CANCELLED
    by_host = {n.hostname: n for n in done.nodes}
    assert by_host["gpu-00001"].state == ipb.JOB_NODE_FAILED
    assert by_host["gpu-00002"].state == ipb.JOB_NODE_CANCELLED
    assert admin.GetNode(ipb.GetNodeRequest(node_id=ids["gpu-00001"])).state == ipb.FAILED
    assert admin.GetNode(ipb.GetNodeRequest(node_id=ids["gpu-00002"])).state == ipb.READY
    wait_for(lambda: not leftovers(marker), 10, "ansible processes to be gone")
    assert fresh.record("gpu-00001", "joined.json") == ""
    kinds = [e.kind for e in events(admin, job.id)]
    assert kinds.index("cancel-requested") < kinds.index("job-finished") == len(kinds) - 1
    admin.close()


def _messages(admin: Client, job_id: str) -> list[str]:
    stream = admin.stub.WatchJob(ipb.WatchJobRequest(id=job_id), timeout=1)
    out: list[str] = []
    try:
        for ev in stream:
            out.append(ev.message)
    except Exception:  # the deadline ends a stream of a running job
        pass
    return out


def test_inventory_killed_during_a_job_resumes_it(
    scratch: Path, fresh: sshhosts.SshHosts, dgx_inventory: pb.HardwareInventory
) -> None:
    inv = InventoryProcess(
        scratch / "svc",
        f"sqlite:///{scratch / 'inv.db'}",
        extra="join_poll_seconds = 0.2\njoin_lease_seconds = 2.0\n",
    )
    inv.start()
    try:
        stub = inv.admin()
        make_cluster(_Stub(stub), fresh, scratch, batch_size=1)  # type: ignore[arg-type]
        ids = add_nodes(_Process(inv), _Stub(stub), fresh, dgx_inventory, 2)  # type: ignore[arg-type]
        (fresh.roots["gpu-00001"] / "slow-join").write_text("120")
        job = stub.StartJoin(ipb.StartJoinRequest(cluster="prod"), timeout=10)
        wait_for(
            lambda: any("kubeadm | Join to cluster" in m for m in _messages(_Stub(stub), job.id)),
            60,
            "the slow join to start",
        )
        marker = str(scratch / "svc" / "data" / "jobs" / job.id)
        assert leftovers(marker)
        inv.kill(signal.SIGKILL)
        assert leftovers(marker), "the playbook outlives the killed service"
        (fresh.roots["gpu-00001"] / "slow-join").unlink()
        inv.start()
        stub = inv.admin()
        done = finished(_Stub(stub), job.id, 120)
        assert done.state == ipb.JOB_SUCCEEDED, done
        assert done.attempts == 2
        kinds = [e.kind for e in events(_Stub(stub), job.id)]
        assert "job-resumed" in kinds
        resumed = [e.message for e in events(_Stub(stub), job.id) if e.kind == "job-resumed"]
        assert any("killed playbook processes of a previous run" in m for m in resumed)
        for node_id in ids.values():
            node = stub.GetNode(ipb.GetNodeRequest(node_id=node_id), timeout=10)
            assert node.state == ipb.JOINED
        assert not leftovers(marker)
        artifacts = sorted(p.name for p in (Path(marker) / "artifacts").iterdir())
        assert artifacts == ["facts-a1", "facts-a2", "scale-b1-a1", "scale-b1-a2", "scale-b2-a2"]
    finally:
        inv.kill(signal.SIGTERM)


class _Process:
    """What `enrol` needs of a service, for one running as a process."""

    def __init__(self, inv: InventoryProcess) -> None:
        self.address, self.bootstrap, self.ca_pem = inv.address, inv.bootstrap, inv.ca().pem

    def bootstrap_client(self) -> Client:
        return Client(channels.secure_channel(self.bootstrap, self.ca_pem))


class _Stub:
    """A raw stub with Client's call shape (request, timeout)."""

    def __init__(self, stub: object) -> None:
        self.stub = stub

    def __getattr__(self, name: str) -> Callable[..., object]:
        method = getattr(self.stub, name)
        return lambda request, timeout=10: method(request, timeout=timeout)


def test_lease_one_job_per_cluster_across_replicas(
    database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    store = Store.open(database)
    try:
        store_run = _sync(store)
        cluster = ipb.Cluster(
            name="prod",
            kubespray_dir="/opt/kubespray",
            control_plane=[ipb.KubesprayHost(name="cp1")],
            etcd=[ipb.KubesprayHost(name="cp1")],
        )
        clusters.create_cluster(store, cluster)
        for n in range(3):
            _ready(store, f"node-{n}", f"gpu-{n}")
        only_first = ipb.StartJoinRequest(cluster="prod", node_ids=["node-0"])
        first = joins.create_job(store, only_first, "admin:a")
        second = joins.create_job(store, ipb.StartJoinRequest(cluster="prod"), "admin:a")
        assert [n.node_id for n in second.nodes] == ["node-1", "node-2"], "node-0 is busy"
        assert store_run(joins.claim_next, store, "replica-a", 60) == first.id
        assert store_run(joins.claim_next, store, "replica-b", 60) is None, "cluster leased"
        assert joins.renew(store, first.id, "replica-a", 60) is False
        # replica a dies: its lease runs out and replica b resumes the job
        with store.tx() as cur:
            cur.execute(store.q("UPDATE cluster_leases SET expires_at = 0"))
        assert store_run(joins.claim_next, store, "replica-b", 60) == first.id
        with pytest.raises(joins.LeaseLost):
            joins.renew(store, first.id, "replica-a", 60)
        with pytest.raises(joins.LeaseLost):
            joins.record_results(store, first.id, "replica-a", 1, [])
        job = joins.get_job(store, first.id)
        assert job.owner == "replica-b" and job.attempts == 2
        joins.finish(store, first.id, "replica-b", "", abort="test")
        assert store_run(joins.claim_next, store, "replica-a", 60) == second.id
        cancelled = joins.cancel(store, second.id, "admin:a", "")
        assert cancelled.cancel_requested and cancelled.state == ipb.JOB_RUNNING
    finally:
        store.close()


def _sync(store: Store) -> Callable[..., object]:
    return lambda fn, *args: fn(*args)


def _ready(store: Store, node_id: str, hostname: str) -> None:
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q(
                "INSERT INTO nodes (id, identity_key, hostname, state, cluster, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (node_id, node_id, hostname, ipb.READY, "prod", now, now),
        )


# --- job directories: private, free of the service's secrets, pruned after the retention
DAY = 86400
SECRET = f"s3cret-{uuid.uuid4().hex}"


def _files_with_secret(directory: Path) -> list[str]:
    return [
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink() and SECRET.encode() in p.read_bytes()
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _backdate(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def _ended_days_ago(store: Store, job_id: str, days: float) -> None:
    with store.tx() as cur:
        cur.execute(
            store.q("UPDATE join_jobs SET updated_at = ? WHERE id = ?"),
            (time.time() - days * DAY, job_id),
        )


def _prune(svc: ServiceThread) -> list[str]:
    """What the scheduler's periodic pruning removes, run now on the service's loop."""
    scheduler = svc.svc.joins
    assert scheduler is not None
    return list(asyncio.run_coroutine_threadsafe(scheduler.prune(), svc.loop).result(30))


def test_job_directories_private_secret_free_and_pruned(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NODEAGENT_DB_PASSWORD", SECRET)
    database = f"sqlite:///{scratch / 'inv.db'}"
    svc = service_factory(database, **FAST, join_job_retention_days=1.0)
    admin = svc.admin()
    make_cluster(admin, fresh, scratch, batch_size=1)
    ids = add_nodes(svc, admin, fresh, dgx_inventory, 2)
    jobs = Path(svc.config.data_dir) / "jobs"

    done = admin.StartJoin(ipb.StartJoinRequest(cluster="prod", node_ids=[ids["gpu-00001"]]))
    assert finished(admin, done.id).state == ipb.JOB_SUCCEEDED
    done_dir = jobs / done.id
    assert _mode(jobs) == 0o700 and _mode(done_dir) == 0o700
    # ansible-runner records the environment it was given: the service's secret is not in it
    command = json.loads((done_dir / "artifacts" / "scale-b1-a1" / "command").read_text())
    assert command["env"]["PATH"] and "NODEAGENT_DB_PASSWORD" not in command["env"]
    assert _files_with_secret(done_dir) == []

    (fresh.roots["gpu-00002"] / "slow-join").write_text("120")
    running = admin.StartJoin(ipb.StartJoinRequest(cluster="prod", node_ids=[ids["gpu-00002"]]))
    wait_for(
        lambda: any("kubeadm | Join to cluster" in m for m in _messages(admin, running.id)),
        60,
        "the slow join to start",
    )
    running_dir = jobs / running.id
    stray_old, stray_new = jobs / "left-by-an-old-database", jobs / "left-just-now"
    stray_old.mkdir()
    stray_new.mkdir()
    for path in (done_dir, running_dir, stray_old):
        _backdate(path, 2)

    # the retention counts from a job's end, not from its directory's age
    assert _prune(svc) == [stray_old.name]
    assert done_dir.is_dir() and running_dir.is_dir() and stray_new.is_dir()

    _ended_days_ago(svc.svc.store, done.id, 2)
    _ended_days_ago(svc.svc.store, running.id, 2)
    assert _prune(svc) == [done.id]
    assert not done_dir.exists(), "finished past the retention"
    assert running_dir.is_dir(), "a running job keeps its directory whatever its age"

    admin.CancelJob(ipb.JobActionRequest(id=running.id, reason="test over"))
    assert finished(admin, running.id, 30).state == ipb.JOB_CANCELLED
    assert _mode(running_dir) == 0o700 and _files_with_secret(running_dir) == []
    admin.close()

    # a restarted service prunes at once: what expired while it was down goes
    svc.stop()
    store = Store.open(database)
    try:
        _ended_days_ago(store, running.id, 2)
    finally:
        store.close()
    restarted = service_factory(database, **FAST, join_job_retention_days=1.0)
    wait_for(lambda: not running_dir.exists(), 10, "the pruning at start")
    assert stray_new.is_dir()
    restarted.stop()


def test_retention_setting_read_and_checked(scratch: Path) -> None:
    path = scratch / "inventory.toml"
    path.write_text("join_job_retention_days = 3\n")
    assert config.load(str(path)).join_job_retention_days == 3.0
    assert config.load(None).join_job_retention_days == 14.0
    path.write_text("join_job_retention_days = 0\n")
    with pytest.raises(config.ConfigError, match="'join_job_retention_days' must be more than 0"):
        config.load(str(path))
