"""Start the real agent daemon as a subprocess on a fixture root, as systemd would.

A datagram socket stands in for systemd's NOTIFY_SOCKET, so tests see READY=1,
WATCHDOG=1 and STOPPING=1 exactly as systemd would receive them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from nodeagent.api.v1 import agent_pb2, agent_pb2_grpc

# The tests poll faster than production so they can observe changes quickly.
FAST_WATCH = "rdma_poll_seconds = 0.5\ncoalesce_seconds = 0.2\n"


# A bootstrap token's secret part or PEM key material must never reach a log.
SECRET_PATTERNS = (
    re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{32}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def assert_no_secrets(text: str, where: str) -> None:
    """Every log the test processes write is scanned when they are closed."""
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"secret material in the {where}: {match.group(0)[:12]}..."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(
        self,
        workdir: Path,
        root: Path,
        extra_config: str = "",
        env: dict[str, str] | None = None,
        watch: str = FAST_WATCH,
        api: str = "",
        labels: str = "",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = str(workdir / "run" / "agent.sock")
        self.metrics_port = free_port()
        self.config_path = workdir / "agent.toml"
        self.log_path = workdir / "agent.log"
        self.config_path.write_text(
            f'root = "{root}"\nstate_dir = "{workdir / "state"}"\n'
            f'hooks_dir = "{workdir / "hooks.d"}"\n{extra_config}\n'
            f'[api]\nsocket = "{self.socket_path}"\n{api}\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            f"[watch]\n{watch}\n"
            f"[labels]\n{labels or self.default_labels(workdir)}"
        )
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = str(workdir / "notify.sock")
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify.bind(self.notify_path)
        self.messages: list[str] = []

    @staticmethod
    def default_labels(workdir: Path) -> str:
        """The feature file in the test's own directory: the modelled roots are shared."""
        return f'feature_file = "{workdir / "features.d" / "nodeagent"}"\n'

    @property
    def feature_file(self) -> Path:
        return self.workdir / "features.d" / "nodeagent"

    def start(self, wait_ready: bool = True) -> AgentProcess:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, **self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodeagent.cli.main",
                "serve",
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        if wait_ready:
            self.wait_message("READY=1", timeout=60)
        return self

    def wait_message(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if needle in msg:
                    return msg
            self.notify.settimeout(0.2)
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(
                        f"agent exited {self.proc.returncode}: {self.log()}"
                    ) from None
        raise AssertionError(f"no {needle!r} from the agent within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket_path}")

    def stub(self, channel: grpc.Channel) -> agent_pb2_grpc.NodeAgentStub:
        return agent_pb2_grpc.NodeAgentStub(channel)

    def node_id(self) -> str:
        """The id the inventory gave this agent ('' until it has enrolled)."""
        with self.channel() as ch:
            status = self.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
        return str(status.node_id)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop on {sig}: {self.log()}") from None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        assert_no_secrets(self.log(), "agent log")
