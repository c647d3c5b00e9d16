"""Fleet-scale proof: 10,000 simulated agents speaking the real protocol (TLS enrolment with
a token and a CSR, then mTLS heartbeats, each agent on its own connection with its own
certificate), from several processes: an enrolment storm, then steady heartbeats at a 10 s
interval, on SQLite and on PostgreSQL, and a second replica over the same PostgreSQL.

Baselines measured in the same run: a bare grpc.aio echo server (mTLS) under the same
steady load, and one replica for the two-replica speed-up. The service is pinned to CPU 0,
the simulated agents to CPU 1 (a 2-core machine: the agents' own cost is real too).

Issue 20: after the unary steady state, the same nodes heartbeat on `Session` streams
(testbed/stream_fleet.py) for as long, and the server's CPU seconds per 1,000 heartbeats
are printed for both. CPU is sampled through the run and counted over the steady window
only (every node connected, every stream open), against the beats acknowledged in that
window: the handshakes of a fleet connecting are the connections' cost, not the beats'.
The bare echo server answers both kinds too, which gives the floor of the ratio that
gRPC itself sets. Then the scaling curve: the streamed run again at each size of
BENCH_CURVE (default 10,000, 20,000, 50,000 nodes), with the interval stretched so the
fleet sends 1,000 beats/s at every size (interval = nodes / 1,000 s): what holding more
streams costs each beat, which is what "flat" asks, and what two cores can carry (at a
10 s interval 50,000 nodes would be 5,000 beats/s, past one server core). One stream is
one descriptor in the process that holds it, and a process here may hold 20,000 with no
raising it, so where the largest size needs it the whole curve runs on PostgreSQL with as
many replicas as that size needs (the same number at every size); else on SQLite.

BENCH_CONFIGS (default sqlite,postgresql,postgresql-2-replicas) picks the configurations.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import inventory as ib  # noqa: E402  (bench/inventory.py: Server, echo server, helpers)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from nodeagent import tlsutil  # noqa: E402
from nodeagent.api import channels  # noqa: E402
from nodeagent.api.v1 import inventory_pb2 as ipb  # noqa: E402
from nodeagent.api.v1 import inventory_pb2_grpc  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from testbed.agent_process import free_port  # noqa: E402
from testbed.machines import build_machine  # noqa: E402
from testbed.postgres import Postgres  # noqa: E402
from testbed.stream_fleet import HASH, SimNode, StreamStats, stream_fleet  # noqa: E402
from testbed.variants import variant  # noqa: E402

NODES = int(os.environ.get("BENCH_NODES", "10000"))
PROCS = int(os.environ.get("BENCH_PROCS", "4"))
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "40"))
INTERVAL = 10.0
STORM_IN_FLIGHT = 32  # per agent process
CURVE = [int(n) for n in os.environ.get("BENCH_CURVE", "10000,20000,50000").split(",") if n]
CURVE_RATE = 1000.0  # beats/s the curve holds at every size
CURVE_SPARE = 2000  # descriptors a replica needs besides its streams (database, logs, pipes)
CONFIGS = os.environ.get("BENCH_CONFIGS", "sqlite,postgresql,postgresql-2-replicas").split(",")


class CpuSampler:
    """The servers' CPU seconds, sampled every 0.25 s, so a window can be cut afterwards."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples = [(time.time(), self._now())]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _now(self) -> float:
        return sum(ib.cpu_seconds(p) for p in self.pids)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append((time.time(), self._now()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.samples.append((time.time(), self._now()))

    def at(self, t: float) -> float:
        """CPU seconds at wall time `t`, interpolated between samples."""
        before = max((s for s in self.samples if s[0] <= t), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= t), default=self.samples[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0])


def per_1000(cpu: CpuSampler, results: list[dict[str, Any]]) -> float:
    """Server CPU seconds per 1,000 beats acknowledged in the window every process was
    steady in (connected, and not yet winding down)."""
    start = max(r["steady"][0] for r in results) + 0.5
    end = min(r["steady"][1] for r in results) - 0.5
    if end - start < 5:  # one process opened its streams after another had finished
        return float("nan")
    beats = sum(1 for r in results for t in r["acked"] if start <= t <= end)
    return (cpu.at(end) - cpu.at(start)) / max(beats, 1) * 1000


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _agent_proc(args: tuple[str, str, bytes, list[bytes], list[bytes], Any]) -> dict[str, Any]:
    """One process of simulated agents: enrol each on a fresh TLS connection."""
    boot, _mtls, ca, csrs_and_keys_pem, invs, token = args
    os.sched_setaffinity(0, ib.CLIENT_CPU)

    async def run() -> dict[str, Any]:
        ids: list[tuple[str, bytes, bytes]] = []
        queue = list(range(len(invs)))
        start = time.perf_counter()

        async def enrol_one() -> None:
            while queue:
                n = queue.pop()
                key_pem = csrs_and_keys_pem[n]
                key = load_key(key_pem)
                req = ipb.RegisterRequest.FromString(invs[n])
                req.token = token
                req.csr_pem = tlsutil.make_csr(key, "n").decode()
                async with channels.secure_aio_channel(boot, ca) as ch:  # an agent's own conn
                    resp = await inventory_pb2_grpc.InventoryServiceStub(ch).Register(
                        req, timeout=300
                    )
                ids.append((resp.node_id, resp.certificate_pem.encode(), key_pem))

        await asyncio.gather(*(enrol_one() for _ in range(STORM_IN_FLIGHT)))
        return {"enrol_s": time.perf_counter() - start, "ids": ids}

    return asyncio.run(run())


def _unary_proc(args: tuple[str, bytes, list[tuple[str, bytes, bytes]]]) -> dict[str, Any]:
    os.sched_setaffinity(0, ib.CLIENT_CPU)
    ib.many_files()
    address, ca, ids = args
    return asyncio.run(beat(address, ca, ids, STEADY_SECONDS))


def _stream_proc(
    args: tuple[list[str], bytes, list[tuple[str, bytes, bytes]], float, float],
) -> dict[str, Any]:
    """The same nodes on Session streams, spread over the replicas; misses are beats whose
    acknowledgement did not come."""
    os.sched_setaffinity(0, ib.CLIENT_CPU)
    ib.many_files()
    targets, ca, ids, interval, seconds = args
    stats = StreamStats()
    nodes = [SimNode(*i) for i in ids]
    opened = time.perf_counter()
    asyncio.run(stream_fleet(nodes, targets, ca, interval, seconds, stats, connect_first=True))
    return {
        "latencies": stats.latencies,
        "missed": stats.missed,
        "per": stats.per_replica(),
        "acked": stats.acked_times,
        "steady": (stats.steady_from, stats.steady_from + seconds),
        "open_s": stats.steady_from - (time.time() - (time.perf_counter() - opened)),
    }


async def beat(
    address: str, ca: bytes, ids: list[tuple[str, bytes, bytes]], seconds: float
) -> dict[str, Any]:
    """Connect every node (its own mTLS connection), then heartbeat each every INTERVAL
    (+-20 % jitter) for `seconds`: the steady-state latencies, ack times and window, and
    the connect time.
    """
    chans = [channels.secure_aio_channel(address, ca, cert, key) for _, cert, key in ids]
    gate = asyncio.Semaphore(64)  # per process: agents reconnecting after an outage spread too

    async def connect(ch: Any) -> None:
        async with gate:
            await asyncio.wait_for(ch.channel_ready(), 900)

    start = time.perf_counter()
    await asyncio.gather(*(connect(ch) for ch in chans))
    connect_s = time.perf_counter() - start
    latencies: list[float] = []
    acked: list[float] = []
    # stubs first: making 2,500 of them takes this process about a second, and beats
    # timed from each node's own start would all fall due at its end, a burst of ~1,000
    # in 0.2 s that the steady load is not (it was most of the p99, echo's and ours)
    stubs = [inventory_pb2_grpc.InventoryServiceStub(ch) for ch in chans]
    steady = (time.time(), time.time() + seconds)
    begin = time.perf_counter()
    end = begin + seconds

    async def node(stub: Any, node_id: str) -> None:
        req = ipb.HeartbeatRequest(node_id=node_id, phase="DISCOVERED", inventory_hash=HASH)
        await asyncio.sleep(begin + random.uniform(0, INTERVAL) - time.perf_counter())
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                await stub.Heartbeat(req, timeout=10)
                latencies.append((time.perf_counter() - t) * 1000)
                acked.append(time.time())
            except Exception:  # counted as a miss
                latencies.append(float("inf"))
            await asyncio.sleep(INTERVAL * random.uniform(0.8, 1.2))

    await asyncio.gather(*(node(stub, i[0]) for stub, i in zip(stubs, ids, strict=True)))
    for ch in chans:
        await ch.close()
    return {"latencies": latencies, "connect_s": connect_s, "acked": acked, "steady": steady}


def run_fleet(
    name: str,
    servers: list[ib.Server],
    token: str,
    keys: list[bytes],
    invs: list[bytes],
    unary: bool = True,
    interval: float = INTERVAL,
    seconds: float = STEADY_SECONDS,
) -> dict[str, Any]:
    """Split the nodes over PROCS agent processes (and over the replicas, round robin)."""
    chunks = []
    for p in range(PROCS):
        server = servers[p % len(servers)]
        idx = range(p, len(invs), PROCS)
        chunks.append(
            (
                f"127.0.0.1:{server.boot}",
                f"127.0.0.1:{server.port}",
                server.ca.pem,
                [keys[i] for i in idx],
                [invs[i] for i in idx],
                token,
            )
        )
    cpu = CpuSampler([s.proc.pid for s in servers])
    out: dict[str, Any] = {}
    try:
        with mp.get_context("fork").Pool(PROCS) as pool:
            wall = time.time()
            enrolled = pool.map(_agent_proc, chunks)
            ids = [i for r in enrolled for i in r["ids"]]
            out["enrol_s"] = max(r["enrol_s"] for r in enrolled)
            out["nodes"] = len(ids)
            if unary:  # the curve measures the stream alone
                results = pool.map(
                    _unary_proc,
                    [(chunks[p][1], servers[0].ca.pem, ids[p::PROCS]) for p in range(PROCS)],
                )
                lat = sorted(x for r in results for x in r["latencies"])
                ok = [x for x in lat if x != float("inf")]
                out |= {
                    "connect_s": max(r["connect_s"] for r in results),
                    "hb_p50": statistics.median(ok),
                    "hb_p99": ok[int(len(ok) * 0.99)],
                    "hb_missed": len(lat) - len(ok),
                    "hb_count": len(lat),
                    "cpu_per_1000": per_1000(cpu, results),
                }
            targets = [f"127.0.0.1:{s.port}" for s in servers]
            streamed = pool.map(
                _stream_proc,
                [
                    (targets, servers[0].ca.pem, ids[p::PROCS], interval, seconds)
                    for p in range(PROCS)
                ],
            )
    finally:
        cpu.close()
    out["server_cpu_pct"] = (cpu.samples[-1][1] - cpu.at(wall)) / (time.time() - wall) * 100
    slat = sorted(x for r in streamed for x in r["latencies"])
    out |= {
        "st_open_s": max(r["open_s"] for r in streamed),
        "st_p50": statistics.median(slat),
        "st_p99": slat[int(len(slat) * 0.99)],
        "st_missed": sum(r["missed"] for r in streamed),
        "st_count": len(slat),
        "st_cpu_per_1000": per_1000(cpu, streamed),
        "st_per_replica": sorted(sum((r["per"] for r in streamed), Counter()).values()),
        "server_rss_mb": sum(_rss_mb(s.proc.pid) for s in servers),
    }
    return out


def _rss_mb(pid: int) -> float:
    """Peak RSS of a server (VmHWM): the memory its connections and streams took."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir="/dev/shm"))
    pg = None
    results: dict[str, dict[str, Any]] = {}
    curve: dict[int, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    try:
        kinds = [
            discover(HostRoot(build_machine(m, tmp / m)))
            for m in ("dgx-h100", "oci-bm-gpu-h100-8", "cpu-node")
        ]
        print(f"preparing {NODES} agents ...", flush=True)
        keys = [tlsutil.key_pem(tlsutil.new_key()) for _ in range(NODES)]
        invs = [
            ipb.RegisterRequest(inventory=variant(kinds[n % 3], n)).SerializeToString()
            for n in range(NODES)
        ]
        runs: list[tuple[str, list[str]]] = [("sqlite", [f"sqlite:///{tmp / 'fleet.db'}"])]
        if os.geteuid() == 0 and shutil.which("runuser"):
            pg = Postgres().start()
            runs.append(("postgresql", [pg.new_database()]))
            db = pg.new_database()
            runs.append(("postgresql-2-replicas", [db, db]))
        else:
            print("PostgreSQL runs need root (runuser): only SQLite is measured", flush=True)
        for name, dbs in runs:
            if name not in CONFIGS:
                continue
            servers = [ib.Server(tmp / f"{name}-0", dbs[0])]
            if len(dbs) == 2:  # the second replica: same database, same CA
                servers.append(_replica(tmp / f"{name}-1", dbs[1], tmp / f"{name}-0"))
            token = _token(servers[0], NODES)
            print(
                f"{name}: enrolment storm of {NODES}, then {STEADY_SECONDS:.0f} s of "
                f"heartbeats every {INTERVAL:.0f} s ...",
                flush=True,
            )
            try:
                results[name] = run_fleet(name, servers, token, keys, invs)
            except Exception as exc:  # reported, and the other runs still measured
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name} failed: {failed[name]}", flush=True)
                continue
            finally:
                for s in servers:
                    s.stop()
            if name == "sqlite":
                results[name]["db_mb"] = sum(p.stat().st_size for p in tmp.glob("fleet.db*")) / 1e6
        echo = _echo_steady(tmp, keys)
        ib.many_files()
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        replicas = curve_replicas(CURVE, files)
        if replicas > 1 and pg is None:
            print("curve: more streams than one process may hold need PostgreSQL replicas")
            replicas = 1
        for size in CURVE:
            if -(-size // replicas) + CURVE_SPARE > files:
                failed[f"curve-{size}"] = (
                    f"{size} streams over {replicas} replica(s) need more than the {files} "
                    "descriptors a process may hold here (no CAP_SYS_RESOURCE to raise it)"
                )
                print(f"curve at {size}: {failed[f'curve-{size}']}", flush=True)
                continue
            where = "SQLite" if pg is None else f"PostgreSQL, {replicas} replica(s)"
            print(f"scaling curve: {size} nodes on streams ({where}) ...", flush=True)
            more = [tlsutil.key_pem(tlsutil.new_key()) for _ in range(max(0, size - NODES))]
            more_invs = [
                ipb.RegisterRequest(inventory=variant(kinds[n % 3], n)).SerializeToString()
                for n in range(NODES, size)
            ]
            # the inventory is told the interval its nodes keep, as an operator would set
            # it (it answers every beat with it): with the default 10 s it took nodes
            # beating every 50 s for unreachable, and back, on every sweep
            interval = size / CURVE_RATE
            told = f"heartbeat_interval_seconds = {round(interval)}\n"
            if pg is None:
                db = f"sqlite:///{tmp / f'c{size}.db'}"
                servers = [ib.Server(tmp / f"curve-{size}", db, told)]
            else:
                db = pg.new_database()
                servers = [ib.Server(tmp / f"curve-{size}-0", db, told)]
                servers += [
                    _replica(tmp / f"curve-{size}-{r}", db, tmp / f"curve-{size}-0", told)
                    for r in range(1, replicas)
                ]
            token = _token(servers[0], size)
            try:
                curve[size] = run_fleet(
                    f"curve-{size}",
                    servers,
                    token,
                    (keys + more)[:size],
                    (invs + more_invs)[:size],
                    unary=False,
                    interval=interval,
                    seconds=max(STEADY_SECONDS, 1.2 * interval),
                )
                curve[size] |= {"interval": interval, "replicas": len(servers), "where": where}
            except Exception as exc:
                failed[f"curve-{size}"] = f"{type(exc).__name__}: {exc}"
                print(f"curve at {size} failed: {failed[f'curve-{size}']}", flush=True)
            finally:
                for s in servers:
                    s.stop()
            del more, more_invs
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    _report(results, echo, curve, failed)
    return 1 if failed else 0


def curve_replicas(sizes: list[int], files: int) -> int:
    """Replicas the whole curve runs on: as many as the largest size needs for each process
    to hold its share of the streams (one descriptor each) within the descriptor limit, and
    the same number at every size, so the curve changes the fleet and nothing else."""
    per = max(files - CURVE_SPARE, 1)
    return max([1] + [-(-size // per) for size in sizes])


def _token(server: ib.Server, uses: int) -> str:
    cert, key = server.ca.issue_client("bench", "admin")
    with channels.secure_channel(f"127.0.0.1:{server.port}", server.ca.pem, cert, key) as ch:
        return str(
            inventory_pb2_grpc.InventoryServiceStub(ch)
            .CreateToken(ipb.CreateTokenRequest(max_uses=uses, ttl_seconds=7200), timeout=10)
            .secret
        )


def _replica(workdir: Path, database: str, first: Path, extra: str = "") -> ib.Server:
    """A second replica over the same database and CA (bench/inventory.Server, CA shared)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(first / "data" / name, data / name)
    return ib.Server(workdir, database, extra)


def _echo_steady(tmp: Path, keys: list[bytes]) -> dict[str, float]:
    """The same steady load (all nodes, one connection each, 10 s interval) on a bare echo."""
    from nodeagent.inventory import pki

    ca = pki.CertificateAuthority.load_or_create(tmp / "echo-ca.crt", tmp / "echo-ca.key")
    ids = []
    for n, key_pem in enumerate(keys):
        key = load_key(key_pem)
        ids.append(
            (
                f"n{n}",
                pki.cert_pem(ca.sign_csr(tlsutil.make_csr(key, "n"), f"n{n}", "node", 1)),
                key_pem,
            )
        )
    server_cert, server_key = ca.issue_server(["127.0.0.1"])
    paths = []
    for name, data in (("key", server_key), ("cert", server_cert), ("ca", ca.pem)):
        (tmp / f"echo-{name}").write_bytes(data)
        paths.append(str(tmp / f"echo-{name}"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", ib.ECHO_SERVER, *paths, str(port)],
        stdout=subprocess.PIPE,
        preexec_fn=ib.pinned(ib.SERVER_CPU),
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    cpu = CpuSampler([proc.pid])
    try:
        chunks = [ids[p::PROCS] for p in range(PROCS)]
        wall = time.time()
        address = f"127.0.0.1:{port}"
        with mp.get_context("fork").Pool(PROCS) as pool:
            results = pool.map(_unary_proc, [(address, ca.pem, c) for c in chunks])
            streamed = pool.map(
                _stream_proc,
                [([address], ca.pem, c, INTERVAL, STEADY_SECONDS) for c in chunks],
            )
    finally:
        cpu.close()
        proc.kill()
        proc.wait()
    ok = sorted(x for r in results for x in r["latencies"] if x != float("inf"))
    slat = sorted(x for r in streamed for x in r["latencies"])
    return {
        "hb_p50": statistics.median(ok),
        "hb_p99": ok[int(len(ok) * 0.99)],
        "st_p50": statistics.median(slat),
        "st_p99": slat[int(len(slat) * 0.99)],
        "cpu_per_1000": per_1000(cpu, results),
        "st_cpu_per_1000": per_1000(cpu, streamed),
        "server_cpu_pct": (cpu.samples[-1][1] - cpu.at(wall)) / (time.time() - wall) * 100,
    }


def _goal(name: str, value: float, unit: str, goal: float | None, better: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "goal": goal, "better": better}


def _report(
    results: dict[str, dict[str, Any]],
    echo: dict[str, float],
    curve: dict[int, dict[str, Any]],
    failed: dict[str, str],
) -> None:
    for name, why in failed.items():
        print(f"FAILED {name}: {why}")
    names = list(results)
    print(f"\n{'measure':<46}" + "".join(f"{n:>24}" for n in names) + f"{'bare echo':>12}")
    rows = [
        ("enrolment storm (s)", "enrol_s", "%.1f"),
        ("nodes enrolled", "nodes", "%d"),
        ("mTLS (re)connect of every node (s)", "connect_s", "%.1f"),
        ("unary heartbeat p50 (ms), 10 s interval", "hb_p50", "%.2f"),
        ("unary heartbeat p99 (ms)", "hb_p99", "%.2f"),
        ("unary heartbeats missed", "hb_missed", "%d"),
        ("unary: server CPU s per 1,000 heartbeats", "cpu_per_1000", "%.3f"),
        ("streamed heartbeat p50 (ms)", "st_p50", "%.2f"),
        ("streamed heartbeat p99 (ms)", "st_p99", "%.2f"),
        ("streamed heartbeats missed", "st_missed", "%d"),
        ("streamed: server CPU s per 1,000 heartbeats", "st_cpu_per_1000", "%.3f"),
        ("every stream opened, first beat answered (s)", "st_open_s", "%.1f"),
        ("server CPU, whole run (% of a core)", "server_cpu_pct", "%.0f"),
        ("server peak RSS, all replicas (MB)", "server_rss_mb", "%.0f"),
    ]
    print(
        f"(steady state: {NODES} nodes, one heartbeat each every {INTERVAL:.0f} s "
        f"= {NODES / INTERVAL:.0f}/s, {STEADY_SECONDS:.0f} s unary after all connected, "
        f"then {STEADY_SECONDS:.0f} s on streams)"
    )
    for label, key, fmt in rows:
        cells = "".join(f"{fmt % results[n][key]:>24}" for n in names)
        base = f"{fmt % echo[key]:>12}" if key in echo else f"{'':>12}"
        print(f"{label:<46}{cells}{base}")
    if "db_mb" in results.get("sqlite", {}):
        print(f"SQLite database size: {results['sqlite']['db_mb']:.0f} MB for {NODES} nodes")
    sqlite = results.get("sqlite", {})
    out = []
    floor = echo["st_cpu_per_1000"] / echo["cpu_per_1000"]
    print(f"\nratios (goal):\n  bare echo: streamed CPU / unary {floor:.2f} (gRPC's own floor)")
    for n, r in results.items():
        p50 = r["hb_p50"] / sqlite["hb_p50"] if sqlite else float("nan")
        p99 = r["hb_p99"] / echo["hb_p99"]
        cost = r["st_cpu_per_1000"] / r["cpu_per_1000"]
        print(
            f"  {n}: unary p50 / SQLite's {p50:.2f} (<= 2), unary p99 / echo's {p99:.2f} "
            f"(<= 2), streamed p99 / echo's {r['st_p99'] / echo['hb_p99']:.2f}, "
            f"streamed CPU / unary {cost:.2f} (<= 0.5)"
        )
        if len(r["st_per_replica"]) > 1:
            print(f"  {n}: streams per replica {r['st_per_replica']}")
        out += [
            _goal(f"{n}_enrol_{NODES}", round(r["enrol_s"], 1), "s", 60, "lower"),
            _goal(f"{n}_heartbeats_missed", r["hb_missed"] + r["st_missed"], "", 0, "lower"),
            _goal(f"{n}_heartbeat_p50", round(r["hb_p50"], 2), "ms", None, "lower"),
            _goal(f"{n}_heartbeat_p50_over_sqlite", round(p50, 2), "x", 2, "lower"),
            _goal(f"{n}_heartbeat_p99", round(r["hb_p99"], 2), "ms", None, "lower"),
            _goal(f"{n}_heartbeat_p99_over_echo", round(p99, 2), "x", 2, "lower"),
            _goal(f"{n}_stream_p99", round(r["st_p99"], 2), "ms", None, "lower"),
            _goal(f"{n}_unary_cpu_per_1000", round(r["cpu_per_1000"], 3), "s", None, "lower"),
            _goal(f"{n}_stream_cpu_per_1000", round(r["st_cpu_per_1000"], 3), "s", None, "lower"),
            _goal(f"{n}_stream_cpu_over_unary", round(cost, 2), "x", 0.5, "lower"),
        ]
    out.append(_goal("echo_heartbeat_p99", round(echo["hb_p99"], 2), "ms", None, "lower"))
    out.append(_goal("echo_stream_cpu_over_unary", round(floor, 2), "x", None, "lower"))
    if curve:
        where = next(iter(curve.values()))["where"]
        print(
            f"\nscaling curve, streamed heartbeats on {where}, {CURVE_RATE:.0f} beats/s at "
            "every size (interval = nodes / 1,000 s; CPU and RSS of all replicas):"
        )
        print(
            f"{'nodes':>8}{'interval':>10}{'enrol (s)':>12}{'open (s)':>10}{'p50 ms':>10}"
            f"{'p99 ms':>10}{'missed':>8}{'CPU s/1,000':>14}{'RSS MB':>9} {'streams/replica':>17}"
        )
        first = None
        for size, r in curve.items():
            first = first or r["st_cpu_per_1000"]
            print(
                f"{size:>8}{r['interval']:>9.0f}s{r['enrol_s']:>12.1f}{r['st_open_s']:>10.1f}"
                f"{r['st_p50']:>10.2f}{r['st_p99']:>10.2f}{r['st_missed']:>8}"
                f"{r['st_cpu_per_1000']:>14.3f}{r['server_rss_mb']:>9.0f} "
                f"{'/'.join(str(n) for n in r['st_per_replica']):>17}"
            )
            out.append(
                _goal(
                    f"curve_{size}_stream_cpu_per_1000",
                    round(r["st_cpu_per_1000"], 3),
                    "s",
                    None,
                    "lower",
                )
            )
            out.append(_goal(f"curve_{size}_missed", r["st_missed"], "", 0, "lower"))
        last = list(curve.values())[-1]["st_cpu_per_1000"]
        print(f"CPU per heartbeat, largest / smallest size: {last / first:.2f} (flat: ~1)")
        out.append(_goal("curve_cpu_flatness", round(last / first, 2), "x", 1.2, "lower"))
    out += [_goal(f"{name}_completed", 0, "", 1, "higher") for name in failed]
    print(json.dumps({"bench": "fleet", "results": out}))


def in_own_netns() -> int | None:
    """Run this benchmark again inside a network namespace of its own, whose ephemeral port
    range is 1024-65535: every simulated agent dials the one inventory address from
    127.0.0.1, and the host's usual range (32768-60999) has ports for 28,232 of them, not
    50,000. The range is the namespace's own; the host's is left as it is. None when that
    cannot be done (not root, no `ip`): the curve then stops where the ports run out."""
    if os.environ.get("BENCH_FLEET_NETNS") or os.geteuid() != 0 or not shutil.which("ip"):
        return None
    name = f"benchfleet-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        env = os.environ | {"BENCH_FLEET_NETNS": name}
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, *sys.argv], env=env, check=False
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    rc = in_own_netns()
    sys.exit(main() if rc is None else rc)
