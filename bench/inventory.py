"""Inventory service benchmark: enrolment of 10,000 nodes and heartbeat throughput over
real gRPC with mTLS on loopback, on SQLite and on PostgreSQL, beside a bare grpc.aio
echo server measured the same way in the same run.

The service runs pinned to CPU 0 (one server core); this load generator runs on CPU 1.
Goals (inventory issue): enrol 10,000 nodes in < 60 s; >= 3,000 heartbeats/s with p99
< 50 ms on one core; heartbeat throughput >= 0.6 x the echo server's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent import tlsutil  # noqa: E402
from nodeagent.api import channels  # noqa: E402
from nodeagent.api.v1 import inventory_pb2 as ipb  # noqa: E402
from nodeagent.api.v1 import inventory_pb2_grpc  # noqa: E402
from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.inventory import pki  # noqa: E402
from testbed.agent_process import free_port  # noqa: E402
from testbed.machines import build_machine  # noqa: E402
from testbed.postgres import Postgres  # noqa: E402
from testbed.variants import variant  # noqa: E402

NODES = int(os.environ.get("BENCH_NODES", "10000"))
HB_SECONDS = float(os.environ.get("BENCH_HB_SECONDS", "10"))
HB_IDENTITIES = 256
IN_FLIGHT = 64
SERVER_CPU, CLIENT_CPU = {0}, {1} if os.cpu_count() and os.cpu_count() > 1 else {0}  # type: ignore[operator]

ECHO_SERVER = r"""
import asyncio, sys, grpc
from nodeagent.api.v1 import inventory_pb2 as ipb
key, cert, ca = (open(p, "rb").read() for p in sys.argv[1:4])
port = sys.argv[4]
async def beat(request, context):
    return ipb.HeartbeatResponse(next_interval_seconds=10)
async def session(requests, context):  # acknowledged bare, quiet beats not (as the service's)
    while (req := await context.read()) is not grpc.aio.EOF:
        if not req.quiet:
            await context.write(ipb.SessionResponse(acknowledged=req.sequence))
