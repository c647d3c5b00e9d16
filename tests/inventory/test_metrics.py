"""The inventory's /metrics (issue 18): a live `nodeagent inventory serve` on loopback over
SQLite and PostgreSQL, scraped as Prometheus scrapes it and checked with the real promtool;
the counters and the store's transaction hook in process."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from nodeagent import __version__, tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc
from nodeagent.inventory import pki
from nodeagent.inventory.metrics import FleetGauges, InventoryCollector
from nodeagent.inventory.stats import DB_BUCKETS, ServiceStats
from nodeagent.inventory.store import NotFound, Store, StoreError
from testbed.cli import nodeagent as cli
from testbed.inventory_process import InventoryProcess
from testbed.variants import variant
from testbed.wait import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def samples(text: str) -> Samples:
    """Every sample by name and sorted labels, parsed with prometheus_client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def named(found: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in found.items() if n == name}


def promtool_check(text: str) -> None:
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, text=True, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def register(
    inv: InventoryProcess, token: str, hw: pb.HardwareInventory
) -> tuple[ipb.RegisterResponse, bytes]:
    key = tlsutil.new_key()
    with channels.secure_channel(inv.bootstrap, inv.ca().pem) as channel:
        resp = inventory_pb2_grpc.InventoryServiceStub(channel).Register(
            ipb.RegisterRequest(
                token=token, inventory=hw, csr_pem=tlsutil.make_csr(key, "n").decode()
            ),
            timeout=30,
        )
    return resp, tlsutil.key_pem(key)


def test_a_live_inventory_exports_its_fleet_and_counters(
    scratch: Path, database: str, dgx_inventory: pb.HardwareInventory
) -> None:
    inv = InventoryProcess(
        scratch / "inv",
        database,
        metrics=True,
        extra="metrics_refresh_seconds = 0.2\nheartbeat_interval_seconds = 1\n"
        "unreachable_after_missed = 2\n",
    )
    # an operator certificate issued before the first start, as the install guide does it
    ca = pki.CertificateAuthority.load_or_create(
        inv.ca_dir / "ca.crt", inv.ca_dir / "ca.key", create=True
    )
    args = ["--role", "operator", "--name", "bob", "--days", "20", "-d", str(scratch / "bob")]
    issued = cli("inventory", "issue-admin-cert", "--config", str(inv.config), *args)
    assert issued.returncode == 0, issued.stderr
    operator = x509.load_pem_x509_certificate((scratch / "bob" / "admin.crt").read_bytes())
    inv.start()
    try:
        admin = inv.admin()
        preset = ipb.Assignment(pool="training", cluster="prod")
        token = admin.CreateToken(ipb.CreateTokenRequest(preset=preset), timeout=10).secret
        with pytest.raises(grpc.RpcError):
            register(inv, "abc123.wrongsecret", variant(dgx_inventory, 1))
        resp, key = register(inv, token, variant(dgx_inventory, 1))
        node_cert = x509.load_pem_x509_certificate(resp.certificate_pem.encode())
        with channels.secure_channel(
            inv.address, inv.ca().pem, resp.certificate_pem.encode(), key
        ) as channel:
            node = inventory_pb2_grpc.InventoryServiceStub(channel)
            for _ in range(3):
                node.Heartbeat(
                    ipb.HeartbeatRequest(node_id=resp.node_id, phase="DISCOVERED"), timeout=10
                )
        fleet_key = (("cluster", "prod"), ("pool", "training"), ("state", "DISCOVERED"))

        def reachable_and_counted() -> bool:
            found = samples(scrape(inv.metrics_port))
            nodes = named(found, "nodeagent_inventory_nodes")
            return nodes == {fleet_key: 1.0} and named(
                found, "nodeagent_inventory_nodes_unreachable"
            ) == {fleet_key: 0.0}

        wait_for(reachable_and_counted, 10, "the fleet gauges to count the node")
        text = scrape(inv.metrics_port)
        promtool_check(text)
        found = samples(text)
        assert named(found, "nodeagent_inventory_info") == {(("version", __version__),): 1.0}
        assert named(found, "nodeagent_inventory_heartbeats_total") == {(): 3.0}
        assert named(found, "nodeagent_inventory_enrolments_total") == {
            (("result", "succeeded"),): 1.0,
            (("result", "failed"),): 1.0,
        }
        assert named(found, "nodeagent_inventory_join_jobs_finished_total") == {
            (("result", "cancelled"),): 0.0,
            (("result", "failed"),): 0.0,
            (("result", "succeeded"),): 0.0,
        }
        assert named(found, "nodeagent_inventory_join_jobs") == {}
        assert named(found, "nodeagent_inventory_reconciler_actions_total") == {}
        assert named(found, "nodeagent_inventory_node_unreachable") == {}
        assert named(found, "nodeagent_inventory_certificate_expiry_timestamp_seconds") == {
            (("role", "ca"),): ca.cert.not_valid_after_utc.timestamp(),
            (("role", "node"),): node_cert.not_valid_after_utc.timestamp(),
            (("role", "operator"),): operator.not_valid_after_utc.timestamp(),
        }
        assert named(found, "nodeagent_inventory_node_certificate_renew_before_seconds") == {
            (): 30 * 86400 / 3
        }
        refreshed = found[("nodeagent_inventory_fleet_refresh_timestamp_seconds", ())]
        assert time.time() - 5 < refreshed <= time.time()
        assert named(found, "nodeagent_inventory_database_errors_total") == {(): 0.0}
        buckets = named(found, "nodeagent_inventory_database_transaction_duration_seconds_bucket")
        counts = [buckets[(("le", le),)] for le in (*map(str, DB_BUCKETS), "+Inf")]
        assert counts == sorted(counts) and counts[-1] > 0
        count = found[("nodeagent_inventory_database_transaction_duration_seconds_count", ())]
        assert count == counts[-1]

        # silent for unreachable_after_missed intervals: listed by id and hostname
        listed = (
            ("cluster", "prod"),
            ("hostname", "gpu-00001"),
            ("node", resp.node_id),
            ("pool", "training"),
            ("state", "DISCOVERED"),
        )

        def unreachable() -> bool:
            found = samples(scrape(inv.metrics_port))
            return named(found, "nodeagent_inventory_node_unreachable") == {listed: 1.0}

        wait_for(unreachable, 15, "the node to show as unreachable")
        found = samples(scrape(inv.metrics_port))
        assert named(found, "nodeagent_inventory_nodes_unreachable") == {fleet_key: 1.0}
    finally:
        inv.kill(signal.SIGTERM)
    with pytest.raises(OSError):  # stopped with the service
        scrape(inv.metrics_port)


