"""A whole fleet on one machine: the inventory service and three agents on modelled servers.

`make demo` and the end-to-end test drive this. Each agent is a separate host: with
root, in its own network namespace joined to this one by a veth pair (addresses from
the 100.127.x.0/30 range, confined to namespaces this run creates); otherwise on
loopback with ports of its own. Everything runs as the real commands an operator
would use (`nodeagent inventory serve`, `nodeagent serve`, `nodeagent admin ...`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent import tlsutil
from nodeagent.inventory import pki
from testbed.machines import build_machine
from testbed.ready import make_ready
from testbed.wait import wait_for

FLEET = (("dgx-h100", "training"), ("oci-bm-gpu-h100-8", "training"), ("cpu-node", "services"))
NODEAGENT = [sys.executable, "-m", "nodeagent.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remove_stale_namespaces() -> None:
    """Namespaces and host-side links of a fleet whose process was killed: they hold the
    100.127.x addresses the next fleet uses, and two routes to one subnet break both."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"na-(\d+)-\d+-\d+", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for m in re.finditer(r"^\d+: (nah(\d+)x\d+)[@:]", links, re.MULTILINE):
        if not os.path.exists(f"/proc/{m.group(2)}"):
            subprocess.run(["ip", "link", "del", m.group(1)], capture_output=True)


