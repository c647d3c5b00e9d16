"""A small Ethernet fabric out of network namespaces, with real lldpd on every box.

Each leaf switch and each node is a network namespace; a rail is a veth pair with one
end (`rail<N>`) in the node and the other (`swp<M>`) in a leaf. Every namespace runs
its own lldpd (`-d`, own control socket `-u`, own pid file and config file); leaves
announce their system name and a fixed chassis id on each port, with port ids as
interface names and a one-second transmit interval so neighbours appear quickly.

Everything it creates is recorded as it is created and `close()` removes it (lldpd
process groups first, then the namespaces, which takes their veths along), so a
failing test leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from nodeagent.hardware.probes import lldp


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class NetFabric:
    def __init__(self) -> None:
        # lldpd drops to its own user, and the lldpcli it runs for the config file
        # must reach the control socket: a world-traversable directory, not pytest's
        # private tmp_path.
        self.workdir = Path(tempfile.mkdtemp(prefix="nodeagent-netfabric-"))
        self.workdir.chmod(0o755)
        self.tag = f"na{os.getpid() % 100000}"
        self.namespaces: list[str] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.chassis: dict[str, str] = {}  # leaf -> chassis id
        self.ports: dict[str, int] = {}  # leaf -> ports used
        self.cables: dict[tuple[str, int], tuple[str, str]] = {}  # (node, rail) -> (leaf, swp)

    def ns(self, box: str) -> str:
        return f"{self.tag}-{box}"

    def socket(self, box: str) -> str:
        return str(self.workdir / f"{box}.sock")

    def _box(self, box: str) -> None:
        ip("netns", "add", self.ns(box))
        self.namespaces.append(self.ns(box))
        ip("-n", self.ns(box), "link", "set", "lo", "up")

    def add_leaf(self, name: str, chassis_id: str) -> None:
        self._box(name)
        self.chassis[name] = chassis_id
        self.ports[name] = 0

    def add_node(self, name: str) -> None:
        self._box(name)

    def cable(self, node: str, rail: int, leaf: str) -> str:
        """Connect rail `rail` of `node` to the next free port of `leaf`; return the port."""
        self.ports[leaf] += 1
        swp = f"swp{self.ports[leaf]}"
        ip(
            "link",
            "add",
            f"rail{rail}",
            "netns",
            self.ns(node),
            "type",
            "veth",
            "peer",
            "name",
            swp,
            "netns",
            self.ns(leaf),
        )
        ip("-n", self.ns(node), "link", "set", f"rail{rail}", "up")
        ip("-n", self.ns(leaf), "link", "set", swp, "up")
        self.cables[(node, rail)] = (leaf, swp)
        return swp

    def start(self) -> None:
        boxes = [ns.removeprefix(f"{self.tag}-") for ns in self.namespaces]
        for box in boxes:
            lines = [f"configure system hostname {box}", "configure lldp tx-interval 1"]
            if box in self.chassis:
                lines += [
                    f"configure system chassisid {self.chassis[box]}",
                    "configure lldp portidsubtype ifname",
                ]
            conf = self.workdir / f"{box}.conf"
            conf.write_text("\n".join(lines) + "\n")
            log = open(self.workdir / f"{box}.log", "wb")  # noqa: SIM115 (kept by the child)
            cmd = [
                "ip",
                "netns",
                "exec",
                self.ns(box),
                "lldpd",
                "-d",
                "-u",
                self.socket(box),
                "-p",
                str(self.workdir / f"{box}.pid"),
                "-O",
                str(conf),
            ]
            self.daemons.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            log.close()

    def neighbours(self, node: str) -> dict[str, list[dict[str, str]]]:
        return lldp.neighbours(lldp.read_live(socket=self.socket(node), timeout=5))

    def wait(self, node: str, expect: dict[str, str], timeout: float = 20.0) -> None:
        """Until `node` hears, per rail netdev, the leaf named in `expect` (and no other)."""
        deadline = time.monotonic() + timeout
        heard: dict[str, list[dict[str, str]]] = {}
        while time.monotonic() < deadline:
            for proc in self.daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"lldpd exited ({proc.returncode}); see {self.workdir}")
            heard = self.neighbours(node)
            names = {k: [n["chassis_name"] for n in v] for k, v in heard.items()}
            if names == {k: [v] for k, v in expect.items()}:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{node} heard {heard}, expected {expect}")

    def cut(self, node: str, rail: int) -> None:
        """Pull a cable at the switch end: the leaf port goes down, the node loses carrier."""
        leaf, swp = self.cables[(node, rail)]
        ip("-n", self.ns(leaf), "link", "set", swp, "down")

    def close(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.daemons:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
