"""Fleet-scale proof: 10,000 simulated agents speaking the real protocol (TLS enrolment with
a token and a CSR, then mTLS heartbeats, each agent on its own connection with its own
certificate), from several processes: an enrolment storm, then steady heartbeats at a 10 s
interval, on SQLite and on PostgreSQL, and a second replica over the same PostgreSQL.

Baselines measured in the same run: a bare grpc.aio echo server (mTLS) under the same
steady load, and one replica for the two-replica speed-up. The service is pinned to CPU 0,
the simulated agents to CPU 1 (a 2-core machine: the agents' own cost is real too).

Issue 20: after the unary steady state, the same nodes heartbeat on `Session` streams
(testbed/stream_fleet.py) for as long, and the server's CPU seconds per 1,000 heartbeats
are printed for both; then the scaling curve: the streamed run again at each size of
BENCH_CURVE (default 10,000, 20,000, 50,000 nodes) on SQLite, CPU per heartbeat at each.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
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
from testbed.stream_fleet import SimNode, StreamStats, stream_fleet  # noqa: E402
from testbed.variants import variant  # noqa: E402

NODES = int(os.environ.get("BENCH_NODES", "10000"))
PROCS = int(os.environ.get("BENCH_PROCS", "4"))
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "40"))
INTERVAL = 10.0
STORM_IN_FLIGHT = 32  # per agent process
CURVE = [int(n) for n in os.environ.get("BENCH_CURVE", "10000,20000,50000").split(",") if n]


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
    address, ca, ids = args
    lat, connect_s = asyncio.run(beat(address, ca, ids, STEADY_SECONDS))
    return {"latencies": lat, "connect_s": connect_s}


def _stream_proc(args: tuple[list[str], bytes, list[tuple[str, bytes, bytes]]]) -> dict[str, Any]:
    """The same nodes on Session streams, spread over the replicas; misses are beats whose
    acknowledgement did not come."""
    os.sched_setaffinity(0, ib.CLIENT_CPU)
    targets, ca, ids = args
    stats = StreamStats()
    nodes = [SimNode(*i) for i in ids]
    asyncio.run(stream_fleet(nodes, targets, ca, INTERVAL, STEADY_SECONDS, stats))
    return {"latencies": stats.latencies, "missed": stats.missed, "per": stats.per_replica()}


async def beat(
    address: str, ca: bytes, ids: list[tuple[str, bytes, bytes]], seconds: float
) -> tuple[list[float], float]:
    """Connect every node (its own mTLS connection), then heartbeat each every INTERVAL
    (+-20 % jitter) for `seconds`. Returns the steady-state latencies and the connect time.
    """
    chans = [channels.secure_aio_channel(address, ca, cert, key) for _, cert, key in ids]
    gate = asyncio.Semaphore(256)  # agents reconnecting after an outage spread out too

    async def connect(ch: Any) -> None:
        async with gate:
            await asyncio.wait_for(ch.channel_ready(), 120)

    start = time.perf_counter()
    await asyncio.gather(*(connect(ch) for ch in chans))
    connect_s = time.perf_counter() - start
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def node(ch: Any, node_id: str) -> None:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        req = ipb.HeartbeatRequest(node_id=node_id, phase="DISCOVERED", inventory_hash="h")
        await asyncio.sleep(random.uniform(0, INTERVAL))
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                await stub.Heartbeat(req, timeout=10)
                latencies.append((time.perf_counter() - t) * 1000)
            except Exception:  # counted as a miss
                latencies.append(float("inf"))
            await asyncio.sleep(INTERVAL * random.uniform(0.8, 1.2))

    await asyncio.gather(*(node(ch, i[0]) for ch, i in zip(chans, ids, strict=True)))
    for ch in chans:
        await ch.close()
    return latencies, connect_s


def run_fleet(
    name: str,
    servers: list[ib.Server],
    token: str,
    keys: list[bytes],
    invs: list[bytes],
    unary: bool = True,
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

    def cpu() -> float:
        return sum(ib.cpu_seconds(s.proc.pid) for s in servers)

    out: dict[str, Any] = {}
    with mp.get_context("fork").Pool(PROCS) as pool:
        cpu0, wall = cpu(), time.perf_counter()
        enrolled = pool.map(_agent_proc, chunks)
        ids = [i for r in enrolled for i in r["ids"]]
        out["enrol_s"] = max(r["enrol_s"] for r in enrolled)
        out["nodes"] = len(ids)
        if unary:  # the curve measures the stream alone
            cpu1 = cpu()
            results = pool.map(
                _unary_proc,
                [(chunks[p][1], servers[0].ca.pem, ids[p::PROCS]) for p in range(PROCS)],
            )
            cpu_s = cpu() - cpu1
            lat = sorted(x for r in results for x in r["latencies"])
            ok = [x for x in lat if x != float("inf")]
            out |= {
                "connect_s": max(r["connect_s"] for r in results),
                "hb_p50": statistics.median(ok),
                "hb_p99": ok[int(len(ok) * 0.99)],
                "hb_missed": len(lat) - len(ok),
                "hb_count": len(lat),
                "cpu_per_1000": cpu_s / max(len(ok), 1) * 1000,
            }
        targets = [f"127.0.0.1:{s.port}" for s in servers]
        cpu1 = cpu()
        streamed = pool.map(
            _stream_proc, [(targets, servers[0].ca.pem, ids[p::PROCS]) for p in range(PROCS)]
        )
        cpu_s = cpu() - cpu1
        out["server_cpu_pct"] = (cpu() - cpu0) / (time.perf_counter() - wall) * 100
    slat = sorted(x for r in streamed for x in r["latencies"])
    out |= {
        "st_p50": statistics.median(slat),
        "st_p99": slat[int(len(slat) * 0.99)],
        "st_missed": sum(r["missed"] for r in streamed),
        "st_count": len(slat),
        "st_cpu_per_1000": cpu_s / max(len(slat), 1) * 1000,
        "st_per_replica": sorted(sum((r["per"] for r in streamed), Counter()).values()),
    }
    return out


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir="/dev/shm"))
    pg = None
    results: dict[str, dict[str, Any]] = {}
    curve: dict[int, dict[str, Any]] = {}
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
        for name, dbs in runs:
            servers = [ib.Server(tmp / f"{name}-0", dbs[0])]
            if len(dbs) == 2:  # the second replica: same database, same CA
                servers.append(_replica(tmp / f"{name}-1", dbs[1], tmp / f"{name}-0"))
            token = _token(servers[0], NODES)
            print(
                f"{name}: enrolment storm of {NODES}, then {STEADY_SECONDS:.0f} s of "
                f"heartbeats every {INTERVAL:.0f} s ...",
                flush=True,
            )
            results[name] = run_fleet(name, servers, token, keys, invs)
            for s in servers:
                s.stop()
            if name == "sqlite":
                results[name]["db_mb"] = sum(p.stat().st_size for p in tmp.glob("fleet.db*")) / 1e6
        echo = _echo_steady(tmp, keys)
        for size in CURVE:
            print(f"scaling curve: {size} nodes on streams (SQLite) ...", flush=True)
            more = [tlsutil.key_pem(tlsutil.new_key()) for _ in range(max(0, size - NODES))]
            more_invs = [
                ipb.RegisterRequest(inventory=variant(kinds[n % 3], n)).SerializeToString()
                for n in range(NODES, size)
            ]
            server = ib.Server(tmp / f"curve-{size}", f"sqlite:///{tmp / f'curve-{size}.db'}")
            token = _token(server, size)
            curve[size] = run_fleet(
                f"curve-{size}",
                [server],
                token,
                (keys + more)[:size],
                (invs + more_invs)[:size],
                unary=False,
            )
            server.stop()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    _report(results, echo, curve)
    return 0


def _token(server: ib.Server, uses: int) -> str:
    cert, key = server.ca.issue_client("bench", "admin")
    with channels.secure_channel(f"127.0.0.1:{server.port}", server.ca.pem, cert, key) as ch:
        return str(
            inventory_pb2_grpc.InventoryServiceStub(ch)
            .CreateToken(ipb.CreateTokenRequest(max_uses=uses, ttl_seconds=7200), timeout=10)
            .secret
        )


def _replica(workdir: Path, database: str, first: Path) -> ib.Server:
    """A second replica over the same database and CA (bench/inventory.Server, CA shared)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(first / "data" / name, data / name)
    return ib.Server(workdir, database)


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
    try:
        chunks = [ids[p::PROCS] for p in range(PROCS)]
        cpu0, wall = ib.cpu_seconds(proc.pid), time.perf_counter()
        with mp.get_context("fork").Pool(PROCS) as pool:
            lats = pool.map(_echo_proc, [(f"127.0.0.1:{port}", ca.pem, c) for c in chunks])
        cpu = (ib.cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - wall) * 100
    finally:
        proc.kill()
        proc.wait()
    ok = sorted(x for lat in lats for x in lat if x != float("inf"))
    return {
        "hb_p50": statistics.median(ok),
        "hb_p99": ok[int(len(ok) * 0.99)],
        "server_cpu_pct": cpu,
    }


