"""Prometheus metrics of the inventory service (`metrics_listen`, port 9746).

A scrape reads memory only: the counters of `ServiceStats` and the fleet gauges that
`FleetGauges` re-reads from the database every `metrics_refresh_seconds` (a few grouped
queries, whatever the scrape rate, rather than a scan of 10,000 nodes per scrape). The
fleet gauges come from the shared database, so every replica exports the same values:
aggregate them with `max without (instance)`, and sum the counters, which are each
replica's own. Names follow Prometheus conventions and pass `promtool check metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.stats import DB_BUCKETS, ServiceStats
from nodeagent.inventory.store import Store, StoreError

log = logging.getLogger("nodeagent.inventory")
# Unreachable nodes listed one by one (node and hostname labels), so that an alert names
# them; beyond this many the per-pool counts still say how many.
UNREACHABLE_LISTED = 1000
# Admin certificates are issued offline (issue-admin-cert) and live a year: their expiry
# is re-read this often, not on every refresh (the certificates table grows with every
# node renewal).
CERT_REFRESH_SECONDS = 600.0
ADMIN_ROLES = ("viewer", "operator", "admin")


@dataclass
class FleetCounts:
    """What the last refresh read from the database."""

    # (state, pool, cluster) -> (nodes, of which unreachable)
    nodes: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    # (node id, hostname, state, pool, cluster) of unreachable, not retired nodes
    unreachable: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # job state -> jobs
    # (pool, cluster) -> nodes not retired whose agent last counted tuning drift
    drifted: dict[tuple[str, str], int] = field(default_factory=dict)
    node_cert_expiry: float = 0.0  # the earliest current node certificate; 0: none
    admin_cert_expiry: dict[str, float] = field(default_factory=dict)  # role -> earliest
    refreshed_at: float = 0.0  # time.time() of the refresh; 0: never


def read_fleet(store: Store, deadline: float, certs: bool) -> FleetCounts:
    """The fleet gauges in one transaction. `deadline`: a node last seen before it is
    unreachable (as `nodes list` computes it); `certs`: re-read admin certificates too."""
    counts = FleetCounts(refreshed_at=time.time())
    retired = ipb.RETIRED
    with store.tx() as cur:
        cur.execute(
            store.q(
                "SELECT n.state, n.pool, n.cluster, COUNT(*), "
                "SUM(CASE WHEN COALESCE(l.last_seen, 0) < ? THEN 1 ELSE 0 END), "
                "MIN(CASE WHEN n.cert_not_after > 0 THEN n.cert_not_after END) "
                "FROM nodes n LEFT JOIN liveness l ON l.node_id = n.id "
                "GROUP BY n.state, n.pool, n.cluster"
            ),
            (deadline,),
        )
        expiries = []
        for state, pool, cluster, total, down, expiry in cur.fetchall():
            counts.nodes[(ipb.NodeState.Name(state), pool, cluster)] = (int(total), int(down))
            if expiry is not None and state != retired:  # a retired node's are revoked
                expiries.append(float(expiry))
        counts.node_cert_expiry = min(expiries, default=0.0)
        cur.execute(
            store.q(
                "SELECT n.id, n.hostname, n.state, n.pool, n.cluster FROM nodes n "
                "LEFT JOIN liveness l ON l.node_id = n.id "
                "WHERE n.state <> ? AND COALESCE(l.last_seen, 0) < ? ORDER BY n.id LIMIT ?"
            ),
            (retired, deadline, UNREACHABLE_LISTED),
        )
        counts.unreachable = [
            (node_id, hostname, ipb.NodeState.Name(state), pool, cluster)
            for node_id, hostname, state, pool, cluster in cur.fetchall()
        ]
        cur.execute(
            store.q(
                "SELECT pool, cluster, COUNT(*) FROM nodes WHERE drift_count > 0 AND state <> ? "
                "GROUP BY pool, cluster"
            ),
            (retired,),
        )
        counts.drifted = {(pool, cluster): int(n) for pool, cluster, n in cur.fetchall()}
        cur.execute("SELECT state, COUNT(*) FROM join_jobs GROUP BY state")
        counts.jobs = {
            ipb.JobState.Name(state).removeprefix("JOB_"): int(n) for state, n in cur.fetchall()
        }
        if certs:
            cur.execute(
                store.q(
                    "SELECT role, MIN(not_after) FROM certificates WHERE role <> 'node' "
                    "AND revoked_at = 0 AND not_after > ? GROUP BY role"
                ),
                (counts.refreshed_at,),
            )
            counts.admin_cert_expiry = {role: float(after) for role, after in cur.fetchall()}
    return counts


class FleetGauges:
    """The fleet gauges, re-read every `refresh_seconds` by one task."""

    def __init__(self, store: Store, deadline: Callable[[], float], refresh_seconds: float):
        self.store = store
        self.deadline = deadline
        self.refresh_seconds = refresh_seconds
        self.latest = FleetCounts()
        self._certs_at = -CERT_REFRESH_SECONDS

    async def refresh(self) -> None:
        now = time.monotonic()
        certs = now - self._certs_at >= CERT_REFRESH_SECONDS
        counts = await self.store.run(read_fleet, self.store, self.deadline(), certs)
        if certs:
            self._certs_at = now
        else:
            counts.admin_cert_expiry = self.latest.admin_cert_expiry
        self.latest = counts

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except StoreError as exc:  # keep the last values; their timestamp shows the age
                log.warning("metrics: fleet refresh failed: %s", exc)


class InventoryCollector(Collector):
    def __init__(
        self,
        version: str,
        stats: ServiceStats,
        fleet: FleetGauges,
        ca_expiry: float,
        renew_before_seconds: float,
    ) -> None:
        self.version = version
        self.stats = stats
        self.fleet = fleet
        self.ca_expiry = ca_expiry
        self.renew_before_seconds = renew_before_seconds

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("nodeagent_inventory", "Inventory service build")
        info.add_metric([], {"version": self.version})
        yield info
        yield from self._fleet(self.fleet.latest)
        yield from self._counters()

    def _fleet(self, f: FleetCounts) -> Iterator[Metric]:
        labels = ["state", "pool", "cluster"]
        nodes = GaugeMetricFamily("nodeagent_inventory_nodes", "Nodes", labels=labels)
        down = GaugeMetricFamily(
            "nodeagent_inventory_nodes_unreachable",
            "Nodes that missed unreachable_after_missed heartbeats",
            labels=labels,
        )
        for key, (total, unreachable) in sorted(f.nodes.items()):
            nodes.add_metric(list(key), total)
            down.add_metric(list(key), unreachable)
        listed = GaugeMetricFamily(
            "nodeagent_inventory_node_unreachable",
            f"1 for each unreachable node not retired (the first {UNREACHABLE_LISTED} by id)",
            labels=["node", "hostname", *labels],
        )
        for row in f.unreachable:
            listed.add_metric(list(row), 1)
        drifted = GaugeMetricFamily(
            "nodeagent_inventory_nodes_drifted",
            "Nodes not retired whose agent last reported settings drifted from the profile",
            labels=["pool", "cluster"],
        )
        for (pool, cluster), n in sorted(f.drifted.items()):
            drifted.add_metric([pool, cluster], n)
        jobs = GaugeMetricFamily(
            "nodeagent_inventory_join_jobs", "Join jobs in the database", labels=["state"]
        )
        for state, n in sorted(f.jobs.items()):
            jobs.add_metric([state], n)
        expiry = GaugeMetricFamily(
            "nodeagent_inventory_certificate_expiry_timestamp_seconds",
            "Earliest expiry of the current certificates of a role (ca: the CA itself)",
            labels=["role"],
        )
        expiry.add_metric(["ca"], self.ca_expiry)
        if f.node_cert_expiry:
            expiry.add_metric(["node"], f.node_cert_expiry)
        for role in ADMIN_ROLES:
            if role in f.admin_cert_expiry:
                expiry.add_metric([role], f.admin_cert_expiry[role])
        yield from (nodes, down, listed, drifted, jobs, expiry)
        yield GaugeMetricFamily(
            "nodeagent_inventory_node_certificate_renew_before_seconds",
            "Nodes renew their certificate when this much of its lifetime is left",
            value=self.renew_before_seconds,
        )
        yield GaugeMetricFamily(
            "nodeagent_inventory_fleet_refresh_timestamp_seconds",
            "When the fleet gauges were last read from the database",
            value=f.refreshed_at,
        )

    def _counters(self) -> Iterator[Metric]:
        s = self.stats.snapshot()
        yield CounterMetricFamily(
            "nodeagent_inventory_heartbeats", "Heartbeats received", value=s.heartbeats
        )
        enrol = CounterMetricFamily(
            "nodeagent_inventory_enrolments", "Registrations, by result", labels=["result"]
        )
        for result, n in s.enrolments.items():
            enrol.add_metric([result], n)
        yield enrol
        joins = CounterMetricFamily(
            "nodeagent_inventory_join_jobs_finished",
            "Join jobs this replica ran to their end, by result",
            labels=["result"],
        )
        for result, n in sorted(s.joins.items()):
            joins.add_metric([result], n)
        yield joins
        actions = CounterMetricFamily(
            "nodeagent_inventory_reconciler_actions",
            "Actions of the Kubernetes reconciler",
            labels=["action", "result"],
        )
        for (action, result), n in sorted(s.reconciler.items()):
            actions.add_metric([action, result], n)
        yield actions
        cumulative, buckets = 0, []
        for bound, n in zip((*DB_BUCKETS, float("inf")), s.db_buckets, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(
            "nodeagent_inventory_database_transaction_duration_seconds",
            "Duration of database transactions",
            buckets=buckets,
            sum_value=s.db_seconds,
        )
        yield CounterMetricFamily(
            "nodeagent_inventory_database_errors",
            "Transactions that failed in the database (gone, full, locked)",
            value=s.db_errors,
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsServer:
    """The /metrics endpoint: prometheus_client's HTTP server in a thread of its own."""

    def __init__(self, address: str, collector: Collector) -> None:
        host, _, port = address.rpartition(":")
        registry = CollectorRegistry()
        registry.register(collector)
        try:
            self.server, self.thread = start_http_server(
                int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry
            )
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot listen on {address} ('metrics_listen'): {exc}") from None
        self.port = int(self.server.server_address[1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown()
            self.server.server_close()
