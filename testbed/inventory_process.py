"""`nodeagent inventory serve` as a real process, started from the CLI as systemd runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import fleet_pb2_grpc, inventory_pb2_grpc
from nodeagent.inventory import pki
from testbed.agent_process import assert_no_secrets, free_port
from testbed.wait import wait_for


class InventoryProcess:
    """`nodeagent inventory serve` in a subprocess, as systemd runs it."""

    def __init__(
        self,
        workdir: Path,
        database: str,
        extra: str = "",
        share_ca_of: InventoryProcess | None = None,
        metrics: bool = False,
    ) -> None:
        self.workdir = workdir
        self.ca_dir = (share_ca_of.workdir if share_ca_of else workdir) / "data"
        if share_ca_of is not None:
            extra += f'ca_cert = "{self.ca_dir / "ca.crt"}"\nca_key = "{self.ca_dir / "ca.key"}"\n'
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.boot_port = free_port(), free_port()
        # off unless asked for: the default port (9746) would be shared by every test
        self.metrics_port = free_port() if metrics else 0
        listen = f"127.0.0.1:{self.metrics_port}" if metrics else ""
        self.config = workdir / "inventory.toml"
        self.config.write_text(
            f'listen = "127.0.0.1:{self.port}"\nbootstrap_listen = "127.0.0.1:{self.boot_port}"\n'
            f'data_dir = "{workdir / "data"}"\ndatabase = "{database}"\n'
            f'liveness_flush_seconds = 0.2\nmetrics_listen = "{listen}"\n{extra}'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.boot_port}"

    def start(self) -> InventoryProcess:
        log = open(self.workdir / "inventory.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodeagent.cli.main",
                "inventory",
                "serve",
                "--config",
                str(self.config),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(self._up, 30, "the inventory to listen")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError((self.workdir / "inventory.log").read_text())
        try:
            tlsutil.fetch_pinned_ca(self.bootstrap, self.ca().pin, timeout=1)
            return True
        except (OSError, tlsutil.PinError, pki.PkiError):
            return False

    def ca(self) -> pki.CertificateAuthority:
        return pki.CertificateAuthority.load_or_create(
            self.ca_dir / "ca.crt", self.ca_dir / "ca.key", create=False
        )

    def fleet(self) -> fleet_pb2_grpc.FleetServiceStub:
        cert, key = self.ca().issue_client("vic", "viewer")
        return fleet_pb2_grpc.FleetServiceStub(
            channels.secure_channel(self.address, self.ca().pem, cert, key)
        )

    def admin(self) -> inventory_pb2_grpc.InventoryServiceStub:
        cert, key = self.ca().issue_client("alice", "admin")
        return inventory_pb2_grpc.InventoryServiceStub(
            channels.secure_channel(self.address, self.ca().pem, cert, key)
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)
        log = (self.workdir / "inventory.log").read_text(errors="replace")
        assert_no_secrets(log, "inventory log")
