"""`make demo`: the whole product on one machine, in under a minute, leaving nothing behind.

An inventory service (SQLite in a temporary directory) and three agents on modelled
servers (a DGX H100, an 8-GPU RoCE server like OCI's BM.GPU.H100.8, a CPU-only node), each
a separate host (its own network namespace when run as root), enrol with bootstrap tokens;
then the fleet table, each node's labels, a tuning plan in check mode, the Kueue topology
and the Kubespray inventory, all printed by the same commands an operator runs.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from testbed.fleet import Fleet


def banner(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


def this_machine(fleet: Fleet) -> None:
    banner("This machine: nodeagent discover")
    start = time.perf_counter()
    print(fleet.run("discover", "-o", "table"), end="")
    print(f"(the whole command in {(time.perf_counter() - start) * 1000:.0f} ms)")


def labels(fleet: Fleet) -> None:
    for agent in fleet.agents:
        banner(f"Labels of {agent.name}: nodeagent labels --pool {agent.pool} -o json")
        out = json.loads(
            fleet.run("labels", "--root", str(agent.root), "--pool", agent.pool, "-o", "json")
        )
        width = max(len(k) for k in out)
        for key, value in out.items():
            print(f"  {key.ljust(width)}  {value}")


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
    # an admin tells where Ansible reaches each node: a node's own name is never trusted for it
    # (an admin names a node by its hostname, its id or a unique prefix of the id)
    for agent in fleet.agents:
        hostname = (agent.root / "etc" / "hostname").read_text().strip()
        if hostname != "cpu-node-01":
            fleet.run("admin", "node-address", hostname, "--ip", agent.ip)
            fleet.run("admin", "nodes", "update", hostname, "--cluster", "demo")
    hosts = fleet.base / "hosts.yaml"
    print(fleet.run("admin", "export", "kubespray", "--cluster", "demo", "-f", str(hosts)), end="")
    print(hosts.read_text(), end="")


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
    finally:
        fleet.close()
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
