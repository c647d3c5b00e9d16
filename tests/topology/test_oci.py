"""OCI instance metadata: a loopback HTTP server serves recorded rdmaTopologyData."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.discover import discover
from nodeagent.hardware.probes import oci
from nodeagent.host import HostRoot
from nodeagent.labels import cloud
from nodeagent.topology import tiers
from nodeagent.topology.config import FabricConfig, OciConfig
from nodeagent.topology.observe import observe
from testbed.machines import OCI_RDMA_TOPOLOGY

ISLAND, HOST = "oci.oraclecloud.com/rdma.hpc_island_id", "oci.oraclecloud.com/rdma.host_id"
NETWORK, LOCAL = (
    "oci.oraclecloud.com/rdma.network_block_id",
    "oci.oraclecloud.com/rdma.local_block_id",
)
REAL = {ISLAND: "aeycajoqlss", NETWORK: "qc4pbhxoqqf", LOCAL: "qcnp7nxaaiz", HOST: "qcm4vjkwmwf"}


class Metadata(BaseHTTPRequestHandler):
    """IMDS v2 for one path; `mode` on the server picks the answer."""

    server: Imds

    def do_GET(self) -> None:
        mode = self.server.mode
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Bearer Oracle":
            self.send_error(401)
            return
        if self.path != "/opc/v2/host/rdmaTopologyData" or mode == "404":
            self.send_error(404)
            return
        if mode == "slow":
            time.sleep(2.0)
        body = {
            "json": json.dumps(OCI_RDMA_TOPOLOGY),
            "partial": json.dumps(
                {"customerHPCIslandId": OCI_RDMA_TOPOLOGY["customerHPCIslandId"]}
            ),
            "garbage": "<html>not json",
            "list": "[1, 2]",
        }.get(mode, "{}")
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Imds(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Metadata)
        self.mode = "json"
        self.seen: list[tuple[str, str | None]] = []


@pytest.fixture
def imds() -> Iterator[Imds]:
    server = Imds()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: Imds) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def placement(data: oci.OciRecording) -> fpb.CloudPlacement:
    return fpb.CloudPlacement(provider="oci", **oci.placement(data))


def test_recorded_topology_gives_the_labels(imds: Imds) -> None:
    data = oci.read_live(base_url=url(imds), timeout=2)
    assert data["available"] and data["rdmaTopologyData"] == OCI_RDMA_TOPOLOGY
    assert imds.seen == [("/opc/v2/host/rdmaTopologyData", "Bearer Oracle")]
    assert cloud.labels(placement(data), {}) == REAL


@pytest.mark.parametrize(
    ("mode", "error"),
    [("404", "HTTP 404"), ("garbage", "not JSON"), ("list", "not a JSON object")],
)
def test_failures_give_the_placeholder(imds: Imds, mode: str, error: str) -> None:
    imds.mode = mode
    data = oci.read_live(base_url=url(imds), timeout=2)
    assert not data["available"] and error in data["error"]
    assert cloud.labels(placement(data), {}) == dict.fromkeys(REAL, "no-imds-data")


def test_a_slow_service_times_out_quickly(imds: Imds) -> None:
    imds.mode = "slow"
    start = time.monotonic()
    data = oci.read_live(base_url=url(imds), timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert not data["available"] and "unreachable" in data["error"]


def test_nothing_listening() -> None:
    server = Imds()
    port = server.server_address[1]
    server.server_close()  # the port is free now: connection refused
    data = oci.read_live(base_url=f"http://127.0.0.1:{port}", timeout=1)
    assert not data["available"] and "unreachable" in data["error"]


def test_a_real_value_is_never_replaced_by_the_placeholder(imds: Imds) -> None:
    imds.mode = "partial"  # the island only
    data = oci.read_live(base_url=url(imds), timeout=2)
    previous = {NETWORK: "qc4pbhxoqqf", LOCAL: "no-imds-data", ISLAND: "older-value"}
    assert cloud.labels(placement(data), previous) == {
        ISLAND: "aeycajoqlss",  # a fresh real value replaces an old one
        NETWORK: "qc4pbhxoqqf",  # kept: the metadata has none now
        LOCAL: "no-imds-data",  # nothing real to keep
        HOST: "no-imds-data",
    }
    imds.mode = "404"  # unreachable altogether: every real value stays
    down = placement(oci.read_live(base_url=url(imds), timeout=2))
    assert cloud.labels(down, REAL) == REAL


def test_off_outside_oci_and_when_switched_off(imds: Imds) -> None:
    live, inv = HostRoot("/"), pb.HardwareInventory()
    assert not oci.on_oci(live)  # this test machine is no OCI instance
    assert oci.PROBE.read(live, inv, oci.Options(base_url=url(imds))) is None
    off = FabricConfig(oci=OciConfig(enabled="off", base_url=url(imds)))
    assert not observe(live, inv, off).HasField("cloud")
    assert imds.seen == []
    anywhere = oci.Options(oci_only=False, base_url=url(imds))
    assert oci.PROBE.read(live, inv, anywhere)["available"]  # type: ignore[index]
    assert cloud.labels(fpb.CloudPlacement(), {}) == {}  # no cloud probe: no OCI keys


def test_live_observation_places_the_node_by_its_blocks(imds: Imds) -> None:
    live = HostRoot("/")
    cfg = FabricConfig(oci=OciConfig(enabled="on", base_url=url(imds), timeout_seconds=2))
    obs = observe(live, discover(live, only=["system"]), cfg)
    assert obs.cloud.available and obs.cloud.local_block == OCI_RDMA_TOPOLOGY["customerLocalBlock"]
    t = tiers.node_tiers(obs)
    assert (t.tier_2, t.tier_1, t.tier_0, t.source) == (
        REAL[ISLAND],
        REAL[NETWORK],
        REAL[LOCAL],
        "cloud",
    )
    imds.mode = "404"
    obs = observe(live, discover(live, only=["system"]), cfg)
    assert obs.errors == ["oci: metadata answered HTTP 404 for /opc/v2/host/rdmaTopologyData"]
    assert tiers.node_tiers(obs).tier_0 == "unknown"
