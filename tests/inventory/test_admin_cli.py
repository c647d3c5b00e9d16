"""The admin command line against a real service: tokens, nodes, output formats, errors."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.cli import inventory_cmd
from nodeagent.cli.main import main
from nodeagent.inventory import pki
from testbed.cli import nodeagent as run
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, enrol, register


def test_admin_cli(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'cli.db'}")
    config = scratch / "inventory.toml"
    config.write_text(f'data_dir = "{svc.config.data_dir}"\n')
    assert run("inventory", "ca-hash", "--config", str(config)).stdout.strip() == svc.svc.ca.pin
    out = scratch / "creds"
    made = run(
        "inventory",
        "issue-admin-cert",
        "--config",
        str(config),
        "--role",
        "admin",
        "--name",
        "alice",
        "--dir",
        str(out),
    )
    assert made.returncode == 0, made.stderr
    assert os.stat(out / "admin.key").st_mode & 0o777 == 0o600
    env = {
        "NODEAGENT_INVENTORY": svc.address,
        "NODEAGENT_ADMIN_CERT": str(out / "admin.crt"),
        "NODEAGENT_ADMIN_KEY": str(out / "admin.key"),
        "NODEAGENT_ADMIN_CA": str(out / "ca.crt"),
    }

    created = run("admin", "tokens", "create", "--pool", "training", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert len(secret) == 39 and "." in secret
    node_id = register(svc, secret, variant(dgx_inventory, 1))[0].node_id

    listed = run("admin", "nodes", "list", env=env)
    assert (
        node_id in listed.stdout and "DISCOVERED" in listed.stdout and "training" in listed.stdout
    )
    as_json = json.loads(run("admin", "-o", "json", "nodes", "list", env=env).stdout)
    assert as_json["nodes"][0]["id"] == node_id
    assert "nodes:" in run("admin", "-o", "yaml", "nodes", "list", env=env).stdout
    shown = run("admin", "nodes", "show", node_id, env=env)
    assert "registered with a bootstrap token" in shown.stdout and "8x NVIDIA H100" in shown.stdout
    updated = run(
        "admin", "nodes", "update", node_id, "--cluster", "prod-a", "--label", "rack=r12", env=env
    )
    assert updated.returncode == 0 and "prod-a" in updated.stdout
    held = run("admin", "nodes", "hold", node_id, "--reason", "PSU", env=env)
    assert "MAINTENANCE" in held.stdout
    tokens = run("admin", "tokens", "list", env=env)
    assert "1/1" in tokens.stdout
    # errors: one line, exit 1
    again = run("admin", "nodes", "hold", node_id, env=env)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        "nodeagent: error: HoldNode: FAILED_PRECONDITION: cannot hold a node that is MAINTENANCE"
    ]
    missing = run("admin", "nodes", "show", "nope", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "nodeagent: error: no node has the id, id prefix or hostname 'nope'"
    ]
    unknown_id = run("admin", "nodes", "show", "00000000-0000-4000-8000-000000000000", env=env)
    assert unknown_id.returncode == 1 and "NOT_FOUND" in unknown_id.stderr
    viewer_dir = scratch / "viewer"
    run(
        "inventory",
        "issue-admin-cert",
        "--config",
        str(config),
        "--role",
        "viewer",
        "--name",
        "vic",
        "--dir",
        str(viewer_dir),
    )
    denied = run(
        "admin",
        "--cert",
        str(viewer_dir / "admin.crt"),
        "--key",
        str(viewer_dir / "admin.key"),
        "nodes",
        "delete",
        node_id,
        env=env,
    )
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
    assert ipb.NodeState.Name(ipb.MAINTENANCE) in run("admin", "nodes", "list", env=env).stdout


# --- the paper cuts of issue 14 -----------------------------------------------------------

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


def _env(svc: ServiceThread, scratch: Path, role: str = "admin") -> dict[str, str]:
    """Credentials of `role` for the CLI, made by the service's own CA."""
    out = scratch / f"creds-{role}"
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


def _rows(text: str) -> list[dict[str, str]]:
    """A table the CLI printed, as one dict per row: cells start where their header starts
    (headers may hold one space, columns are apart by two or more)."""
    header, *lines = [line for line in text.splitlines() if line.strip()]
    spans = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for start, _ in spans[1:]] + [None]
    return [
        {name: line[start:end].strip() for (start, name), end in zip(spans, ends, strict=True)}
        for line in lines
    ]


def _event_table(shown: str) -> list[dict[str, str]]:
    """The event log at the end of `nodes show`: from its header on."""
    return _rows(shown[shown.index("TIME ") :])