def _echo_proc(args: tuple[str, bytes, list[tuple[str, bytes, bytes]]]) -> list[float]:
    os.sched_setaffinity(0, ib.CLIENT_CPU)
    address, ca, ids = args
    return asyncio.run(beat(address, ca, ids, STEADY_SECONDS))[0]


def _goal(name: str, value: float, unit: str, goal: float | None, better: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "goal": goal, "better": better}


def _report(
    results: dict[str, dict[str, Any]], echo: dict[str, float], curve: dict[int, dict[str, Any]]
) -> None:
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
        ("server CPU, whole run (% of a core)", "server_cpu_pct", "%.0f"),
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
    sqlite = results["sqlite"]
    out = []
    print("\nratios (goal):")
    for n, r in results.items():
        p50 = r["hb_p50"] / sqlite["hb_p50"]
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
    if curve:
        print("\nscaling curve, streamed heartbeats on SQLite (10 s interval):")
        print(
            f"{'nodes':>8}{'enrol (s)':>12}{'p50 ms':>10}{'p99 ms':>10}{'missed':>8}"
            f"{'CPU s/1,000':>14}"
        )
        first = None
        for size, r in curve.items():
            first = first or r["st_cpu_per_1000"]
            print(
                f"{size:>8}{r['enrol_s']:>12.1f}{r['st_p50']:>10.2f}{r['st_p99']:>10.2f}"
                f"{r['st_missed']:>8}{r['st_cpu_per_1000']:>14.3f}"
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
    print(json.dumps({"bench": "fleet", "results": out}))


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
