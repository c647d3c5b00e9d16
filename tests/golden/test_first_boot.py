"""First boot: the shipped cloud-init user-data and iPXE script, and `nodeagent bootstrap`
being idempotent across an interrupted run and a reboot."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodeagent.agent import bootstrap
from nodeagent.api.v1 import inventory_pb2 as ipb
from tests.inventory.conftest import ServiceThread, service_factory

__all__ = ["service_factory"]  # the fixture, shared with the inventory tests

REPO = Path(__file__).resolve().parents[2]
USER_DATA = REPO / "golden-image" / "cloud-init" / "user-data.yaml"


def _schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cloud_init_user_data_passes_schema(scratch: Path) -> None:
    if not shutil.which("cloud-init"):
        pytest.fail("cloud-init is needed (Debian's cloud-init package; make test installs it)")
    result = _schema(USER_DATA)
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stderr
    # the first-boot cloud-config nested in the autoinstall is valid on its own too
    doc = yaml.safe_load(USER_DATA.read_text())
    nested = scratch / "first-boot.yaml"
    nested.write_text("#cloud-config\n" + yaml.safe_dump(doc["autoinstall"]["user-data"]))
    result = _schema(nested)
    assert result.returncode == 0, result.stdout + result.stderr
    # every templated value is documented in the header
    text = USER_DATA.read_text()
    header = text.split("autoinstall:")[0]
    for name in set(re.findall(r"@([A-Z_]+)@", text)):
        assert f"@{name}@" in header, f"@{name}@ is not documented"
    runcmd = doc["autoinstall"]["user-data"]["runcmd"][0]
    assert runcmd[:2] == ["/opt/nodeagent/bin/nodeagent", "bootstrap"]
    assert "--token-file" in runcmd and "--token" not in runcmd, "the token stays out of argv"


def test_ipxe_script_boots_the_autoinstall_seed() -> None:
    script = (REPO / "golden-image" / "ipxe" / "boot.ipxe").read_text()
    assert script.startswith("#!ipxe\n")
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert "autoinstall" in kernel and "ds=nocloud-net;s=http://${boot-server}/seed/" in kernel
    assert "initrd http://${boot-server}/ubuntu/initrd" in script
    for setting in ("dhcp-boot=", "enable-tftp", "tftp-root="):
        assert setting in script, f"the dnsmasq setting {setting} is documented"


def test_bootstrap_is_idempotent_across_failure_and_reboot(
    service_factory: Callable[..., ServiceThread],
    machine_root: Callable[..., Path],
    scratch: Path,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    token = admin.CreateToken(ipb.CreateTokenRequest(max_uses=1)).secret
    opts = bootstrap.BootstrapOptions(
        inventory=svc.address,
        bootstrap_address=svc.bootstrap,
        token=token,
        ca_hash=svc.svc.ca.pin,
        config_dir=str(scratch / "etc"),
        state_dir=str(scratch / "state"),
        root=str(machine_root("cpu-node")),
        tuning="skip",
    )
    # halfway: the enrolment port is wrong, as if the inventory were not reachable yet
    broken = bootstrap.BootstrapOptions(**{**opts.__dict__, "bootstrap_address": "127.0.0.1:1"})
    with pytest.raises(bootstrap.BootstrapError, match=r"step 'enrol' failed: .* run the same"):
        bootstrap.run(broken, log=lambda _: None)
    assert (scratch / "etc" / "bootstrap-token").stat().st_mode & 0o777 == 0o600
    log: list[str] = []
    ran = bootstrap.run(opts, log=log.append)  # "after the reboot"
    assert ran == ["enrol", "tune", "handoff"], log
    assert "bootstrap: discover already done, skipped" in log
    nodes = admin.ListNodes(ipb.ListNodesRequest()).nodes
    assert len(nodes) == 1 and nodes[0].hostname == "cpu-node-01"
    # and again: nothing left to do, no second enrolment (the single-use token is spent)
    assert bootstrap.run(opts, log=lambda _: None) == []
    assert admin.ListNodes(ipb.ListNodesRequest()).total == 1
    config = (scratch / "etc" / "agent.toml").read_text()
    assert token not in config, "the token is in its own 0600 file, not the config"


def test_bootstrap_rejects_bad_values_before_writing(scratch: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent.cli.main",
            "bootstrap",
            "--inventory",
            'evil"; rm -rf /:1',
            "--token",
            "x",
            "--ca-hash",
            "sha256:" + "0" * 64,
            "--config-dir",
            str(scratch / "etc"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("nodeagent: error: bootstrap: --inventory must be")
    assert not (scratch / "etc").exists()