def _use_namespaces() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = subprocess.run(["ip", "netns", "add", f"na-probe-{os.getpid()}"], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", f"na-probe-{os.getpid()}"], capture_output=True)
    return True


@dataclass
class Agent:
    name: str
    pool: str
    root: Path
    workdir: Path
    netns: str = ""
    address: str = ""  # where it reaches the inventory from
    host_if: str = ""  # this side of its veth pair (pull it down to partition the node)
    ip: str = "127.0.0.1"  # the node's own address (its side of the veth pair)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.workdir / "run" / "agent.sock")


_slots = iter(range(1_000_000))


def _next_slot() -> int:
    """Each fleet of this process takes its own 100.127.x subnets and names: two fleets may
    be up at once (a session-wide one for the dashboard tests, another for a test)."""
    return next(_slots) % 31


@dataclass
class Fleet:
    slot: int = field(default_factory=_next_slot)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nodeagent-fleet-")))
    namespaces: bool = field(default_factory=_use_namespaces)
    agents: list[Agent] = field(default_factory=list)
    inventory: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)
    boot_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)

    # --- the inventory ---------------------------------------------------------------
    def _host_addresses(self) -> list[str]:
        return [f"100.127.{self.subnet(i)}.1" for i in range(len(FLEET))] if self.namespaces else []

    def subnet(self, i: int) -> int:
        """The third octet of agent i's 100.127.x.0/30."""
        return self.slot * 8 + i + 1

    def start_inventory(self) -> None:
        data = self.base / "inventory"
        data.mkdir(exist_ok=True)
        listen = "0.0.0.0" if self.namespaces else "127.0.0.1"
        names = ", ".join(f'"{n}"' for n in ["localhost", "127.0.0.1", *self._host_addresses()])
        config = data / "inventory.toml"
        config.write_text(
            f'listen = "{listen}:{self.port}"\n'
            f'bootstrap_listen = "{listen}:{self.boot_port}"\n'
            f'data_dir = "{data}"\nserver_names = [{names}]\n'
            'heartbeat_interval_seconds = 2\nmetrics_listen = ""\n'
        )
        log = open(data / "log", "ab")  # noqa: SIM115 - the child keeps it
        self.inventory = subprocess.Popen(
            [*NODEAGENT, "inventory", "serve", "--config", str(config)], stdout=log, stderr=log
        )
        log.close()
        wait_for(lambda: self._pin() != "", 30, "the inventory service")
        if not self.env:
            self._admin_identity()

    def _pin(self) -> str:
        try:
            ca = self.ca()
            tlsutil.fetch_pinned_ca(f"127.0.0.1:{self.boot_port}", ca.pin, timeout=1)
            return ca.pin
        except (OSError, ValueError):
            return ""

    def ca(self) -> pki.CertificateAuthority:
        data = self.base / "inventory"
        return pki.CertificateAuthority.load_or_create(
            data / "ca.crt", data / "ca.key", create=False
        )

    def _admin_identity(self) -> None:
        creds = self.base / "admin"
        config = str(self.base / "inventory" / "inventory.toml")
        self.run(
            "inventory",
            "issue-admin-cert",
            "--config",
            config,
            "--role",
            "admin",
            "--name",
            "demo",
            "--dir",
            str(creds),
        )
        self.env = {
            "NODEAGENT_INVENTORY": f"127.0.0.1:{self.port}",
            "NODEAGENT_ADMIN_CERT": str(creds / "admin.crt"),
            "NODEAGENT_ADMIN_KEY": str(creds / "admin.key"),
            "NODEAGENT_ADMIN_CA": str(creds / "ca.crt"),
        }

    def stop_inventory(self, sig: int = signal.SIGTERM) -> None:
        if self.inventory is not None and self.inventory.poll() is None:
            self.inventory.send_signal(sig)
            self.inventory.wait(30)
        self.inventory = None

    # --- the agents -------------------------------------------------------------------
    def start_agents(self) -> None:
        if self.namespaces:
            remove_stale_namespaces()
        pin = self.ca().pin
        for i, (machine, pool) in enumerate(FLEET):
            workdir = self.base / machine
            workdir.mkdir(exist_ok=True)
            # installed, tuned and booted: preflight passes, the agent reports READY
            root = make_ready(build_machine(machine, workdir / "root"))
            agent = Agent(machine, pool, root, workdir)
            host = "127.0.0.1"
            if self.namespaces:
                agent.netns = f"na-{os.getpid() % 100000}-{self.slot}-{i}"
                host, agent.host_if = self._make_netns(agent.netns, self.subnet(i))
                agent.ip = f"100.127.{self.subnet(i)}.2"
            token = self.run(
                "admin", "tokens", "create", "--pool", pool, "--description", f"demo {machine}"
            ).strip()
            tlsutil.write_private(workdir / "token", token.encode())
            (workdir / "agent.toml").write_text(
                f'root = "{agent.root}"\nstate_dir = "{workdir / "state"}"\n'
                f'hooks_dir = "{workdir / "hooks.d"}"\n'
                f'[api]\nsocket = "{agent.socket}"\n[metrics]\nlisten = ""\n'
                f'[watch]\nudev = false\n[inventory]\naddress = "{host}:{self.port}"\n'
                f'bootstrap_address = "{host}:{self.boot_port}"\nca_hash = "{pin}"\n'
                f'token_file = "{workdir / "token"}"\n'
            )
            self.agents.append(agent)
            self.start_agent(agent)

    def start_agent(self, agent: Agent) -> None:
        prefix = ["ip", "netns", "exec", agent.netns] if agent.netns else []
        log = open(agent.workdir / "log", "ab")  # noqa: SIM115
        agent.proc = subprocess.Popen(
            [*prefix, *NODEAGENT, "serve", "--config", str(agent.workdir / "agent.toml")],
            stdout=log,
            stderr=log,
        )
        log.close()

    def stop_agent(self, agent: Agent, sig: int = signal.SIGTERM) -> None:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.send_signal(sig)
            agent.proc.wait(30)
        agent.proc = None

    def _make_netns(self, name: str, n: int) -> tuple[str, str]:
        host_if, ns_if = f"nah{os.getpid() % 10000}x{n}", f"nan{os.getpid() % 10000}x{n}"
        for cmd in (
            ["ip", "netns", "add", name],
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
            ["ip", "link", "set", ns_if, "netns", name],
            ["ip", "addr", "add", f"100.127.{n}.1/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", name, "addr", "add", f"100.127.{n}.2/30", "dev", ns_if],
            ["ip", "-n", name, "link", "set", ns_if, "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"],
            # the node's default route: the address its agent reports for Kubespray
            ["ip", "-n", name, "route", "add", "default", "via", f"100.127.{n}.1"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        return f"100.127.{n}.1", host_if

    def partition(self, agent: Agent, connected: bool) -> None:
        """Cut (or restore) the node's only link to the inventory."""
        state = "up" if connected else "down"
        subprocess.run(["ip", "link", "set", agent.host_if, state], check=True, capture_output=True)

    # --- helpers ----------------------------------------------------------------------
    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [*NODEAGENT, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **self.env},
        )
        if check and proc.returncode not in (0, 3):
            raise RuntimeError(f"nodeagent {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def agent_cmd(self, agent: Agent, *args: str) -> str:
        return self.run("agent", *args, "--socket", agent.socket)

    def wait_enrolled(self, timeout: float = 60) -> None:
        def all_connected() -> bool:
            for agent in self.agents:
                try:
                    if "connected" not in self.agent_cmd(agent, "status"):
                        return False
                except RuntimeError:
                    return False
            return True

        wait_for(all_connected, timeout, "the agents to enrol")

    def close(self) -> None:
        for agent in self.agents:
            try:
                self.stop_agent(agent)
            except Exception:
                if agent.proc is not None:
                    agent.proc.kill()
        self.stop_inventory()
        for agent in self.agents:
            if agent.netns:
                subprocess.run(["ip", "netns", "del", agent.netns], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
