"""Agent benchmark, beside Debian's prometheus-node-exporter on the same machine.

Measures, in one run: idle RSS and idle CPU over 60 s of `nodeagent serve` on the
DGX H100-like root and of node_exporter; GetInventory latency over the unix
socket; /metrics scrape time of both. Goals (agent issue): RSS < 64 MB, idle
CPU < 1 % of a core, GetInventory p99 < 5 ms, scrape < 50 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent.api.v1 import agent_pb2  # noqa: E402
from testbed.agent_process import AgentProcess, free_port  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape_ms(url: str, n: int = 50) -> tuple[float, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> int:
    exporter_bin = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    tmp = Path(
        tempfile.mkdtemp(
            prefix="bench-agent-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )
    exporter = None
    # production defaults for the watchers (the tests poll faster)
    agent = AgentProcess(tmp, build_machine("dgx-h100", tmp / "dgx"), watch="")
    try:
        agent.start()
        port = free_port()
        if exporter_bin:
            exporter = subprocess.Popen(
                [exporter_bin, f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)
        assert agent.proc is not None
        pids = {"nodeagent": agent.proc.pid} | ({"node_exporter": exporter.pid} if exporter else {})
        # scrapes first (so RSS includes their cost), then the idle window
        agent_scrape = scrape_ms(f"http://127.0.0.1:{agent.metrics_port}/metrics")
        exporter_scrape = (
            scrape_ms(f"http://127.0.0.1:{port}/metrics") if exporter else (float("nan"),) * 2
        )
        with agent.channel() as ch:
            stub = agent.stub(ch)
            latencies = []
            for _ in range(2000):
                start = time.perf_counter()
                stub.GetInventory(agent_pb2.GetInventoryRequest(), timeout=5)
                latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        inv_p50, inv_p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(IDLE_SECONDS)
        idle_cpu = {
            name: (cpu_seconds(pid) - cpu0[name]) / IDLE_SECONDS * 100 for name, pid in pids.items()
        }
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
    finally:
        agent.close()
        if exporter is not None:
            exporter.terminate()
            exporter.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    nan = float("nan")
    rows = [
        ("idle RSS (MB)", rss["nodeagent"], rss.get("node_exporter", nan), "< 64"),
        (
            f"idle CPU over {IDLE_SECONDS:.0f} s (% of a core)",
            idle_cpu["nodeagent"],
            idle_cpu.get("node_exporter", nan),
            "< 1",
        ),
        ("/metrics scrape p50 (ms)", agent_scrape[0], exporter_scrape[0], "< 50"),
        ("/metrics scrape p99 (ms)", agent_scrape[1], exporter_scrape[1], ""),
        ("GetInventory p50 over the unix socket (ms)", inv_p50, nan, ""),
        ("GetInventory p99 over the unix socket (ms)", inv_p99, nan, "< 5"),
    ]
    print(f"{'measure':<46} {'nodeagent':>10} {'node_exporter':>14}  goal")
    for name, ours, theirs, goal in rows:
        print(f"{name:<46} {ours:>10.2f} {theirs:>14.2f}  {goal}")
    ratio = agent_scrape[0] / exporter_scrape[0] if exporter else nan
    print(
        f"scrape time ratio nodeagent / node_exporter: {ratio:.2f}x "
        f"(nodeagent on the DGX H100-like root; node_exporter on this machine)"
    )
    results = [
        {
            "name": "idle_rss",
            "value": round(rss["nodeagent"], 1),
            "unit": "MB",
            "goal": 64,
            "better": "lower",
        },
        {
            "name": "idle_cpu",
            "value": round(idle_cpu["nodeagent"], 3),
            "unit": "% core",
            "goal": 1,
            "better": "lower",
        },
        {
            "name": "get_inventory_p99",
            "value": round(inv_p99, 3),
            "unit": "ms",
            "goal": 5,
            "better": "lower",
        },
        {
            "name": "metrics_scrape_p50",
            "value": round(agent_scrape[0], 2),
            "unit": "ms",
            "goal": 50,
            "better": "lower",
        },
        {
            "name": "node_exporter_scrape_p50",
            "value": round(exporter_scrape[0], 2),
            "unit": "ms",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "node_exporter_idle_rss",
            "value": round(rss.get("node_exporter", nan), 1),
            "unit": "MB",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "scrape_ratio_to_node_exporter",
            "value": round(ratio, 2),
            "unit": "x",
            "goal": None,
            "better": "lower",
        },
    ]
    print(json.dumps({"bench": "agent", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
