"""`nodeagent bootstrap` when enrolment fails (issue 14): one line on stderr with the
address and the fix, exit 1, and "run the same bootstrap again" only when that can work."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, dgx_inventory, register, service_factory

__all__ = ["dgx_inventory", "service_factory"]  # the fixtures, shared with the inventory tests
AGAIN = "run the same `nodeagent bootstrap` again"


def bootstrap(
    workdir: Path, root: Path, inventory: str, enrolment: str, token: str, pin: str
) -> subprocess.CompletedProcess[str]:
    token_file = workdir / "token"
    workdir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token)
    token_file.chmod(0o600)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "bootstrap",
            "--inventory",
            inventory,
            "--bootstrap-address",
            enrolment,
            "--token-file",
            str(token_file),
            "--ca-hash",
            pin,
            "--config-dir",
            str(workdir / "etc"),
            "--state-dir",
            str(workdir / "state"),
            "--root",
            str(root),
            "--tuning",
            "skip",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nodeagent: error: bootstrap: step 'enrol' failed: "), lines[0]
    return lines[0]


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once this closes


def test_a_used_up_token_says_how_to_get_a_new_one(
    service_factory: Callable[..., ServiceThread],
    machine_root: Callable[..., Path],
    scratch: Path,
    dgx_inventory: object,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    token = admin.CreateToken(ipb.CreateTokenRequest(max_uses=1)).secret
    register(svc, token, variant(dgx_inventory, 1))  # type: ignore[arg-type]
    proc = bootstrap(
        scratch / "node",
        machine_root("cpu-node"),
        svc.address,
        svc.bootstrap,
        token,
        svc.svc.ca.pin,
    )
    line = one_line(proc)
    assert svc.bootstrap in line and "bootstrap token has already been used" in line
    assert "nodeagent admin tokens create" in line
    assert AGAIN not in line and "retry" not in line, "the same token can never work again"
    assert "AioRpcError" not in proc.stderr and "Traceback" not in proc.stderr
    assert token.split(".")[1] not in proc.stderr, "the secret stays out of the message"


def test_an_unreachable_inventory_names_the_address_and_says_retry(
    machine_root: Callable[..., Path], scratch: Path
) -> None:
    address = closed_port()
    proc = bootstrap(
        scratch / "node",
        machine_root("cpu-node"),
        address,
        address,
        "abcdef." + "0" * 32,
        "sha256:" + "0" * 64,
    )
    line = one_line(proc)
    assert f"cannot reach the inventory's enrolment port {address}: connection refused" in line
    assert "--bootstrap-address" in line and line.endswith(
        f"; then {AGAIN}: completed steps are skipped"
    )


def test_a_wrong_pin_and_an_enrolled_machine_say_what_fixes_them(
    service_factory: Callable[..., ServiceThread],
    machine_root: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    root = machine_root("cpu-node")

    def token() -> str:
        return str(admin.CreateToken(ipb.CreateTokenRequest()).secret)

    wrong = "sha256:" + "1" * 64
    line = one_line(bootstrap(scratch / "a", root, svc.address, svc.bootstrap, token(), wrong))
    assert svc.bootstrap in line and "nodeagent inventory ca-hash" in line and AGAIN not in line
    # enrolled once; the same machine installed again (a new key) with a plain token
    first = bootstrap(scratch / "b", root, svc.address, svc.bootstrap, token(), svc.svc.ca.pin)
    assert first.returncode == 0, first.stderr
    node_id = (scratch / "b" / "state" / "identity" / "node_id").read_text().strip()
    line = one_line(
        bootstrap(scratch / "c", root, svc.address, svc.bootstrap, token(), svc.svc.ca.pin)
    )
    assert svc.bootstrap in line and f"node {node_id} already enrolled" in line
    assert f"nodeagent admin tokens create --reenrol {node_id}" in line and AGAIN not in line
