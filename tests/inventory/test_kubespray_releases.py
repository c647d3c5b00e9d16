"""Each cluster's Kubespray runs with the Ansible its release requires.

The stand-in Kubespray (kubespray_standin, see its README) comes in two flavours laid over
the base tree: v2.28-like (declares ansible-core >= 2.16.4, < 2.17.0 in
playbooks/ansible_version.yml, requirements.txt pins the 2.16 core) and v2.31-like (the
2.18 series). facts.yml and scale.yml start with that version check, as Kubespray's do, so
a join with the wrong ansible-core fails its first play. Real ansible-core 2.16 and 2.18 are
installed by pip from the package index into per-cluster virtualenvs, in one directory for
the whole session (`envs_dir`): each is made once per session, pip's cache makes later
sessions quick. Joins run over real SSH against hosts in network namespaces.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import ansible_env
from nodeagent.inventory.config import InventoryConfig
from testbed.variants import variant
from tests.inventory import sshhosts
from tests.inventory.conftest import Client, ServiceThread
from tests.inventory.test_join import FAST, NODES, STANDIN, cli, events, finished, fresh, hosts
from tests.inventory.test_kubespray_export import credentials, ready_node

FLAVOURS = STANDIN / "flavours"
__all__ = ["fresh", "hosts"]  # the join tests' SSH hosts, one set for this module


@pytest.fixture(scope="session")
def envs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ansible environments shared by every test of the session."""
    return tmp_path_factory.mktemp("ansible-envs")


def tree(scratch: Path, flavour: str, name: str) -> Path:
    """A copy of the stand-in with `flavour`'s files over it ("" for the base alone)."""
    path = scratch / f"kubespray-{name}"
    shutil.copytree(STANDIN, path, ignore=shutil.ignore_patterns("flavours"))
    if flavour:
        shutil.copytree(FLAVOURS / flavour, path, dirs_exist_ok=True)
    return path


def spec(name: str, kubespray_dir: Path, hosts: sshhosts.SshHosts, venv: str = "") -> ipb.Cluster:
    cp = ipb.KubesprayHost(name="cp1", ip=hosts.addresses["cp1"])
    return ipb.Cluster(
        name=name,
        kubespray_dir=str(kubespray_dir),
        control_plane=[cp],
        etcd=[cp],
        ssh_user="root",
        ssh_key_path=str(hosts.key),
        batch_size=5,
        ansible_venv=venv,
    )


def service(
    factory: Callable[..., ServiceThread], scratch: Path, envs: Path
) -> tuple[ServiceThread, Client]:
    svc = factory(f"sqlite:///{scratch / 'inv.db'}", ansible_envs_dir=str(envs), **FAST)
    return svc, svc.admin()


def join(admin: Client, cluster: str) -> ipb.Job:
    job = admin.StartJoin(ipb.StartJoinRequest(cluster=cluster))
    return finished(admin, job.id, timeout=600)


def managed_env(envs: Path, kubespray_dir: Path) -> Path:
    path = ansible_env.Envs(InventoryConfig(ansible_envs_dir=str(envs))).managed_path(
        ansible_env.read_tree(str(kubespray_dir))
    )
    assert path is not None
    return path


def test_v228_and_v231_trees_join_each_with_their_own_ansible_core(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    envs_dir: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, envs_dir)
    made = {}
    for n, name, flavour in ((1, "k28", "v2.28"), (2, "k31", "v2.31")):
        created = admin.CreateCluster(spec(name, tree(scratch, flavour, name), fresh))
        made[name] = created
        ready_node(svc, admin, variant(dgx_inventory, n), name, fresh.addresses[NODES[n - 1]])
    assert made["k28"].kubespray_release == "v2.28.0"
    assert (made["k28"].ansible_min_version, made["k28"].ansible_max_version) == (
        "2.16.4",
        "2.17.0",
    )
    assert made["k31"].kubespray_release == "v2.31.0"
    assert (made["k31"].ansible_min_version, made["k31"].ansible_max_version) == (
        "2.18.0",
        "2.19.0",
    )

    started = time.monotonic()
    j28 = join(admin, "k28")
    j31 = join(admin, "k31")
    print(f"both joins, environments included: {time.monotonic() - started:.1f}s")

    assert j28.state == ipb.JOB_SUCCEEDED, j28.message
    assert j31.state == ipb.JOB_SUCCEEDED, j31.message
    assert j28.ansible_core_version.startswith("2.16."), j28.ansible_core_version
    assert j31.ansible_core_version.startswith("2.18."), j31.ansible_core_version
    assert Path(j28.ansible_env).parent == envs_dir and Path(j31.ansible_env).parent == envs_dir
    assert j28.ansible_env != j31.ansible_env
    # the version check really ran with that core: the playbook's own assert passed
    ev28 = [e.message for e in events(admin, j28.id)]
    assert "playbooks/facts.yml: Check 2.16.4 <= Ansible version < 2.17.0" in ev28
    assert any(
        m.startswith("Kubespray v2.28.0 (ansible-core >=2.16.4,<2.17.0) runs with ")
        and m.endswith(f": ansible-core {j28.ansible_core_version}")
        for m in ev28
    ), ev28
    assert '"node": "gpu-00001"' in fresh.record("gpu-00001", "joined.json")
    assert '"node": "gpu-00002"' in fresh.record("gpu-00002", "joined.json")
    # the cluster shows the environment its last job used
    k28 = admin.GetCluster(ipb.GetClusterRequest(name="k28"))
    assert (k28.ansible_env, k28.ansible_core_version) == (
        j28.ansible_env,
        j28.ansible_core_version,
    )

    # A second cluster on the v2.28 release shares the environment.
    ready_node(svc, admin, variant(dgx_inventory, 3), "k28b", fresh.addresses["gpu-00001"])
    admin.CreateCluster(spec("k28b", tree(scratch, "v2.28", "k28b"), fresh))
    again = join(admin, "k28b")
    assert again.state == ipb.JOB_SUCCEEDED and again.ansible_env == j28.ansible_env