def test_the_fleet_gauges_are_read_on_refresh_not_per_scrape(
    scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    inv = InventoryProcess(
        scratch / "inv",
        f"sqlite:///{scratch / 'inv.db'}",
        metrics=True,
        extra="metrics_refresh_seconds = 3600\n",
    ).start()
    try:
        before = samples(scrape(inv.metrics_port))
        token = inv.admin().CreateToken(ipb.CreateTokenRequest(), timeout=10).secret
        register(inv, token, variant(dgx_inventory, 2))
        after = samples(scrape(inv.metrics_port))
        # the enrolment counter moves at once; the node count waits for the next refresh
        assert named(after, "nodeagent_inventory_enrolments_total")[(("result", "succeeded"),)] == 1
        assert named(before, "nodeagent_inventory_nodes") == {}
        assert named(after, "nodeagent_inventory_nodes") == {}
        key = ("nodeagent_inventory_fleet_refresh_timestamp_seconds", ())
        assert after[key] == before[key] > 0
    finally:
        inv.kill()


def test_a_taken_metrics_port_stops_the_service_with_one_line(scratch: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        inv = InventoryProcess(scratch / "inv", f"sqlite:///{scratch / 'inv.db'}")
        text = inv.config.read_text().replace('metrics_listen = ""', "")
        inv.config.write_text(f'{text}metrics_listen = "127.0.0.1:{port}"\n')
        proc = cli("inventory", "serve", "--config", str(inv.config), timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"nodeagent: error: cannot listen on 127.0.0.1:{port} ('metrics_listen'): the address "
        "is in use (another inventory service?); stop it or choose another port"
    )
    assert not (scratch / "inv" / "data").exists() and not (scratch / "inv.db").exists()


def test_metrics_refresh_must_be_positive(scratch: Path) -> None:
    config = scratch / "inventory.toml"
    config.write_text(f'data_dir = "{scratch / "data"}"\nmetrics_refresh_seconds = 0\n')
    proc = cli("inventory", "serve", "--config", str(config), timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"nodeagent: error: {config}: 'metrics_refresh_seconds' must be more than 0 "
        f"(from --config {config})"
    )


# --- in process: the counters and the store's hook --------------------------------------


def test_counters_histogram_and_store_hook(scratch: Path) -> None:
    store = Store.open(f"sqlite:///{scratch / 'db.sqlite'}")
    stats = ServiceStats()
    store.on_tx = stats.transaction
    try:
        before = stats.snapshot()
        with store.tx() as cur:
            cur.execute("SELECT 1")
        with pytest.raises(NotFound), store.tx():
            raise NotFound("a refusal of ours, not a database failure")
        with pytest.raises(StoreError), store.tx() as cur:
            cur.execute("SELECT * FROM no_such_table")
        after = stats.snapshot()
        assert sum(after.db_buckets) - sum(before.db_buckets) == 3
        assert (before.db_errors, after.db_errors) == (0, 1)
        assert after.db_seconds > before.db_seconds

        for seconds in (0.001, 0.0011, 10.0, 10.5):
            stats.db_latency(seconds)
        stats.heartbeat()
        stats.enrolment(True)
        stats.enrolment(False)
        stats.enrolment(False)
        stats.join_finished("succeeded")
        stats.reconciler_action("cordon", "ok")
        stats.reconciler_action("cordon", "ok")
        stats.reconciler_action("label", "error")
        fleet = FleetGauges(store, time.time, 1.0)
        registry = CollectorRegistry()
        registry.register(InventoryCollector("9.9", stats, fleet, 1234.0, 5.0))
        found = samples(generate_latest(registry).decode())
    finally:
        store.close()
    snap = stats.snapshot()
    assert snap.db_buckets[0] >= 1 and snap.db_buckets[1] >= 1  # 0.001 is le=0.001
    buckets = named(found, "nodeagent_inventory_database_transaction_duration_seconds_bucket")
    assert buckets[(("le", "+Inf"),)] == 7
    assert buckets[(("le", "10.0"),)] == 6  # 10.5 is above every bound
    assert buckets[(("le", "5.0"),)] == 5
    assert buckets[(("le", "0.001"),)] == snap.db_buckets[0]
    assert buckets[(("le", "0.0025"),)] == sum(snap.db_buckets[:2])
    assert found[("nodeagent_inventory_database_transaction_duration_seconds_sum", ())] == (
        snap.db_seconds
    )
    assert found[("nodeagent_inventory_database_errors_total", ())] == 1
    assert found[("nodeagent_inventory_heartbeats_total", ())] == 1
    assert named(found, "nodeagent_inventory_enrolments_total") == {
        (("result", "succeeded"),): 1,
        (("result", "failed"),): 2,
    }
    assert named(found, "nodeagent_inventory_join_jobs_finished_total") == {
        (("result", "cancelled"),): 0,
        (("result", "failed"),): 0,
        (("result", "succeeded"),): 1,
    }
    assert named(found, "nodeagent_inventory_reconciler_actions_total") == {
        (("action", "cordon"), ("result", "ok")): 2,
        (("action", "label"), ("result", "error")): 1,
    }
    # never refreshed: no fleet, the CA's expiry only, refresh time 0
    assert named(found, "nodeagent_inventory_certificate_expiry_timestamp_seconds") == {
        (("role", "ca"),): 1234.0
    }
    assert found[("nodeagent_inventory_fleet_refresh_timestamp_seconds", ())] == 0
    assert found[("nodeagent_inventory_node_certificate_renew_before_seconds", ())] == 5
    assert found[("nodeagent_inventory_info", (("version", "9.9"),))] == 1
    # a snapshot is a copy: later counting does not change it
    stats.heartbeat()
    assert snap.heartbeats == 1 and stats.snapshot().heartbeats == 2
