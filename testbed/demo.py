"""`make demo`: the whole product on one machine, in under a minute, leaving nothing behind.

An inventory service (SQLite in a temporary directory) and three agents on modelled
servers (a DGX H100, an 8-GPU RoCE server like OCI's BM.GPU.H100.8, a CPU-only node), each
a separate host (its own network namespace when run as root), enrol with bootstrap tokens;
then the fleet table, the labels each daemon keeps in its NFD feature file, a tuning plan
in check mode, the Kueue topology, the Kubespray inventory with the addresses the agents
reported, a node quarantined and released, and the dashboard's address, all with the same
commands an operator runs.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from nodeagent.labels.config import FEATURES_PATH
from testbed.fleet import Fleet
from testbed.wait import wait_for


def banner(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


def this_machine(fleet: Fleet) -> None:
    banner("This machine: nodeagent discover")
    start = time.perf_counter()
    print(fleet.run("discover", "-o", "table"), end="")
    print(f"(the whole command in {(time.perf_counter() - start) * 1000:.0f} ms)")


def labels(fleet: Fleet) -> None:
    """What each daemon wrote for NFD by itself (no command run): its feature file, with
    the pool the inventory assigned through the token."""
    for agent in fleet.agents:
        path = agent.root / FEATURES_PATH
        banner(f"Labels the daemon of {agent.name} keeps for NFD: {path.relative_to(fleet.base)}")
        want = f"nodeagent.io/pool={agent.pool}\n"
        wait_for(lambda p=path, w=want: w in _read(p), 30, "the pool label")  # type: ignore[misc]
        text = _read(path)
        print("\n".join(line for line in text.splitlines() if not line.startswith("nvidia.com/")))
        hidden = sum(1 for line in text.splitlines() if line.startswith("nvidia.com/"))
        print(f"  (and {hidden} nvidia.com/ GFD-compatible labels)" if hidden else "", end="")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def tuning_plan(fleet: Fleet) -> None:
    agent = fleet.agents[0]
    banner(f"Tuning plan for {agent.name}: nodeagent tune apply --profile hgx-h100 --check")
    try:
        from testbed import fakehost
    except ImportError:
        print("(tuning is not part of this build)")
        return
    # a copy of the modelled root with stand-ins for update-grub, sysctl, systemctl ...
    host = fleet.base / "tune-root"
    shutil.copytree(agent.root, host, symlinks=True)
    commands = fleet.base / "commands.json"
    commands.write_text(json.dumps(fakehost.prepare(host)))
    print(
        fleet.run(
            "tune",
            "apply",
            "--profile",
            "hgx-h100",
            "--check",
            "--root",
            str(host),
            "--commands",
            str(commands),
            "--state-dir",
            str(fleet.base / "tune-state"),
            check=False,
        ),
        end="",
    )


def kubespray(fleet: Fleet) -> None:
    banner("Kubespray inventory: nodeagent admin export kubespray --cluster demo -f hosts.yaml")
    # an existing cluster (its control plane and etcd hosts stand in), the GPU nodes assigned
    fleet.run(
        "admin",
        "clusters",
        "create",
        "demo",
        "--kubespray-dir",
        "/opt/kubespray",
        "--control-plane",
        "cp-1=192.0.2.11",
        "--etcd",
        "cp-1=192.0.2.11",
    )
    # the GPU nodes join it; where Ansible reaches each comes from what its agent reported
    # (netlink: the default route's address), never from the name the node chose
    for agent in fleet.agents:
        hostname = (agent.root / "etc" / "hostname").read_text().strip()
        if hostname != "cpu-node-01":
            fleet.run("admin", "nodes", "update", hostname, "--cluster", "demo")
    hosts = fleet.base / "hosts.yaml"
    print(fleet.run("admin", "export", "kubespray", "--cluster", "demo", "-f", str(hosts)), end="")
    print(hosts.read_text(), end="")


def quarantine(fleet: Fleet) -> None:
    """A node taken out of service and back: by hand here; the health policy does the same
    on a fatal XID or a hardware mismatch."""
    agent = fleet.agents[1]
    hostname = (agent.root / "etc" / "hostname").read_text().strip()
    banner(f"Quarantine and release: nodeagent admin nodes quarantine {hostname}")
    fleet.run(
        "admin", "nodes", "quarantine", hostname, "--reason", "GPU 3 fell off the bus (XID 79)"
    )
    print(fleet.run("admin", "nodes", "list"), end="")
    print(f"\n$ nodeagent admin nodes release {hostname}")
    fleet.run("admin", "nodes", "release", hostname, "--reason", "GPU reseated, burn-in passed")
    print(fleet.run("admin", "nodes", "list"), end="")
    events = fleet.run("admin", "nodes", "show", hostname, "--events", "3")
    print("\n".join(events.splitlines()[-4:]))


def dashboard(fleet: Fleet) -> None:
    """The web dashboard over the demo fleet: up until Enter in a terminal; without one (CI,
    a pipe) it is stopped at once, so `make demo` still leaves nothing running."""
    from testbed.dashboard import DashboardProcess

    banner("The dashboard: nodeagent admin dashboard")
    web = DashboardProcess(fleet.env).start()
    try:
        print(f"dashboard: {web.url}", flush=True)
        if sys.stdin.isatty():
            input("open it in a browser; press Enter to stop the demo ")
    finally:
        web.stop()


def main() -> int:
    started = time.perf_counter()
    fleet = Fleet()
    try:
        this_machine(fleet)
        where = "network namespaces" if fleet.namespaces else "loopback ports"
        banner(f"A fleet: inventory service + 3 agents ({where}), enrolling with tokens")
        fleet.start_inventory()
        fleet.start_agents()
        fleet.wait_enrolled()
        print(fleet.run("admin", "nodes", "list"), end="")
        labels(fleet)
        tuning_plan(fleet)
        banner("Kueue topology: nodeagent admin export kueue-topology")
        print(fleet.run("admin", "export", "kueue-topology"), end="")
        kubespray(fleet)
        quarantine(fleet)
        dashboard(fleet)
    finally:
        fleet.close()
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