def test_the_service_ansible_fails_the_v228_version_check(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    envs_dir: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    """Without a per-cluster environment (the service's own 2.18, named as the cluster's)
    the v2.28 tree is refused at create, naming the fix, and no job runs on it."""
    _, admin = service(service_factory, scratch, envs_dir)
    own = sys.prefix
    with pytest.raises(grpc.RpcError) as err:
        admin.CreateCluster(spec("k28", tree(scratch, "v2.28", "k28"), fresh, venv=own))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    text = err.value.details() or ""
    assert "Kubespray v2.28.0 requires ansible-core >=2.16.4,<2.17.0" in text
    assert f"environment {own} has 2.18." in text
    assert "clear the cluster's ansible_venv" in text
    assert admin.ListClusters(ipb.ListClustersRequest()).clusters == []


def test_requirements_pinning_the_wrong_core_end_the_job_before_any_playbook(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    envs_dir: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, envs_dir)
    path = tree(scratch, "v2.28", "k28")
    shutil.copy(FLAVOURS / "v2.31" / "requirements.txt", path / "requirements.txt")
    # An environment made from these requirements already (by an earlier test of the session)
    # is checked at once and the cluster refused; otherwise the first job makes it and ends
    # before any playbook. Either way nothing runs with the wrong Ansible.
    try:
        admin.CreateCluster(spec("k28", path, fresh))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = exc.details() or ""
    else:
        ready_node(svc, admin, variant(dgx_inventory, 1), "k28", fresh.addresses["gpu-00001"])
        job = join(admin, "k28")
        assert job.state == ipb.JOB_FAILED
        message = job.message
    assert "Kubespray v2.28.0 requires ansible-core >=2.16.4,<2.17.0" in message
    assert f"make {path}/requirements.txt pin an ansible-core in that range" in message
    assert fresh.record("cp1", "facts.log") == "", "no playbook ran"


def test_cli_create_with_ansible_venv_shows_release_and_range(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    envs_dir: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, envs_dir)
    # the v2.28 environment, made by a first join (the session's, when it ran already)
    admin.CreateCluster(spec("k28", tree(scratch, "v2.28", "k28"), fresh))
    ready_node(svc, admin, variant(dgx_inventory, 1), "k28", fresh.addresses["gpu-00001"])
    env28 = join(admin, "k28").ansible_env
    env = credentials(svc, scratch, "admin")
    path = tree(scratch, "v2.28", "other")
    run = cli(
        "admin",
        "clusters",
        "create",
        "other",
        "--kubespray-dir",
        str(path),
        "--control-plane",
        f"cp1={fresh.addresses['cp1']}",
        "--ansible-venv",
        env28,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "v2.28.0" in run.stdout and ">=2.16.4,<2.17.0; core 2.16." in run.stdout
    show = cli("admin", "clusters", "show", "other", env=env)
    assert f"ansible_venv: {env28}" in show.stdout and "kubespray_release: v2.28.0" in show.stdout
    refused = cli(
        "admin",
        "clusters",
        "update",
        "other",
        "--kubespray-dir",
        str(tree(scratch, "v2.31", "o")),
        env=env,
    )
    assert refused.returncode != 0
    assert "Kubespray v2.31.0 requires ansible-core >=2.18.0,<2.19.0" in refused.stderr


# --- bad input -----------------------------------------------------------------------------


def test_tree_without_ansible_version_yml_warns_and_uses_the_configured_environment(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    envs_dir: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, envs_dir)
    path = tree(scratch, "v2.28", "old")  # requirements.txt present, but no declared range
    (path / "playbooks" / "ansible_version.yml").unlink()
    for playbook in (path / "scale.yml", path / "playbooks" / "facts.yml"):
        lines = playbook.read_text().splitlines()
        at = next(i for i, ln in enumerate(lines) if "import_playbook" in ln)
        playbook.write_text("\n".join(lines[: at - 1] + lines[at + 1 :]) + "\n")
    created = admin.CreateCluster(spec("old", path, fresh))
    assert (created.ansible_min_version, created.ansible_env) == ("", sys.prefix)
    ready_node(svc, admin, variant(dgx_inventory, 1), "old", fresh.addresses["gpu-00001"])
    job = join(admin, "old")
    assert job.state == ipb.JOB_SUCCEEDED, job.message
    assert (job.ansible_env, job.ansible_core_version) == (sys.prefix, created.ansible_core_version)
    warned = [e.message for e in events(admin, job.id) if e.kind == "warning"]
    assert warned == [
        f"{path} has no playbooks/ansible_version.yml: the Ansible it needs is unknown; "
        "using the configured environment"
    ]


def test_requirements_pip_cannot_satisfy_mark_the_cluster_unusable(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, scratch / "envs")
    path = tree(scratch, "v2.28", "bad")
    (path / "requirements.txt").write_text("ansible-core==2.16.999999\n")
    admin.CreateCluster(spec("bad", path, fresh))
    ready_node(svc, admin, variant(dgx_inventory, 1), "bad", fresh.addresses["gpu-00001"])
    job = join(admin, "bad")
    assert job.state == ipb.JOB_FAILED and job.ansible_core_version == ""
    assert job.message.startswith(f"0/1 joined; Ansible environment: pip install -r {path}/")
    assert "ansible-core==2.16.999999" in job.message  # pip's own error
    assert fresh.record("cp1", "facts.log") == "", "no playbook ran"
    assert list((scratch / "envs").glob("*/bin")) == [], "no half-made environment left"
    cluster = admin.GetCluster(ipb.GetClusterRequest(name="bad"))
    assert "ansible-core==2.16.999999" in cluster.ansible_env_error
    with pytest.raises(grpc.RpcError) as err:
        admin.StartJoin(ipb.StartJoinRequest(cluster="bad"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cluster 'bad' has no usable Ansible environment: pip install" in str(
        err.value.details()
    )
    assert "then `nodeagent admin clusters update bad` to try again" in str(err.value.details())
    # fixed and updated: usable again
    shutil.copy(FLAVOURS / "v2.28" / "requirements.txt", path / "requirements.txt")
    admin.UpdateCluster(
        ipb.UpdateClusterRequest(cluster=ipb.Cluster(name="bad"), fields=["ssh_user"])
    )
    assert admin.GetCluster(ipb.GetClusterRequest(name="bad")).ansible_env_error == ""


def test_environment_deleted_behind_the_service_is_made_again(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, scratch / "envs")
    admin.CreateCluster(spec("k31", tree(scratch, "v2.31", "k31"), fresh))
    ready_node(svc, admin, variant(dgx_inventory, 1), "k31", fresh.addresses["gpu-00001"])
    first = join(admin, "k31")
    assert first.state == ipb.JOB_SUCCEEDED, first.message
    shutil.rmtree(first.ansible_env)
    ready_node(svc, admin, variant(dgx_inventory, 2), "k31", fresh.addresses["gpu-00002"])
    second = join(admin, "k31")
    assert second.state == ipb.JOB_SUCCEEDED, second.message
    assert second.ansible_env == first.ansible_env
    assert (Path(second.ansible_env) / "bin" / "ansible-playbook").exists()


def test_named_environment_deleted_is_a_clear_error(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    fresh: sshhosts.SshHosts,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc, admin = service(service_factory, scratch, scratch / "envs")
    link = scratch / "venv"
    link.symlink_to(sys.prefix)
    admin.CreateCluster(spec("k31", tree(scratch, "", "k31"), fresh, venv=str(link)))
    link.unlink()
    ready_node(svc, admin, variant(dgx_inventory, 1), "k31", fresh.addresses["gpu-00001"])
    job = join(admin, "k31")
    assert job.state == ipb.JOB_FAILED
    assert job.message == (
        f"0/1 joined; Ansible environment: Ansible environment {link} has no bin/python, "
        "bin/ansible-playbook, bin/ansible-runner"
    )
    assert fresh.record("cp1", "facts.log") == ""
