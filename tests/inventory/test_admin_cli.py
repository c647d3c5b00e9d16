"""The admin command line against a real service: tokens, nodes, output formats, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, register


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodeagent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


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
        "-o",
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
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
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
        "-o",
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
