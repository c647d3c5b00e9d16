"""Kubespray inventory benchmark: 10,000 READY nodes of one cluster, exported by the
inventory service as `hosts.yaml` and listed by the dynamic inventory script, beside
`ansible-inventory --list` reading the exported static file in the same run.

The service runs as `nodeagent inventory serve` on SQLite; the nodes (a DGX H100's
inventory each, own hostname and address) are written into its database directly, as
ten thousand enrolments and their agents' heartbeats would leave them: each node's label
map and addresses as its agent reports them (a DGX H100's map, computed by the daemon's
own function, and an address on the default route). Each figure is the wall time of the
command an operator (or Ansible) runs, process start included. The first export after
the service starts (cold) reads the reported maps as a warm one does: the goal holds for
both. (Before agents reported their maps, a cold export derived ten thousand maps from
the stored inventories: 33.7 s on this machine.)

Prints a table, then one JSON line (the last line) with every figure and goal.
Goals (join issue): hosts.yaml export < 2 s and dynamic inventory --list < 2 s; node-side
issue: the cold export < 2 s too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testbed/ is not installed: it lives beside the package

from google.protobuf import json_format  # noqa: E402

from nodeagent import tlsutil  # noqa: E402
from nodeagent.api.v1 import hardware_pb2 as pb  # noqa: E402
from nodeagent.api.v1 import inventory_pb2 as ipb  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.inventory import clusters, pki  # noqa: E402
from nodeagent.inventory.store import Store, dumps  # noqa: E402
from nodeagent.labels.config import LabelConfig  # noqa: E402
from nodeagent.labels.features import read_features  # noqa: E402
from nodeagent.labels.node import Decided, compute  # noqa: E402
from nodeagent.topology.config import FabricConfig  # noqa: E402
from nodeagent.topology.observe import observe  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

NODES = 10_000
RUNS = 3
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reported_labels(root: HostRoot, inv: pb.HardwareInventory) -> str:
    """The label map a DGX H100's agent reports, as the daemon computes it."""
    obs = observe(root, inv, FabricConfig())
    decided = Decided(pool="train", profile="dgx-h100")
    computed = compute(inv, obs, read_features(root), decided, LabelConfig(), {})
    out = ipb.ReportedLabels(domain="nodeagent.io")
    for family, labels in computed.by_family.items():
        out.families[family].labels.update(labels)
    return json_format.MessageToJson(out, indent=None, sort_keys=True)


def reported_network(n: int) -> str:
    ip = f"10.{1 + n // 65536}.{n // 256 % 256}.{n % 256}"
    net = ipb.NodeNetwork(
        interfaces=[ipb.InterfaceAddresses(name="eno1", addresses=[f"{ip}/8"], mtu=9000)],
        default_route_interface="eno1",
        default_route_address=ip,
    )
    return json_format.MessageToJson(net, indent=None)


def populate(database: str, workdir: Path) -> None:
    root = HostRoot(build_machine("dgx-h100", workdir / "root"))
    inv = discover(root)
    text = json_format.MessageToJson(inv, indent=None)
    labels = reported_labels(root, inv)
    store = Store.open(database)
    cp = [ipb.KubesprayHost(name=f"cp{i}", ip=f"10.0.0.{i}") for i in (1, 2, 3)]
    clusters.create_cluster(
        store,
        ipb.Cluster(
            name="bench",
            kubespray_dir="/opt/kubespray",
            control_plane=cp,
            etcd=cp,
            ssh_user="deploy",
            ssh_key_path="/etc/nodeagent/ssh/id_ed25519",
        ),
    )
    now = time.time()
    with store.tx() as cur:
        for n in range(NODES):
            node_id = f"{n:08d}-0000-4000-8000-000000000000"
            cur.execute(
                store.q(
                    "INSERT INTO nodes (id, identity_key, hostname, state, pool, cluster, profile, "
                    "labels, taints, gpu_model, gpu_count, inventory, inventory_hash, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    node_id,
                    f"bench-{n}",
                    f"gpu-{n:05d}",
                    ipb.READY,
                    "train",
                    "bench",
                    "dgx-h100",
                    dumps({"rack": f"r{n // 32}"}),
                    "[]",
                    "NVIDIA H100 80GB HBM3",
                    8,
                    text,
                    f"hash-{n}",
                    now,
                    now,
                ),
            )
            cur.execute(
                store.q(
                    "INSERT INTO node_reports (node_id, labels, network, updated_at) "
                    "VALUES (?, ?, ?, ?)"
                ),
                (node_id, labels, reported_network(n), now),
            )
    store.close()


