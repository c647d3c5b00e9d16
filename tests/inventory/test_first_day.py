"""First-day paper cuts of the inventory service (issue 14), each against the real service:
a taken port, the database's mode, tokens and assignments that name
profiles, TTLs, and a second enrolment of the same hardware."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nodeagent import tlsutil
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.tuning import profiles
from testbed.cli import nodeagent as cli
from testbed.inventory_process import InventoryProcess
from testbed.variants import variant
from tests.inventory.conftest import Client, ServiceThread

S = ipb.NodeState


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    """`nodeagent inventory serve` that is expected to stop by itself (it refuses to start)."""
    return subprocess.run(
        [sys.executable, "-m", "nodeagent.cli.main", "inventory", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def register(
    svc: ServiceThread, token: str, hw: pb.HardwareInventory, key: bytes | None = None
) -> tuple[ipb.RegisterResponse, bytes]:
    """Register with a given key (None: a new one), as an agent that kept its key does."""
    private = tlsutil.new_key() if key is None else _load_key(key)
    boot = svc.bootstrap_client()
    try:
        resp = boot.Register(
            ipb.RegisterRequest(
                token=token, inventory=hw, csr_pem=tlsutil.make_csr(private, "n").decode()
            )
        )
    finally:
        boot.close()
    return resp, tlsutil.key_pem(private)


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def events(admin: Client, node_id: str) -> list[str]:
    node = admin.GetNode(ipb.GetNodeRequest(node_id=node_id, events=100))
    return [e.reason for e in node.events]


@pytest.fixture
def sqlite(scratch: Path) -> str:
    return f"sqlite:///{scratch / 'inventory.db'}"


@pytest.fixture
def running(scratch: Path) -> Iterator[InventoryProcess]:
    inv = InventoryProcess(scratch / "first", f"sqlite:///{scratch / 'first.db'}").start()
    yield inv
    inv.kill()


# --- 1. a second service on a taken port --------------------------------------------------


@pytest.mark.parametrize("which", ["listen", "bootstrap_listen"])
def test_a_second_inventory_on_a_taken_port_exits_with_one_line(
    running: InventoryProcess, scratch: Path, which: str
) -> None:
    taken = running.address if which == "listen" else running.bootstrap
    other = InventoryProcess(scratch / "second", f"sqlite:///{scratch / 'second.db'}")
    text = other.config.read_text()
    mine = other.address if which == "listen" else other.bootstrap
    other.config.write_text(text.replace(f'"{mine}"', f'"{taken}"'))
    proc = serve(other.config)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nodeagent: error: cannot listen on ")
    assert taken in lines[0] and f"'{which}'" in lines[0] and "in use" in lines[0]
    # refused before it made a CA or a database of its own
    assert not (scratch / "second" / "data").exists() and not (scratch / "second.db").exists()
    # and the first one still answers alone
    assert running.admin().ListNodes(ipb.ListNodesRequest(), timeout=10).total == 0


# --- 3. the database is private whatever the umask -----------------------------------------


def test_sqlite_database_and_data_dir_are_private_under_umask_022(scratch: Path) -> None:
    data = scratch / "inv" / "data"
    data.mkdir(parents=True, mode=0o755)
    data.chmod(0o755)  # as an earlier start under a loose umask left it
    old = os.umask(0o022)
    try:
        inv = InventoryProcess(scratch / "inv", f"sqlite:///{data / 'inventory.db'}").start()
    finally:
        os.umask(old)
    try:
        inv.admin().CreateToken(ipb.CreateTokenRequest(), timeout=10)  # a write: WAL in use
        assert data.stat().st_mode & 0o777 == 0o700
        for name in ("inventory.db", "inventory.db-wal", "inventory.db-shm"):
            assert (data / name).exists(), name
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        inv.kill()


# --- 4. profiles, TTLs, re-enrolment ---------------------------------------------------------


def test_unknown_profiles_are_refused_and_site_profiles_count(
    service_factory: Callable[..., ServiceThread],
    sqlite: str,
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    site = scratch / "site-profiles"
    site.mkdir()
    shipped = (profiles.profile_dirs()[-1] / "cpu-node.yaml").read_text()
    (site / "site-cpu.yaml").write_text(shipped.replace("name: cpu-node", "name: site-cpu", 1))
    svc = service_factory(sqlite, profiles_dir=str(site))
    admin = svc.admin()
    err = refused(
        lambda: admin.CreateToken(ipb.CreateTokenRequest(preset=ipb.Assignment(profile="hgx-h1OO")))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown profile 'hgx-h1OO'" in err.details()
    assert "hgx-h100" in err.details() and "site-cpu" in err.details(), "the known ones listed"
    assert not admin.ListTokens(ipb.ListTokensRequest()).tokens, "nothing was created"
    token = admin.CreateToken(ipb.CreateTokenRequest(preset=ipb.Assignment(profile="site-cpu")))
    assert token.token.preset.profile == "site-cpu"
    node_id = register(svc, token.secret, variant(dgx_inventory, 1))[0].node_id
    err = refused(
        lambda: admin.UpdateAssignment(
            ipb.UpdateAssignmentRequest(
                node_id=node_id, assignment=ipb.Assignment(profile="nope"), fields=["profile"]
            )
        )
    )
    assert (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown profile 'nope'" in err.details()
    )
    node = admin.GetNode(ipb.GetNodeRequest(node_id=node_id))
    assert node.assignment.profile == "site-cpu", "the refused update changed nothing"
    # a field the update leaves alone is not checked
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node_id, assignment=ipb.Assignment(pool="p", profile="nope"), fields=["pool"]
        )
    )


def test_a_profile_that_does_not_fit_is_a_warning_event(
    service_factory: Callable[..., ServiceThread],
    sqlite: str,
    fleet_inventories: dict[str, pb.HardwareInventory],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "nodeagent.inventory")
    svc = service_factory(sqlite)
    admin = svc.admin()
    cpu = variant(fleet_inventories["cpu-node"], 2)
    token = admin.CreateToken(ipb.CreateTokenRequest(preset=ipb.Assignment(profile="hgx-h100")))
    resp, _ = register(svc, token.secret, cpu)
    assert resp.desired.profile == "hgx-h100", "a warning, not a refusal"
    log = events(admin, resp.node_id)
    assert "profile hgx-h100 expects 8 GPUs; this node has 0" in log
    assert "profile hgx-h100 expects 10 NVMe drives; this node has 2" in log
    # on assignment too: a profile that fits adds no warning, one that does not adds one
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=resp.node_id, assignment=ipb.Assignment(profile="cpu-node"), fields=["profile"]
        )
    )
    assert not [e for e in events(admin, resp.node_id)[len(log) :] if "profile cpu-node" in e]
    node = admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=resp.node_id,
            assignment=ipb.Assignment(profile="rtx-pro-6000"),
            fields=["profile"],
        )
    )
    assert node.assignment.profile == "rtx-pro-6000"
    assert "profile rtx-pro-6000 expects 8 GPUs; this node has 0" in events(admin, resp.node_id)
    logged = [r.getMessage() for r in caplog.records if r.name == "nodeagent.inventory"]
    assert f"node {resp.node_id}: profile hgx-h100 expects 8 GPUs; this node has 0" in logged
    assert f"node {resp.node_id}: profile rtx-pro-6000 expects 8 GPUs; this node has 0" in logged


def test_token_ttl_and_uses_are_checked(
    service_factory: Callable[..., ServiceThread], sqlite: str, scratch: Path
) -> None:
    svc = service_factory(sqlite)
    admin = svc.admin()
    # no TTL on the wire (proto3: 0 is "not given") is the documented default of one day
    before = time.time()
    token = admin.CreateToken(ipb.CreateTokenRequest()).token
    assert abs(token.expires_at.seconds - before - 86400) < 60 and token.max_uses == 1
    creds = scratch / "creds"
    creds.mkdir()
    cert, key = svc.svc.ca.issue_client("alice", "admin")
    (creds / "admin.crt").write_bytes(cert)
    tlsutil.write_private(creds / "admin.key", key)
    (creds / "ca.crt").write_bytes(svc.ca_pem)
    env = {
        "NODEAGENT_INVENTORY": svc.address,
        "NODEAGENT_ADMIN_CERT": str(creds / "admin.crt"),
        "NODEAGENT_ADMIN_KEY": str(creds / "admin.key"),
        "NODEAGENT_ADMIN_CA": str(creds / "ca.crt"),
    }
    for flags, said in (
        (["--ttl", "0"], "--ttl must be a number of seconds from 1 to 4294967295, got 0"),
        (["--ttl", "-5"], "--ttl must be a number of seconds from 1 to 4294967295, got -5"),
        (
            ["--ttl", str(2**32)],
            f"--ttl must be a number of seconds from 1 to 4294967295, got {2**32}",
        ),
        (["--max-uses", "0"], "--max-uses must be a number of uses from 1 to 4294967295, got 0"),
        (["--max-uses", "-1"], "--max-uses must be a number of uses from 1 to 4294967295, got -1"),
    ):
        proc = cli("admin", "tokens", "create", *flags, env=env)
        assert proc.returncode == 1, flags
        assert proc.stderr.strip() == f"nodeagent: error: {said}", proc.stderr
    assert len(admin.ListTokens(ipb.ListTokensRequest()).tokens) == 1, "none was created"
    made = cli("admin", "tokens", "create", "--ttl", "60", env=env)
    assert made.returncode == 0, made.stderr
    tokens = admin.ListTokens(ipb.ListTokensRequest()).tokens
    assert len(tokens) == 2 and tokens[1].expires_at.seconds - tokens[1].created_at.seconds == 60


def test_a_second_enrolment_applies_a_plain_tokens_preset(
    service_factory: Callable[..., ServiceThread],
    sqlite: str,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(sqlite)
    admin = svc.admin()
    hw = variant(dgx_inventory, 3)
    first = admin.CreateToken(
        ipb.CreateTokenRequest(preset=ipb.Assignment(pool="inference", role="worker"))
    )
    resp, key = register(svc, first.secret, hw)
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=resp.node_id,
            assignment=ipb.Assignment(labels={"rack": "r12"}),
            fields=["labels"],
        )
    )
    # the same machine with proof of its key and a token made for a training pool
    second = admin.CreateToken(
        ipb.CreateTokenRequest(preset=ipb.Assignment(pool="training", profile="hgx-h100"))
    )
    again, _ = register(svc, second.secret, hw, key=key)
    assert again.node_id == resp.node_id
    assert again.desired.pool == "training" and again.desired.profile == "hgx-h100"
    node = admin.GetNode(ipb.GetNodeRequest(node_id=resp.node_id))
    a = node.assignment
    assert (a.pool, a.profile, a.role, dict(a.labels)) == (
        "training",
        "hgx-h100",
        "worker",
        {"rack": "r12"},
    ), "the preset's fields are set, the others stay"
    said = [e.reason for e in node.events if e.reason.startswith("re-registered")]
    assert said == [
        f"re-registered (same hardware, same node id); token {second.token.id}'s preset "
        "applied: pool=training, profile=hgx-h100"
    ]
    # and the token was spent
    used = {t.id: t.uses for t in admin.ListTokens(ipb.ListTokensRequest()).tokens}
    assert used[second.token.id] == 1


def test_a_reenrol_token_keeps_the_assignment(
    service_factory: Callable[..., ServiceThread],
    sqlite: str,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(sqlite)
    admin = svc.admin()
    hw = variant(dgx_inventory, 4)
    first = admin.CreateToken(
        ipb.CreateTokenRequest(preset=ipb.Assignment(pool="training", profile="hgx-h100"))
    )
    resp, _ = register(svc, first.secret, hw)
    reenrol = admin.CreateToken(ipb.CreateTokenRequest(reenrol_node=resp.node_id))
    again, _ = register(svc, reenrol.secret, hw)  # a reinstall: a new key
    assert again.node_id == resp.node_id
    assert (again.desired.pool, again.desired.profile) == ("training", "hgx-h100")
    said = [e for e in events(admin, resp.node_id) if e.startswith("re-registered")]
    assert said == [
        f"re-registered (re-enrol token {reenrol.token.id}, earlier certificates revoked); "
        f"assignment kept (token {reenrol.token.id} carries no preset)"
    ]


def test_profile_files_are_reread_when_they_change(
    service_factory: Callable[..., ServiceThread], sqlite: str, scratch: Path
) -> None:
    site = scratch / "site"
    site.mkdir()
    svc = service_factory(sqlite, profiles_dir=str(site))
    admin = svc.admin()
    request = ipb.CreateTokenRequest(preset=ipb.Assignment(profile="late"))
    assert refused(lambda: admin.CreateToken(request)).code() == grpc.StatusCode.INVALID_ARGUMENT
    shipped = (profiles.profile_dirs()[-1] / "cpu-node.yaml").read_text()
    (site / "late.yaml").write_text(shipped.replace("name: cpu-node", "name: late", 1))
    time.sleep(1.1)  # the catalogue looks at the files at most once a second
    assert admin.CreateToken(request).token.preset.profile == "late"
    shutil.rmtree(site)
