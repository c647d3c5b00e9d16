"""Dashboard benchmark: `nodeagent admin dashboard` over 10,000 enrolled nodes, beside
`nodeagent admin nodes list -o json` against the same inventory in the same run.

The service runs as `nodeagent inventory serve` on SQLite; the nodes (variants of the
modelled DGX H100, each with its own ids and hostname, in 40 scalable units of 250 with a
fabric observation each, a few with a rail down, a few failed or quarantined) are written
into its database directly, as ten thousand enrolments would leave them (bench/join.py does
the same). The dashboard runs as the admin runs it, a separate process with a viewer
certificate; it reads the fleet and the topology once at start, then serves from memory.

Measured: the fleet page's time to first byte, its complete load in headless Chromium
(navigation start to the end of the load event, the browser's own clock), and the fabric
SVG (whole response). The baseline is the CLI's listing of the same fleet (one page of
1,000 nodes, process start included), the command an admin runs instead of the page.
Goals (dashboard issue): first byte < 200 ms, complete load < 2 s, fabric SVG < 500 ms.
Prints a table, then one JSON line (the last line) with every figure and goal.
BENCH_ARTIFACTS=DIR keeps screenshots of the two pages there.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # testbed/ is not installed: it lives beside the package
sys.path.insert(0, str(BENCH))

import join as jb  # noqa: E402  (bench/join.py: the inventory Server)
from google.protobuf import json_format  # noqa: E402

from nodeagent.api.v1 import fabric_pb2 as fpb  # noqa: E402
from nodeagent.api.v1 import inventory_pb2 as ipb  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.inventory.store import Store, dumps  # noqa: E402
from testbed.dashboard import DashboardProcess, browser, load_time, screenshot  # noqa: E402
from testbed.machines import build_machine  # noqa: E402
from testbed.variants import variant  # noqa: E402
from testbed.wait import wait_for  # noqa: E402

NODES = int(os.environ.get("BENCH_NODES", "10000"))
SU_SIZE, RAILS, PODS = 250, 8, 4
RUNS, LOADS = 20, 5
BIN = Path(sys.executable).parent


def _observation(n: int) -> fpb.FabricObservation:
    """Node n of SU n // 250: rail r on leaf su<s>-r<r>, the leaves under pod spines; every
    97th node has a rail down (degraded, kept in its group by the last-good rule)."""
    su = n // SU_SIZE
    obs = fpb.FabricObservation(node=f"gpu-{n:05d}", rails_expected=RAILS, rate_expected_gbps=400)
    for r in range(RAILS):
        up = not (n % 97 == 0 and r == 3)
        rail = obs.rails.add(
            name=f"mlx5_{r}/1", device=f"mlx5_{r}", port=1, link_layer="infiniband", active=up
        )
        rail.rate_gbps = 400.0
        if up:
            rail.leaf.id, rail.leaf.name = f"su{su}-r{r}", f"leaf su{su}-r{r}"
            rail.neighbour_source = "infiniband"
            for k in range(4):
                rail.spines.add(id=f"pod{su % PODS}-s{k}", name=f"spine {su % PODS}-{k}")
    return obs


def _state(n: int) -> tuple[int, str]:
    if n % 500 == 7:
        return ipb.FAILED, "join: kubelet did not start"
    if n % 1000 == 13:
        return ipb.QUARANTINED, "GPU 3 fell off the bus"
    return (ipb.JOINED, "") if n % 3 else (ipb.READY, "")


def populate(database: str, workdir: Path) -> None:
    base = discover(HostRoot(build_machine("dgx-h100", workdir / "root")))
    store = Store.open(database)
    now = time.time()
    with store.tx() as cur:
        for n in range(NODES):
            node_id = f"{n:08d}-0000-4000-8000-000000000000"
            inv = variant(base, n)
            state, reason = _state(n)
            cur.execute(
                store.q(
                    "INSERT INTO nodes (id, identity_key, hostname, state, state_reason, pool, "
                    "cluster, profile, labels, taints, gpu_model, gpu_count, inventory, "
                    "inventory_hash, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    node_id,
                    f"bench-{n}",
                    inv.system.hostname,
                    state,
                    reason,
                    ("training", "inference", "research")[n % 3],
                    f"prod-{n // 2500}",
                    "hgx-h100",
                    dumps({"rack": f"r{n // 32}"}),
                    "[]",
                    "NVIDIA H100 80GB HBM3",
                    8,
                    json_format.MessageToJson(inv, indent=None),
                    f"hash-{n}",
                    now,
                    now,
                ),
            )
            cur.execute(
                store.q("INSERT INTO liveness (node_id, last_seen, phase) VALUES (?, ?, ?)"),
                (node_id, now, "READY"),
            )
            cur.execute(
                store.q(
                    "INSERT INTO fabric (node_id, observation, tiers, updated_at) "
                    "VALUES (?, ?, '', ?)"
                ),
                (node_id, json_format.MessageToJson(_observation(n), indent=None), now),
            )
    store.close()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def http_times(url: str, runs: int) -> tuple[float, float, int]:
    """Median seconds to the first byte and to the whole body, and the body's size."""
    parts = urlsplit(url)
    first, whole, size = [], [], 0
    for _ in range(runs):
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        start = time.perf_counter()
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()  # the status line and headers: the first bytes
        first.append(time.perf_counter() - start)
        body = resp.read()
        whole.append(time.perf_counter() - start)
        conn.close()
        assert resp.status == 200, resp.status
        size = len(body)
    return statistics.median(first), statistics.median(whole), size


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nodeagent-bench-dashboard-") as tmp:
        work = Path(tmp)
        database = f"sqlite:///{work / 'inventory.db'}"
        t0 = time.perf_counter()
        populate(database, work)
        fill_s = time.perf_counter() - t0
        server = jb.Server(work, database)
        dashboard = None
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
            listing = [str(BIN / "nodeagent"), "admin", "nodes", "list", "-o", "json"]
            baseline = statistics.median(timed(listing, env) for _ in range(3))
            export = [str(BIN / "nodeagent"), "admin", "--timeout", "600", "export", "fabric"]
            topology_s = timed(export, env)
            t0 = time.perf_counter()
            dashboard = DashboardProcess(env, refresh=300).start(timeout=120)

            def ready() -> bool:
                status = http_times(dashboard.url + "status.json", 1)
                svg = http_times(dashboard.url + "fabric.svg", 1)
                return status[2] > 0 and svg[2] > 10_000

            wait_for(ready, 300, "the dashboard to read the fleet", interval=0.5)
            start_s = time.perf_counter() - t0
            ttfb, fleet_whole, fleet_size = http_times(dashboard.url, RUNS)
            _, svg_s, svg_size = http_times(dashboard.url + "fabric.svg", RUNS)
            _, focus_s, _ = http_times(
                dashboard.url + "fabric.svg?group=" + _group(dashboard.url), RUNS
            )
            driver = browser()
            try:
                load_time(driver, dashboard.url)  # warm the browser's cache of the static files
                loads = [load_time(driver, dashboard.url) for _ in range(LOADS)]
                fabric_load = statistics.median(
                    load_time(driver, dashboard.url + "fabric") for _ in range(LOADS)
                )
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert errors == [], errors
                shots = os.environ.get("BENCH_ARTIFACTS")
                if shots:
                    driver.set_window_size(1400, 900)
                    driver.get(dashboard.url)
                    screenshot(driver, Path(shots), "dashboard-fleet")
                    driver.get(dashboard.url + "fabric")
                    screenshot(driver, Path(shots), "dashboard-fabric")
            finally:
                driver.quit()
            load = statistics.median(loads)
        finally:
            if dashboard is not None:
                dashboard.stop()
            server.stop()

    rows = [
        ("database filled (10k nodes with fabric, setup)", f"{fill_s:.1f} s", ""),
        ("dashboard start to fleet and topology read", f"{start_s:.2f} s", ""),
        (
            "ExportTopology of the fleet (the dashboard's background read)",
            f"{topology_s:.2f} s",
            "",
        ),
        ("fleet page, first byte", f"{ttfb * 1000:.1f} ms", "< 200 ms"),
        (
            "fleet page, whole response",
            f"{fleet_whole * 1000:.1f} ms",
            f"({fleet_size // 1024} KiB)",
        ),
        ("fleet page, complete load in headless Chromium", f"{load:.3f} s", "< 2 s"),
        ("fabric page, complete load in headless Chromium", f"{fabric_load:.3f} s", ""),
        (
            "fabric SVG, whole response",
            f"{svg_s * 1000:.1f} ms",
            f"< 500 ms ({svg_size // 1024} KiB)",
        ),
        ("fabric SVG of one group of 250, node by node", f"{focus_s * 1000:.1f} ms", ""),
        ("nodeagent admin nodes list -o json (baseline)", f"{baseline:.3f} s", "(baseline)"),
        ("fleet first byte / nodes list", f"{ttfb / baseline:.3f}x", ""),
        ("fleet complete load / nodes list", f"{load / baseline:.2f}x", ""),
        ("fabric SVG / nodes list", f"{svg_s / baseline:.3f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>10}  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value:>10}  {goal}")

    def result(name: str, value: float, unit: str, goal: float | None) -> dict[str, object]:
        return {"name": name, "value": value, "unit": unit, "goal": goal, "better": "lower"}

    results = [
        result("fleet_page_first_byte_10k", round(ttfb * 1000, 1), "ms", 200),
        result("fleet_page_load_chromium_10k", round(load, 3), "s", 2),
        result("fabric_svg_10k", round(svg_s * 1000, 1), "ms", 500),
        result("nodes_list_json_10k", round(baseline, 3), "s", None),
        result("fleet_first_byte_to_nodes_list_ratio", round(ttfb / baseline, 3), "x", None),
        result("fleet_load_to_nodes_list_ratio", round(load / baseline, 2), "x", None),
        result("fabric_svg_to_nodes_list_ratio", round(svg_s / baseline, 3), "x", None),
    ]
    print(json.dumps({"bench": "dashboard", "results": results}))
    return 0


def _group(url: str) -> str:
    """A tier-0 group id, from the picture's own link to it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    conn.request("GET", "/fabric.svg")
    svg = conn.getresponse().read().decode()
    conn.close()
    return svg.split('href="/fabric?group=', 1)[1].split('"', 1)[0]


if __name__ == "__main__":
    sys.exit(main())
