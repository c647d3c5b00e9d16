"""Hosts for Ansible to reach over real SSH: one network namespace per host, joined to this
machine by a veth pair, with its own sshd (Debian's openssh-server) on the namespace's
address, a throwaway host key and an authorized_keys of the test's own key.

Nothing of this machine's SSH setup is used or changed: every sshd runs from a config,
keys and pid file in the test's directory. Each sshd sets STANDIN_ROOT for its sessions,
a per-host directory where the stand-in Kubespray playbooks record what they were asked
to do (the namespaces share one filesystem, so each host gets a directory of its own).
`close()` kills the sshds and deletes the links and namespaces, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def _run(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=30)


def available() -> str:
    """'' when the namespace hosts can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("ip")):
        if not tool or not os.path.exists(tool):
            return "needs openssh-server, openssh-client and iproute2 (make test installs them)"
    return ""


def remove_stale() -> None:
    """Namespaces and links a killed test run left behind (its pid is gone): their
    addresses are the ones the next run takes, and two routes to one subnet break both."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"nj(\d+)-\d+", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for m in re.finditer(r"^\d+: (nj(\d+)h\d+)[@:]", links, re.MULTILINE):
        if not os.path.exists(f"/proc/{m.group(2)}"):
            subprocess.run(["ip", "link", "del", m.group(1)], capture_output=True)


class SshHosts:
    def __init__(self, workdir: Path, names: list[str]) -> None:
        self.workdir = workdir
        self.tag = f"nj{os.getpid() % 100000}"
        self.names = names
        self.addresses: dict[str, str] = {}
        self.roots: dict[str, Path] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self.key = workdir / "id_ed25519"

    def ns(self, k: int) -> str:
        return f"{self.tag}-{k}"

    def start(self) -> SshHosts:
        remove_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.workdir / "host_key"))
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(Path(f"{self.key}.pub").read_text())
        authorized.chmod(0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        try:
            for k, name in enumerate(self.names, start=1):
                self._host(k, name)
            for name in self.names:
                self._wait_listening(self.addresses[name])
        except BaseException:
            self.close()
            raise
        return self

    def _host(self, k: int, name: str) -> None:
        ns, outer = self.ns(k), f"{self.tag}h{k}"
        address = f"198.18.{k}.2"
        _run("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._links.append(outer)
        _run("ip", "addr", "add", f"198.18.{k}.1/24", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        root = self.workdir / "hosts" / name
        root.mkdir(parents=True)
        config = self.workdir / f"sshd-{name}.conf"
        config.write_text(
            f"ListenAddress {address}\nPort 22\nHostKey {self.workdir / 'host_key'}\n"
            f"PidFile {self.workdir / f'sshd-{name}.pid'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"SetEnv STANDIN_ROOT={root}\nMaxStartups 100\nMaxSessions 100\n"
            "Subsystem sftp internal-sftp\n"
        )
        log = open(self.workdir / f"sshd-{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log
        )
        log.close()
        self._procs.append(proc)
        self.addresses[name] = address
        self.roots[name] = root

    def _wait_listening(self, address: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((address, 22), 0.5):
                return
            time.sleep(0.1)
        logs = "".join(p.read_text() for p in self.workdir.glob("sshd-*.log"))
        raise AssertionError(f"sshd on {address} did not listen: {logs}")

    def record(self, name: str, file: str) -> str:
        path = self.roots[name] / file
        return path.read_text() if path.exists() else ""

    def reset(self) -> None:
        """Forget what the hosts recorded and any injected faults."""
        for root in self.roots.values():
            for item in root.iterdir():
                item.unlink()

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for ns in self._namespaces:  # SSH sessions still open (a cancelled `sleep`, ...)
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._procs, self._links, self._namespaces = [], [], []