async def main():
    # the service's own transport settings: no BDP probing, no keepalive pings of its own
    # (a timer per connection), a deep queue of new calls
    server = grpc.aio.server(options=[("grpc.http2.bdp_probe", 0),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.server.max_pending_requests", 100000),
        ("grpc.server.max_pending_requests_hard_limit", 100000)])
    handler = grpc.method_handlers_generic_handler("nodeagent.v1.InventoryService", {
        "Heartbeat": grpc.unary_unary_rpc_method_handler(
            beat, request_deserializer=ipb.HeartbeatRequest.FromString,
            response_serializer=ipb.HeartbeatResponse.SerializeToString),
        "Session": grpc.stream_stream_rpc_method_handler(
            session, request_deserializer=ipb.SessionRequest.FromString,
            response_serializer=ipb.SessionResponse.SerializeToString)})
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                        require_client_auth=True)
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def many_files() -> None:
    """One descriptor per agent connection: 50,000 streams need more than the usual 1,024
    or 20,000 (a packaged inventory's unit sets LimitNOFILE for the same reason)."""
    import resource

    want = 262144
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):  # not root: what the hard limit allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(cpus: set[int]) -> Any:
    def pin() -> None:
        os.sched_setaffinity(0, cpus)
        many_files()

    return pin


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, workdir: Path, database: str, extra: str = "") -> None:
        """`extra`: more lines of inventory.toml."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.boot = free_port(), free_port()
        config = workdir / "inventory.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.port}"\n'
            f'bootstrap_listen = "127.0.0.1:{self.boot}"\n'
            f'data_dir = "{workdir / "data"}"\ndatabase = "{database}"\n'
            'log_level = "warning"\nmetrics_listen = ""\n' + extra
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
            preexec_fn=pinned(SERVER_CPU),
        )
        data = workdir / "data"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.ca = pki.CertificateAuthority.load_or_create(
                    data / "ca.crt", data / "ca.key", create=False
                )
                tlsutil.fetch_pinned_ca(f"127.0.0.1:{self.boot}", self.ca.pin, timeout=1)
                break
            except (OSError, ValueError):
                time.sleep(0.2)
        else:
            raise SystemExit((workdir / "log").read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


async def enrol_all(
    server: Server, requests: list[ipb.RegisterRequest], keep: int
) -> tuple[float, list[tuple[str, bytes, bytes]]]:
    queue: asyncio.Queue[tuple[int, ipb.RegisterRequest]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    kept: list[tuple[str, bytes, bytes]] = []
    keys: dict[int, bytes] = {}
    address = f"127.0.0.1:{server.boot}"
    chans = [channels.secure_aio_channel(address, server.ca.pem) for _ in range(8)]

    async def worker(i: int) -> None:
        stub = inventory_pb2_grpc.InventoryServiceStub(chans[i % len(chans)])
        while not queue.empty():
            n, req = queue.get_nowait()
            resp = await stub.Register(req, timeout=120)
            if n < keep:
                kept.append((resp.node_id, resp.certificate_pem.encode(), keys_pem[n]))

    keys_pem = KEYS
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
    took = time.perf_counter() - start
    for ch in chans:
        await ch.close()
    del keys
    return took, kept


async def heartbeats(
    address: str, ca: bytes, identities: list[tuple[str, bytes, bytes]], seconds: float, pid: int
) -> tuple[float, float, float, float]:
    """(achieved heartbeats/s, p50 ms, p99 ms, server CPU in cores over the timed window)."""
    chans = [channels.secure_aio_channel(address, ca, cert, key) for _, cert, key in identities]
    stubs = [inventory_pb2_grpc.InventoryServiceStub(c) for c in chans]
    reqs = [
        ipb.HeartbeatRequest(node_id=node_id, phase="READY", inventory_hash="h")
        for node_id, _, _ in identities
    ]
    for stub, req in zip(stubs, reqs, strict=True):  # connect (mTLS handshakes) before timing
        await stub.Heartbeat(req, timeout=30)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        k = i
        while time.perf_counter() < end:
            t = time.perf_counter()
            await stubs[k % len(stubs)].Heartbeat(reqs[k % len(reqs)], timeout=10)
            latencies.append((time.perf_counter() - t) * 1000)
            k += IN_FLIGHT

    start, cpu0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
    took, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu0
    for ch in chans:
        await ch.close()
    latencies.sort()
    return (
        len(latencies) / took,
        statistics.median(latencies),
        latencies[int(len(latencies) * 0.99)],
        cpu / took,
    )


def echo_baseline(
    workdir: Path,
    ca: pki.CertificateAuthority,
    identities: list[tuple[str, bytes, bytes]],
) -> tuple[float, float, float, float]:
    cert, key = ca.issue_server(["127.0.0.1"])
    paths = []
    for name, data in (("key", key), ("cert", cert), ("ca", ca.pem)):
        (workdir / name).write_bytes(data)
        paths.append(str(workdir / name))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, *paths, str(port)],
        stdout=subprocess.PIPE,
        preexec_fn=pinned(SERVER_CPU),
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        return asyncio.run(
            heartbeats(f"127.0.0.1:{port}", ca.pem, identities, HB_SECONDS, proc.pid)
        )
    finally:
        proc.kill()
        proc.wait()


KEYS: list[bytes] = []


def main() -> int:
    os.sched_setaffinity(0, CLIENT_CPU)
    tmp = Path(tempfile.mkdtemp(prefix="bench-inventory-", dir="/dev/shm"))
    pg = None
    try:
        kinds = [
            discover(HostRoot(build_machine(m, tmp / m)))
            for m in ("dgx-h100", "oci-bm-gpu-h100-8", "cpu-node")
        ]
        print(f"preparing {NODES} keys, CSRs and inventories ...", flush=True)
        requests = []
        for n in range(NODES):
            key = tlsutil.new_key()
            KEYS.append(tlsutil.key_pem(key))
            requests.append(
                ipb.RegisterRequest(
                    csr_pem=tlsutil.make_csr(key, "n").decode(), inventory=variant(kinds[n % 3], n)
                )
            )
        results: dict[str, dict[str, float]] = {}
        backends = [("sqlite", f"sqlite:///{tmp / 'inv.db'}")]
        if os.geteuid() == 0 and shutil.which("runuser"):
            pg = Postgres().start()
            backends.append(("postgresql", pg.new_database()))
        echo: tuple[float, float, float, float] | None = None
        for name, url in backends:
            server = Server(tmp / name, url)
            admin_cert, admin_key = server.ca.issue_client("bench", "admin")
            with channels.secure_channel(
                f"127.0.0.1:{server.port}", server.ca.pem, admin_cert, admin_key
            ) as ch:
                secret = (
                    inventory_pb2_grpc.InventoryServiceStub(ch)
                    .CreateToken(
                        ipb.CreateTokenRequest(max_uses=NODES, ttl_seconds=3600), timeout=10
                    )
                    .secret
                )
            for req in requests:
                req.token = secret
            cpu0 = cpu_seconds(server.proc.pid)
            enrol_s, identities = asyncio.run(enrol_all(server, requests, HB_IDENTITIES))
            enrol_cpu = cpu_seconds(server.proc.pid) - cpu0
            rps, p50, p99, hb_cpu = asyncio.run(
                heartbeats(
                    f"127.0.0.1:{server.port}",
                    server.ca.pem,
                    identities,
                    HB_SECONDS,
                    server.proc.pid,
                )
            )
            if echo is None:
                echo = echo_baseline(tmp, server.ca, identities)
            server.stop()
            db_size = (
                sum(f.stat().st_size for f in (tmp).glob("inv.db*"))
                if name == "sqlite"
                else float("nan")
            )
            results[name] = {
                "enrol_s": enrol_s,
                "enrol_cpu_s": enrol_cpu,
                "hb_rps": rps,
                "hb_p50": p50,
                "hb_p99": p99,
                "hb_cpu": hb_cpu,
                "hb_per_core": rps / max(hb_cpu, 1e-9),
                "db_mb": db_size / 1e6,
            }
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    assert echo is not None
    print(f"\n{'measure':<52}" + "".join(f"{n:>14}" for n in results) + "   goal")
    rows = [
        (f"enrolment of {NODES} nodes (s)", "enrol_s", "< 60"),
        ("  server CPU during enrolment (s)", "enrol_cpu_s", ""),
        (f"heartbeats/s achieved, {IN_FLIGHT} in flight", "hb_rps", ""),
        ("  heartbeat p50 (ms)", "hb_p50", ""),
        ("  heartbeat p99 (ms)", "hb_p99", "< 50"),
        ("  server CPU during heartbeats (cores)", "hb_cpu", ""),
        ("heartbeats/s per server core (achieved / CPU)", "hb_per_core", ">= 3000"),
        ("SQLite database size (MB)", "db_mb", ""),
    ]
    for label, column, goal in rows:
        values = "".join(f"{r[column]:>14.2f}" for r in results.values())
        print(f"{label:<52}{values}   {goal}")
    echo_per_core = echo[0] / max(echo[3], 1e-9)
    print(
        f"bare grpc.aio echo (mTLS): {echo[0]:.0f}/s achieved at {echo[3]:.2f} cores = "
        f"{echo_per_core:.0f}/s per core; p50 {echo[1]:.2f} ms, p99 {echo[2]:.2f} ms"
    )
    print(
        "(this Python load generator on the other core saturates first; per-core figures\n"
        " divide what the server achieved by the CPU it used)"
    )
    for name, r in results.items():
        print(
            f"ratio to echo per core ({name}): {r['hb_per_core'] / echo_per_core:.2f}"
            "   (goal >= 0.6)"
        )
    out = []
    for name, r in results.items():
        out += [
            {
                "name": f"{name}_enrol_{NODES}",
                "value": round(r["enrol_s"], 2),
                "unit": "s",
                "goal": 60,
                "better": "lower",
            },
            {
                "name": f"{name}_heartbeats_per_s_per_core",
                "value": round(r["hb_per_core"]),
                "unit": "1/s",
                "goal": 3000,
                "better": "higher",
            },
            {
                "name": f"{name}_heartbeats_per_s_achieved",
                "value": round(r["hb_rps"]),
                "unit": "1/s",
                "goal": None,
                "better": "higher",
            },
            {
                "name": f"{name}_heartbeat_p99",
                "value": round(r["hb_p99"], 2),
                "unit": "ms",
                "goal": 50,
                "better": "lower",
            },
            {
                "name": f"{name}_ratio_to_echo",
                "value": round(r["hb_per_core"] / echo_per_core, 2),
                "unit": "x",
                "goal": 0.6,
                "better": "higher",
            },
        ]
    out.append(
        {
            "name": "echo_heartbeats_per_s_per_core",
            "value": round(echo_per_core),
            "unit": "1/s",
            "goal": None,
            "better": "higher",
        }
    )
    print(json.dumps({"bench": "inventory", "results": out}))
    return 0


if __name__ == "__main__":
    grpc_verbosity = os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