def test_ca_commands_read_the_default_config(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --config, ca-hash and issue-admin-cert read the default inventory.toml, as
    the service does: here its data_dir is the only place the CA is."""
    data = scratch / "inv"
    data.mkdir()
    ca = pki.CertificateAuthority.load_or_create(data / "ca.crt", data / "ca.key")
    config = scratch / "inventory.toml"
    config.write_text(f'data_dir = "{data}"\n')
    monkeypatch.setattr(inventory_cmd, "DEFAULT_CONFIG", str(config))
    assert main(["inventory", "ca-hash"]) == 0
    assert capsys.readouterr().out.strip() == ca.pin
    out = scratch / "alice"
    assert (
        main(["inventory", "issue-admin-cert", "--role", "admin", "--name", "a", "-d", str(out)])
        == 0
    )
    capsys.readouterr()
    assert (out / "ca.crt").read_bytes() == ca.pem
    assert (data / "inventory.db").exists(), "recorded in the default config's database"


def test_ca_command_errors_say_which_config(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = scratch / "inventory.toml"
    config.write_text(f'data_dir = "{scratch / "empty"}"\n')
    assert main(["inventory", "ca-hash", "--config", str(config)]) == 1
    given = capsys.readouterr().err.strip()
    assert given.startswith(f"nodeagent: error: no CA at {scratch / 'empty' / 'ca.crt'}")
    assert f"(settings from --config {config};" in given
    monkeypatch.setattr(inventory_cmd, "DEFAULT_CONFIG", str(config))
    assert main(["inventory", "ca-hash"]) == 1
    assert f"(settings from {config}, the default --config;" in capsys.readouterr().err
    absent = scratch / "absent.toml"
    monkeypatch.setattr(inventory_cmd, "DEFAULT_CONFIG", str(absent))
    config.write_text("listen = 7\n")  # a bad file named with --config
    assert main(["inventory", "ca-hash", "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"(from --config {config})")
    if not Path("/var/lib/nodeagent-inventory/ca.crt").exists():  # the built-in data_dir
        assert main(["inventory", "ca-hash"]) == 1
        err = capsys.readouterr().err
        assert f"the built-in defaults: no {absent}; give --config FILE" in err


def test_nodes_are_named_by_hostname_or_id_prefix(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'names.db'}")
    admin = svc.admin()
    first, second = (enrol(svc, admin, variant(dgx_inventory, n)) for n in (1, 2))
    env = _env(svc, scratch)
    by_name = run("admin", "nodes", "show", "gpu-00002", env=env)
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.startswith(f"node      {second.id}\n")
    prefix = first.id[:8]
    held = run("admin", "nodes", "hold", prefix, "--reason", "PSU", env=env)
    assert held.returncode == 0, held.stderr
    assert _rows(held.stdout)[0]["ID"] == first.id
    address = run("admin", "node-address", "gpu-00002", "--ip", "10.0.1.2", env=env)
    assert address.returncode == 0 and _rows(address.stdout)[0]["NODE"] == second.id
    labels = run("admin", "nodes", "labels", "GPU-00001", "-o", "json", env=env)
    assert json.loads(labels.stdout)["gpu.nodeagent.io/count"] == "8", labels.stderr
    certs = json.loads(
        run("admin", "certs", "list", "--node", "gpu-00001", "-o", "json", env=env).stdout
    )
    assert {c["subject"] for c in certs["certificates"]} == {first.id}
    # a third machine that calls itself gpu-00001: the name no longer names one node
    twin = variant(dgx_inventory, 3)
    twin.system.hostname = "gpu-00001"
    third = enrol(svc, admin, twin)
    both = run("admin", "nodes", "show", "gpu-00001", env=env)
    assert both.returncode == 1 and both.stdout == ""
    (line,) = both.stderr.strip().splitlines()
    assert line.startswith("nodeagent: error: 'gpu-00001' names 2 nodes: ")
    assert first.id in line and third.id in line and line.endswith("; give more of the id")
    none = run("admin", "nodes", "release", "gpu-9", env=env)
    assert none.returncode == 1
    assert (
        none.stderr.strip() == "nodeagent: error: no node has the id, id prefix or hostname 'gpu-9'"
    )
    for node in (first, second, third):
        node.client.close()
    admin.close()


def test_node_rows_say_what_is_known_and_why(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'why.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    env = {**_env(svc, scratch), "COLUMNS": "200"}
    blocking = [
        "kubelet-port: port 10250 is in use by nginx (pid 812) " + "x" * 150 + " (fix: stop it)",
        "swap: 8 GiB of swap is on (fix: swapoff -a and remove it from /etc/fstab)",
    ]
    node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, blocking=blocking, blocking_set=True)
    )
    listed = run("admin", "nodes", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = _rows(listed.stdout)
    assert row["STATE"] == "DISCOVERED" and row["REACHABLE"] == "yes"
    assert row["REASON"].startswith("kubelet-port: port 10250 is in use by nginx (pid 812) xxx")
    assert row["REASON"].endswith("...") and len(row["REASON"]) >= 20
    assert all(len(line) <= 200 for line in listed.stdout.splitlines())
    shown = run("admin", "nodes", "show", "gpu-00001", env=env).stdout
    blocked = shown[shown.index("blocked by:\n") :].splitlines()[1:3]
    assert blocked == [f"  - {b}" for b in blocking]
    # a reply that carries no liveness says nothing of it, not NO; the hold's reason wins
    held = run("admin", "nodes", "hold", node.id, "--reason", "PSU swap", env=env)
    (row,) = _rows(held.stdout)
    assert (row["STATE"], row["REACHABLE"], row["REASON"]) == ("MAINTENANCE", "-", "PSU swap")
    released = run("admin", "nodes", "release", node.id, env=env)
    (row,) = _rows(released.stdout)
    assert row["REACHABLE"] == "-" and row["REASON"].startswith("kubelet-port: ")
    updated = run("admin", "nodes", "update", node.id, "--pool", "p", env=env)
    assert _rows(updated.stdout)[0]["REACHABLE"] == "-"
    assert _rows(run("admin", "nodes", "list", env=env).stdout)[0]["REACHABLE"] == "yes"
    node.client.close()
    admin.close()


def test_output_is_a_format_after_any_subcommand(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'out.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    env = _env(svc, scratch)
    # the README's own example
    labels = run("admin", "nodes", "labels", node.id, "-o", "json", env=env)
    assert labels.returncode == 0, labels.stderr
    flat = json.loads(labels.stdout)
    assert flat["gpu.nodeagent.io/count"] == "8"
    as_yaml = run("admin", "nodes", "labels", node.id, "--output", "yaml", env=env).stdout
    assert yaml.safe_load(as_yaml) == flat
    table = _rows(run("admin", "nodes", "labels", node.id, env=env).stdout)
    assert {r["KEY"]: r["VALUE"] for r in table} == flat
    after = json.loads(run("admin", "nodes", "list", "-o", "json", env=env).stdout)
    before = json.loads(run("admin", "-o", "json", "nodes", "list", env=env).stdout)
    assert after["nodes"][0]["id"] == before["nodes"][0]["id"] == node.id
    leaf_wins = run("admin", "-o", "json", "nodes", "list", "-o", "yaml", env=env).stdout
    assert yaml.safe_load(leaf_wins)["nodes"][0]["id"] == node.id
    assert not leaf_wins.lstrip().startswith("{")
    tokens = run("admin", "tokens", "list", "-o", "yaml", env=env)
    assert yaml.safe_load(tokens.stdout)["tokens"][0]["max_uses"] == 1
    # a file after -o is a usage error naming the formats
    old = run("admin", "export", "kubespray", "--cluster", "c", "-o", "hosts.yaml", env=env)
    assert old.returncode == 2 and "invalid choice: 'hosts.yaml'" in old.stderr
    node.client.close()
    admin.close()


def test_times_events_and_tokens_read_for_people(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'times.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    env = _env(svc, scratch)
    shown = run("admin", "nodes", "show", node.id, env=env).stdout
    assert "NODE_STATE_UNSPECIFIED" not in shown
    events = _event_table(shown)
    assert [(e["FROM"], e["TO"]) for e in events[:2]] == [
        ("registered", "ENROLLED"),
        ("ENROLLED", "DISCOVERED"),
    ]
    assert all(TIME.fullmatch(e["TIME"]) for e in events), events
    seen = re.search(r"^reachable yes \(last seen (.*?), phase", shown, re.M)
    assert seen and TIME.fullmatch(seen.group(1)), shown
    as_json = json.loads(run("admin", "nodes", "show", node.id, "-o", "json", env=env).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", as_json["events"][0]["time"])
    admin.CreateToken(ipb.CreateTokenRequest(ttl_seconds=1, description="short"))
    config = scratch / "inventory.toml"
    config.write_text(f'data_dir = "{svc.config.data_dir}"\ndatabase = "{svc.config.database}"\n')
    brief = ["--role", "viewer", "--name", "brief", "--days", "0.00001", "--dir", str(scratch)]
    assert run("inventory", "issue-admin-cert", "--config", str(config), *brief).returncode == 0
    time.sleep(1.2)
    rows = {r["DESCRIPTION"]: r for r in _rows(run("admin", "tokens", "list", env=env).stdout)}
    assert rows["short"]["STATE"] == "expired" and TIME.fullmatch(rows["short"]["EXPIRES"])
    assert rows[""]["STATE"] == "used up", "enrol's token has had its one use"
    certs = {c["SUBJECT"]: c for c in _rows(run("admin", "certs", "list", "--all", env=env).stdout)}
    assert TIME.fullmatch(certs[node.id]["NOT AFTER"])
    expired = certs["brief"]["NOT AFTER"]
    assert expired.endswith(" (expired)") and TIME.fullmatch(expired.removesuffix(" (expired)"))
    node.client.close()
    admin.close()
