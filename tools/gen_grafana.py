"""Generate the Grafana dashboards in nodeagent/monitoring/grafana/ (docs/monitoring.md).

The dashboards are code (grafana-foundation-sdk's builders), not hand-edited JSON: a panel
is a PromQL expression and a few display choices, and tests/monitoring checks that the
committed JSON is this script's output and that every metric a panel queries is one our
exporters serve. Edit here, then run `.venv/bin/python tools/gen_grafana.py`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent.parent / "nodeagent" / "monitoring" / "grafana"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NODES = 'instance=~"$instance"'  # the agent dashboard's node selector
# The inventory's fleet gauges are read from the shared database, so every replica
# exports the same values: one replica's worth, whatever the number of replicas.
ONE = "max without (instance, pod) "
RI = "[$__rate_interval]"

Query = tuple[str, str]  # (PromQL, legend)


def _target(expr: str, legend: str, ref: str, instant: bool) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if instant:
        return q.instant().format(PromQueryFormat.TABLE)
    return q.legend_format(legend or "__auto")


def _with(
    panel: timeseries.Panel | stat.Panel | table.Panel, queries: Sequence[Query], instant: bool
) -> None:
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(_target(expr, legend, chr(ord("A") + i), instant))


def graph(
    title: str,
    queries: Sequence[Query],
    unit: str = "short",
    width: int = 12,
    *,
    stack: bool = False,
    why: str = "",
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(why)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if stack:
        panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    _with(panel, queries, instant=False)
    return panel


def single(title: str, expr: str, unit: str = "short", *, why: str = "") -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(why)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(4)
        .height(4)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    _with(panel, [(expr, "")], instant=False)
    return panel


def listing(title: str, expr: str, *, width: int = 12, why: str = "") -> table.Panel:
    panel = (
        table.Panel()
        .title(title)
        .description(why)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .show_header(True)
    )
    _with(panel, [(expr, "")], instant=True)
    return panel


def _base(uid: str, title: str, why: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(why)
        .tags(["nodeagent"])
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )


# XIDs after which the GPU needs a reset, a reboot or an RMA (NVIDIA's XID catalogue):
# 48 double-bit ECC, 61/62 internal micro-controller halt, 64 row remap failure, 74 NVLink,
# 79 fallen off the bus, 95 uncontained ECC, 119/120 GSP RPC timeout and GSP error. The
# alert rule (nodeagent/monitoring/alerts.yml) lists the same.
FATAL_XIDS = "48|61|62|64|74|79|95|119|120"
GPU = "{{instance}} gpu {{gpu}}"
PORT = "{{instance}} {{device}}/{{port}}"


def _sel(metric: str, extra: str = "") -> str:
    """`metric` restricted to the chosen nodes (and `extra` matchers)."""
    return f"{metric}{{{NODES}{', ' + extra if extra else ''}}}"


def nodes_dashboard() -> dashboard.Dashboard:
    """The agents' view of their servers: GPU health, XIDs, rails, NVMe, drift."""
    d = _base(
        "nodeagent-nodes",
        "nodeagent: GPU nodes",
        "What each nodeagent reports of its server (port 9745): GPU health and XID errors, "
        "RDMA rails, NVMe, tuning drift.",
    ).with_variable(
        dashboard.QueryVariable("instance")
        .label("Node")
        .datasource(DATASOURCE)
        .query("label_values(nodeagent_info, instance)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
    )
    xids = _sel("nodeagent_gpu_xid_errors_total")
    d.with_row(dashboard.Row("Overview"))
    up = _sel("up", 'job="nodeagent"')
    d.with_panel(single("Agents up", f"sum({up})"))
    d.with_panel(
        single(
            "GPUs not healthy",
            f"count({_sel('nodeagent_gpu_healthy')} == 0) or vector(0)",
            why="GPUs whose health is degraded or failed (nodeagent_gpu_healthy == 0).",
        )
    )
    fatal = _sel("nodeagent_gpu_xid_errors_total", f'xid=~"{FATAL_XIDS}"')
    d.with_panel(single("Fatal XIDs (range)", f"sum(increase({fatal}[$__range])) or vector(0)"))
    for title, metric, bad in (
        ("Rails down", "nodeagent_rdma_port_active", 0),
        ("Drifted settings", "nodeagent_tuning_drift", 1),
        ("Failed collectors", "nodeagent_collector_success", 0),
    ):
        d.with_panel(single(title, f"count({_sel(metric)} == {bad}) or vector(0)"))
    d.with_panel(
        listing(
            "Phase",
            f"{_sel('nodeagent_phase')} == 1",
            width=24,
            why="The lifecycle phase each agent reports (DISCOVERED, TUNING, READY, ...).",
        )
    )

    d.with_row(dashboard.Row("GPU health"))
    d.with_panel(
        graph("GPU temperature", [(_sel("nodeagent_gpu_temperature_celsius"), GPU)], "celsius")
    )
    power = f"{_sel('nodeagent_gpu_power_watts')} / {_sel('nodeagent_gpu_power_limit_watts')}"
    d.with_panel(graph("GPU power (share of its limit)", [(power, GPU)], "percentunit"))
    d.with_panel(
        listing(
            "GPUs not healthy",
            f"({_sel('nodeagent_gpu_healthy')} == 0) + on (instance, gpu) "
            "group_left (model, uuid, pci_address) nodeagent_gpu_info",
        )
    )
    ecc = _sel("nodeagent_gpu_ecc_errors_total", 'severity="uncorrected", scope="volatile"')
    d.with_panel(graph("Uncorrected ECC errors (rate)", [(f"rate({ecc}{RI})", GPU)], "ops"))
    d.with_panel(
        graph("Remapped rows", [(_sel("nodeagent_gpu_remapped_rows"), f"{GPU} {{{{cause}}}}")])
    )
    d.with_panel(
        listing(
            "Row remap pending or failed",
            f"{_sel('nodeagent_gpu_row_remap_state')} == 1",
            why="pending: a reset applies the remap; failure: no spare rows left (RMA).",
        )
    )
    inactive = _sel("nodeagent_gpu_nvlinks", 'state="inactive"')
    d.with_panel(graph("Inactive NVLinks", [(inactive, GPU)]))
    d.with_panel(
        listing("PCIe links trained down", f"{_sel('nodeagent_gpu_pcie_link_degraded')} == 1")
    )

    d.with_row(dashboard.Row("XID errors"))
    per_xid = f"{GPU} xid {{{{xid}}}}"
    d.with_panel(
        graph(
            "XID errors (increase per interval)",
            [(f"sum by (instance, gpu, xid) (increase({xids}{RI}))", per_xid)],
        )
    )
    d.with_panel(
        listing(
            "XID errors in the range",
            f"sum by (instance, gpu, xid) (increase({xids}[$__range])) > 0",
        )
    )

    d.with_row(dashboard.Row("RDMA rails"))
    d.with_panel(listing("Ports not ACTIVE", f"{_sel('nodeagent_rdma_port_active')} == 0"))
    d.with_panel(
        graph("Port rate", [(_sel("nodeagent_rdma_port_rate_bytes_per_second"), PORT)], "Bps")
    )
    tx = _sel("nodeagent_rdma_port_transmitted_bytes_total")
    rx = _sel("nodeagent_rdma_port_received_bytes_total")
    d.with_panel(
        graph(
            "Throughput",
            [(f"rate({tx}{RI})", f"{PORT} tx"), (f"rate({rx}{RI})", f"{PORT} rx")],
            "Bps",
        )
    )
    errors = [
        (f"increase({_sel(f'nodeagent_rdma_port_{name}_total')}{RI}) > 0", f"{PORT} {name}")
        for name in ("symbol_errors", "link_downed", "link_error_recovery", "receive_errors")
    ]
    d.with_panel(graph("Link errors (increase per interval)", errors))

    d.with_row(dashboard.Row("NVMe"))
    d.with_panel(graph("NVMe controllers", [(_sel("nodeagent_nvme_controllers"), "{{instance}}")]))
    d.with_panel(listing("NVMe namespaces", _sel("nodeagent_nvme_namespace_capacity_bytes")))
    d.with_panel(listing("NVMe controllers", _sel("nodeagent_nvme_controller_info"), width=24))

    d.with_row(dashboard.Row("Tuning drift and the agent"))
    d.with_panel(
        listing(
            "Settings that drifted from the profile",
            f"{_sel('nodeagent_tuning_drift')} == 1",
            why="1 for drift or a change pending a reboot, after the last `tune verify`.",
        )
    )
    d.with_panel(
        graph(
            "Discovery duration",
            [(_sel("nodeagent_discovery_duration_seconds"), "{{instance}}")],
            "s",
        )
    )
    d.with_panel(listing("Failed collectors", f"{_sel('nodeagent_collector_success')} == 0"))
    events = f"sum by (kind) (rate({_sel('nodeagent_events_total')}{RI}))"
    d.with_panel(graph("Agent events (rate)", [(events, "{{kind}}")], "ops"))
    return d


def _fleet(selector: str = "") -> str:
    """One replica's worth of the node gauge (`selector`: extra matchers)."""
    matchers = f"{{{selector}}}" if selector else ""
    return f"{ONE}(nodeagent_inventory_nodes{matchers})"


def inventory_dashboard() -> dashboard.Dashboard:
    """The inventory service: the fleet by state, pool and cluster, its traffic and health."""
    d = _base(
        "nodeagent-inventory",
        "nodeagent: inventory",
        "The inventory service (port 9746): nodes by state, pool and cluster, heartbeats, "
        "enrolments, join jobs, the reconciler, the database and certificate expiries.",
    )
    unreachable = f"{ONE}(nodeagent_inventory_nodes_unreachable)"
    d.with_row(dashboard.Row("Fleet"))
    d.with_panel(single("Nodes", f"sum({_fleet()})"))
    d.with_panel(single("Unreachable", f"sum({unreachable})"))
    for state in ("READY", "JOINED", "FAILED"):
        in_state = _fleet(f'state="{state}"')
        d.with_panel(single(state.title(), f"sum({in_state}) or vector(0)"))
    d.with_panel(single("Replicas up", 'sum(up{job="nodeagent-inventory"})'))
    for by in ("state", "pool", "cluster"):
        d.with_panel(
            graph(f"Nodes by {by}", [(f"sum by ({by}) ({_fleet()})", f"{{{{{by}}}}}")], stack=True)
        )
    d.with_panel(graph("Unreachable by pool", [(f"sum by (pool) ({unreachable})", "{{pool}}")]))
    d.with_panel(
        listing(
            "Unreachable nodes",
            f"{ONE}(nodeagent_inventory_node_unreachable)",
            width=24,
            why="Nodes that missed unreachable_after_missed heartbeats (retired ones excepted).",
        )
    )

    d.with_row(dashboard.Row("Traffic"))
    heartbeats = f"sum(rate(nodeagent_inventory_heartbeats_total{RI}))"
    d.with_panel(graph("Heartbeats", [(heartbeats, "heartbeats/s")], "ops", 8))
    enrolments = f"sum by (result) (increase(nodeagent_inventory_enrolments_total{RI}))"
    d.with_panel(graph("Enrolments", [(enrolments, "{{result}}")], width=8))
    actions = f"sum by (action, result) (rate(nodeagent_inventory_reconciler_actions_total{RI}))"
    d.with_panel(graph("Reconciler actions", [(actions, "{{action}} {{result}}")], "ops", 8))
    jobs = f"sum by (state) ({ONE}(nodeagent_inventory_join_jobs))"
    d.with_panel(graph("Join jobs by state", [(jobs, "{{state}}")]))
    finished = f"sum by (result) (increase(nodeagent_inventory_join_jobs_finished_total{RI}))"
    d.with_panel(graph("Join jobs finished", [(finished, "{{result}}")]))

    d.with_row(dashboard.Row("Database and certificates"))
    tx = "nodeagent_inventory_database_transaction_duration_seconds"
    quantiles = [
        (f"histogram_quantile({q}, sum by (le) (rate({tx}_bucket{RI})))", f"p{round(q * 100)}")
        for q in (0.5, 0.99)
    ]
    mean = f"sum(rate({tx}_sum{RI})) / sum(rate({tx}_count{RI}))"
    d.with_panel(graph("Transaction duration", [*quantiles, (mean, "mean")], "s", 8))
    errors = f"sum by (instance) (increase(nodeagent_inventory_database_errors_total{RI}))"
    d.with_panel(graph("Database errors", [(errors, "{{instance}}")], width=8))
    age = "time() - nodeagent_inventory_fleet_refresh_timestamp_seconds"
    d.with_panel(graph("Age of the fleet gauges", [(age, "{{instance}}")], "s", 8))
    expiry = f"{ONE}(nodeagent_inventory_certificate_expiry_timestamp_seconds)"
    d.with_panel(
        listing(
            "Certificates: days to the earliest expiry",
            f"min by (role) ({expiry} - time()) / 86400",
            width=24,
            why="Per role (ca: the CA itself; node: the soonest of the nodes' newest ones).",
        )
    )
    return d


DASHBOARDS = {
    "nodeagent-nodes.json": nodes_dashboard,
    "nodeagent-inventory.json": inventory_dashboard,
}


def render(build: dashboard.Dashboard) -> str:
    """The dashboard's JSON, its panels numbered in order (Grafana needs unique ids)."""
    model = build.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def generate(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in DASHBOARDS.items():
        path = out / name
        path.write_text(render(make()))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(path)
