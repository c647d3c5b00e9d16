"""The real daemon, started as a subprocess on a fixture root and driven over its socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nodeagent.api.v1 import agent_pb2
from testbed.agent_process import AgentProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent(machine_root: Callable[..., Path], scratch: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(scratch, machine_root("dgx-h100"))
    proc.start()
    yield proc
    proc.close()


def _metrics(agent: AgentProcess) -> str:
    url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def test_rpcs_health_and_reflection(agent: AgentProcess) -> None:
    with agent.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert (
            health.Check(
                health_pb2.HealthCheckRequest(service="nodeagent.v1.NodeAgent"), timeout=5
            ).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        services = {s.name for s in reply.list_services_response.service}
        assert {"nodeagent.v1.NodeAgent", "grpc.health.v1.Health"} <= services

        stub = agent.stub(ch)
        status = stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
        assert status.phase == "DISCOVERED" and status.version
        assert {c.name for c in status.collectors} >= {"gpu", "rdma", "nvme"}
        assert status.config["api.socket"] == agent.socket_path
        cached = stub.GetInventory(agent_pb2.GetInventoryRequest(), timeout=5)
        assert len(cached.inventory.gpus) == 8 and len(cached.inventory_hash) == 64
        fresh = stub.GetInventory(agent_pb2.GetInventoryRequest(refresh=True), timeout=30)
        assert fresh.inventory_hash == cached.inventory_hash, "same hardware, same hash"
        assert fresh.discovered_at.ToNanoseconds() > cached.discovered_at.ToNanoseconds()
    mode = os.stat(agent.socket_path).st_mode & 0o777
    assert mode == 0o600 and os.stat(Path(agent.socket_path).parent).st_mode & 0o777 == 0o700


def test_metrics_pass_promtool(agent: AgentProcess) -> None:
    text = _metrics(agent)
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, text=True, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert text.count("nodeagent_gpu_temperature_celsius{") == 8
    assert 'nodeagent_gpu_nvlinks{gpu="0",state="active"} 18.0' in text
    assert 'nodeagent_rdma_port_state{device="mlx5_0",port="1"} 4.0' in text
    assert 'nodeagent_rdma_port_rate_bytes_per_second{device="mlx5_0",port="1"} 5e+10' in text
    assert "nodeagent_rdma_port_symbol_errors_total{" in text
    assert "nodeagent_nvme_namespace_capacity_bytes{" in text
    assert 'nodeagent_collector_success{collector="gpu"} 1.0' in text


def test_watch_events_sees_hotplug(agent: AgentProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a network device to cause a hotplug event needs root")
    name = f"natst{os.getpid() % 10000}"
    received: list[agent_pb2.AgentEvent] = []
    with agent.channel() as ch:
        stream = agent.stub(ch).WatchEvents(agent_pb2.WatchEventsRequest(kinds=["hotplug"]))

        def read() -> None:
            for event in stream:
                received.append(event)
                if event.device in (name, f"{name}p"):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)
        subprocess.run(
            ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
        )
        try:
            reader.join(15)
        finally:
            subprocess.run(["ip", "link", "del", name], check=False)
            stream.cancel()
    assert any(e.device in (name, f"{name}p") and e.message == "net add" for e in received)


def test_sighup_reloads_and_a_bad_config_keeps_the_running_one(agent: AgentProcess) -> None:
    good = agent.config_path.read_text()
    agent.config_path.write_text(good + "\nbogus_key = 1\n")
    agent.send(signal.SIGHUP)
    time.sleep(1)
    assert "reload refused" in agent.log() and "bogus_key" in agent.log()
    agent.config_path.write_text(good.replace("coalesce_seconds = 0.2", "coalesce_seconds = 0.3"))
    agent.send(signal.SIGHUP)
    time.sleep(1)
    assert "configuration reloaded" in agent.log()
    with agent.channel() as ch:
        status = agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
    assert status.config["watch.coalesce_seconds"] == "0.3"


def test_sigterm_drains_and_stops_cleanly(agent: AgentProcess) -> None:
    ch = agent.channel()
    stream = agent.stub(ch).WatchEvents(agent_pb2.WatchEventsRequest())
    ended = threading.Event()

    def read() -> None:
        for _ in stream:
            pass
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.3)
    assert agent.stop(signal.SIGTERM) == 0
    agent.wait_message("STOPPING=1")
    assert ended.wait(5), "open streams end when the agent stops"
    ch.close()
    assert not os.path.exists(agent.socket_path)
    state = json.loads((agent.workdir / "state" / "state.json").read_text())
    assert state["phase"] == "DISCOVERED"


def test_kill9_and_restart_keeps_state(machine_root: Callable[..., Path], scratch: Path) -> None:
    first = AgentProcess(scratch, machine_root("dgx-h100")).start()
    state_path = scratch / "state" / "state.json"
    before = json.loads(state_path.read_text())
    first.stop(signal.SIGKILL)
    first.close()
    assert os.path.exists(first.socket_path), "kill -9 leaves a stale socket behind"
    second = AgentProcess(scratch, machine_root("dgx-h100")).start()
    try:
        after = json.loads(state_path.read_text())
        assert after["starts"] == before["starts"] + 1
        assert after["inventory_hash"] == before["inventory_hash"]
        with second.channel() as ch:
            assert second.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5).phase
    finally:
        second.close()


def test_watchdog_pings(machine_root: Callable[..., Path], scratch: Path) -> None:
    proc = AgentProcess(scratch, machine_root("cpu-node"), env={"WATCHDOG_USEC": "400000"})
    proc.start()
    try:
        proc.wait_message("WATCHDOG=1", timeout=5)
    finally:
        proc.close()


# --- bad input -------------------------------------------------------------------------------


def test_oversized_and_unknown_requests(agent: AgentProcess) -> None:
    with agent.channel() as ch:
        huge = ch.unary_unary(
            "/nodeagent.v1.NodeAgent/GetInventory",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            huge(b"\x0a" + b"\xff" * (1 << 20), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        unknown = ch.unary_unary(
            "/nodeagent.v1.NodeAgent/Reboot",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            unknown(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        garbage = ch.unary_unary(
            "/nodeagent.v1.NodeAgent/GetStatus",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            garbage(b"\xff\xff\xff", timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            list(
                agent.stub(ch).WatchEvents(
                    agent_pb2.WatchEventsRequest(kinds=["nonsense"]), timeout=5
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the daemon is still fine
        assert agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5).phase


def test_hundred_concurrent_clients_and_vanishing_watchers(agent: AgentProcess) -> None:
    def client(i: int) -> int:
        with agent.channel() as ch:
            stub = agent.stub(ch)
            if i % 4 == 0:  # a watcher that disappears mid-stream
                stream = stub.WatchEvents(agent_pb2.WatchEventsRequest())
                time.sleep(0.05)
                stream.cancel()
                return 1
            return len(
                stub.GetInventory(agent_pb2.GetInventoryRequest(), timeout=30).inventory.gpus
            )

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(client, range(100)))
    assert results.count(8) == 75 and results.count(1) == 25
    time.sleep(0.5)
    with agent.channel() as ch:
        status = agent.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
    assert status.watchers == 0, "vanished watchers are cleaned up"


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodeagent.cli.main", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[api]\nsockt = '/x'\n", "unknown key 'api.sockt'"),
        ("hook_timeout_seconds = 'long'\n", "'hook_timeout_seconds' must be float, got str"),
        ("[watch]\nudev = 1\n", "'watch.udev' must be bool, got int"),
        ("log_format = 'xml'\n", "'log_format' must be one of"),
        ("root = \n", "not valid TOML"),
        ("[api]\ntcp_listen = '0.0.0.0:7443'\n", "needs api.tls_cert"),
    ],
)
def test_bad_config_refuses_to_start_naming_the_key(scratch: Path, text: str, needle: str) -> None:
    config = scratch / "agent.toml"
    config.write_text(text)
    proc = _serve(config)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_socket_path_in_the_way(agent: AgentProcess, scratch: Path) -> None:
    config = scratch / "second.toml"
    config.write_text(
        agent.config_path.read_text().replace(
            f'listen = "127.0.0.1:{agent.metrics_port}"', 'listen = ""'
        )
    )
    live = _serve(config)
    assert live.returncode == 1 and "in use by a running agent" in live.stderr
    blocker = scratch / "blocker"
    blocker.write_text("precious")
    config.write_text(config.read_text().replace(agent.socket_path, str(blocker)))
    proc = _serve(config)
    assert proc.returncode == 1 and "exists and is not a socket" in proc.stderr
    assert blocker.read_text() == "precious"


def test_hooks_hang_and_flood(machine_root: Callable[..., Path], scratch: Path) -> None:
    pre = scratch / "hooks.d" / "pre-discovery.d"
    pre.mkdir(parents=True)
    flood = pre / "10-flood"
    flood.write_text("#!/bin/sh\nhead -c 5000000 /dev/zero | tr '\\0' x\necho done >&2\n")
    flood.chmod(0o755)
    post = scratch / "hooks.d" / "post-discovery.d"
    post.mkdir(parents=True)
    hang = post / "10-hang"
    hang.write_text("#!/bin/sh\necho going to sleep >&2\nsleep 600\n")
    hang.chmod(0o755)
    proc = AgentProcess(scratch, machine_root("cpu-node"), extra_config="hook_timeout_seconds = 1")
    proc.start()
    try:
        with proc.channel() as ch:
            status = proc.stub(ch).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
        assert status.phase == "FAILED"
        assert "post-discovery hook 10-hang timed out after 1s: going to sleep" in status.last_error
        assert "pre-discovery name=10-flood ok" in proc.log()
        assert "(output truncated)" in proc.log()
    finally:
        proc.close()
    assert shutil.which("sleep")


@pytest.mark.parametrize("name", ["nodeagent.service", "nodeagent-inventory.service"])
def test_systemd_units_verify(scratch: Path, name: str) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed (Debian's systemd package)")
    unit = (REPO / "systemd" / name).read_text()
    assert "Restart=always" in unit
    if name == "nodeagent.service":
        assert "Type=notify" in unit and "WatchdogSec=" in unit
    # verify needs ExecStart to exist: point it at this checkout's entry point
    local = scratch / name
    local.write_text(
        unit.replace(
            "/opt/nodeagent/bin/nodeagent", str(Path(sys.executable).with_name("nodeagent"))
        )
    )
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