class Server:
    def __init__(self, workdir: Path, database: str) -> None:
        self.port, boot = free_port(), free_port()
        config = workdir / "inventory.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.port}"\n'
            f'bootstrap_listen = "127.0.0.1:{boot}"\n'
            f'data_dir = "{workdir / "data"}"\ndatabase = "{database}"\n'
            'log_level = "warning"\n'
            'max_message_bytes = 67108864\nmetrics_listen = ""\n'
        )
        self.log = open(workdir / "log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodeagent.cli.main",
                "inventory",
                "serve",
                "--config",
                str(config),
            ],
            stdout=self.log,
            stderr=self.log,
        )
        data = workdir / "data"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.ca = pki.CertificateAuthority.load_or_create(
                    data / "ca.crt", data / "ca.key", create=False
                )
                tlsutil.fetch_pinned_ca(f"127.0.0.1:{boot}", self.ca.pin, timeout=1)
                break
            except (OSError, ValueError):
                time.sleep(0.2)
        else:
            raise SystemExit((workdir / "log").read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nodeagent-bench-join-") as tmp:
        work = Path(tmp)
        database = f"sqlite:///{work / 'inventory.db'}"
        t0 = time.perf_counter()
        populate(database, work)
        fill_s = time.perf_counter() - t0
        server = Server(work, database)
        try:
            cert, key = server.ca.issue_client("bench", "viewer")
            (work / "v.crt").write_bytes(cert)
            (work / "v.key").write_bytes(key)
            (work / "ca.crt").write_bytes(server.ca.pem)
            env = {
                **os.environ,
                "NODEAGENT_INVENTORY": f"127.0.0.1:{server.port}",
                "NODEAGENT_ADMIN_CERT": str(work / "v.crt"),
                "NODEAGENT_ADMIN_KEY": str(work / "v.key"),
                "NODEAGENT_ADMIN_CA": str(work / "ca.crt"),
            }
            hosts, script = work / "hosts.yaml", work / "inventory.py"
            export = [
                str(BIN / "nodeagent"),
                "admin",
                "--timeout",
                "600",
                "export",
                "kubespray",
                "--cluster",
                "bench",
                "-f",
                str(hosts),
                "--script",
                str(script),
            ]
            cold = timed(export, env)
            warm = statistics.median(timed(export, env) for _ in range(RUNS))
            listing = statistics.median(timed([str(script), "--list"], env) for _ in range(RUNS))
            peer = statistics.median(
                timed([str(BIN / "ansible-inventory"), "-i", str(hosts), "--list"], env)
                for _ in range(RUNS)
            )
            size_mb = hosts.stat().st_size / 1e6
            listed = json.loads(
                subprocess.run(
                    [str(script), "--list"], env=env, text=True, capture_output=True, check=True
                ).stdout
            )
            assert len(listed["kube_node"]["hosts"]) == NODES
        finally:
            server.stop()

    rows = [
        ("database filled (10k nodes, setup)", f"{fill_s:.1f} s", ""),
        ("hosts.yaml export, cold (service just started)", f"{cold:.2f} s", "< 2 s"),
        ("hosts.yaml export, warm", f"{warm:.2f} s", "< 2 s"),
        ("dynamic inventory --list", f"{listing:.2f} s", "< 2 s"),
        ("ansible-inventory --list on hosts.yaml", f"{peer:.2f} s", "(peer)"),
        ("hosts.yaml size", f"{size_mb:.1f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>10}  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value:>10}  {goal}")
    results = [
        {
            "name": "export_hosts_yaml_10k",
            "value": round(warm, 3),
            "unit": "s",
            "goal": 2,
            "better": "lower",
        },
        {
            "name": "dynamic_inventory_list_10k",
            "value": round(listing, 3),
            "unit": "s",
            "goal": 2,
            "better": "lower",
        },
        {
            "name": "ansible_inventory_list_static_10k",
            "value": round(peer, 3),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "export_to_ansible_inventory_ratio",
            "value": round(warm / peer, 2),
            "unit": "x",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "export_hosts_yaml_10k_cold",
            "value": round(cold, 2),
            "unit": "s",
            "goal": 2,
            "better": "lower",
        },
    ]
    print(json.dumps({"bench": "join", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
