"""Prometheus metrics (port 9745), produced at scrape time from the agent's caches.

A scrape never touches hardware: the inventory comes from the last discovery and
RDMA port state/counters from the poller, so a scrape costs a few milliseconds
however often Prometheus asks. Names follow Prometheus conventions (base units,
`_total` for counters, `_info` for labels-only facts) and pass `promtool check metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from nodeagent.api.v1 import hardware_pb2 as pb

PORT_STATES = {"NOP": 0, "DOWN": 1, "INIT": 2, "ARMED": 3, "ACTIVE": 4, "ACTIVE_DEFER": 5}
PHYS_STATES = {
    "Sleep": 1,
    "Polling": 2,
    "Disabled": 3,
    "PortConfigurationTraining": 4,
    "LinkUp": 5,
    "LinkErrorRecovery": 6,
    "Phy Test": 7,
}
# sysfs counter -> (metric suffix, help, multiplier); *_data counts 4-byte words.
RDMA_COUNTERS = {
    "port_xmit_data": ("transmitted_bytes_total", "Bytes transmitted", 4),
    "port_rcv_data": ("received_bytes_total", "Bytes received", 4),
    "port_xmit_packets": ("transmitted_packets_total", "Packets transmitted", 1),
    "port_rcv_packets": ("received_packets_total", "Packets received", 1),
    "symbol_error": ("symbol_errors_total", "Minor link errors detected on a physical lane", 1),
    "link_downed": ("link_downed_total", "Times the link error recovery failed (link down)", 1),
    "link_error_recovery": ("link_error_recovery_total", "Successful link error recoveries", 1),
    "port_rcv_errors": ("receive_errors_total", "Packets received with errors", 1),
}


@dataclass
class AgentView:
    """What the collector reads; the daemon updates it. The phase is read from its one
    owner (the agent's state) at scrape time, never copied."""

    version: str = ""
    phase: Callable[[], str] = str
    hostname: str = ""
    inventory: pb.HardwareInventory = field(default_factory=pb.HardwareInventory)
    discovery_seconds: float = 0.0
    discoveries: int = 0
    rdma_ports: dict[tuple[str, int], dict[str, int | str]] = field(default_factory=dict)
    xid_counts: dict[tuple[str, int], int] = field(default_factory=dict)  # (gpu, xid) -> n
    events_by_kind: Callable[[], dict[str, int]] = dict
    drift: dict[str, bool] = field(default_factory=dict)


class AgentCollector(Collector):
    def __init__(self, view: AgentView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view
        info = InfoMetricFamily("nodeagent", "Agent build and node identity")
        info.add_metric(
            [], {"version": v.version, "hostname": v.hostname, "root": v.inventory.source}
        )
        yield info
        phase = GaugeMetricFamily(
            "nodeagent_phase", "Lifecycle phase (1 for the current one)", labels=["phase"]
        )
        phase.add_metric([v.phase()], 1)
        yield phase
        yield GaugeMetricFamily(
            "nodeagent_discovery_duration_seconds",
            "Wall time of the last full discovery",
            value=v.discovery_seconds,
        )
        yield CounterMetricFamily("nodeagent_discoveries", "Discoveries run", value=v.discoveries)
        ok = GaugeMetricFamily(
            "nodeagent_collector_success",
            "Whether a collector's last run succeeded",
            labels=["collector"],
        )
        took = GaugeMetricFamily(
            "nodeagent_collector_duration_seconds",
            "Duration of a collector's last run",
            labels=["collector"],
        )
        for c in v.inventory.collectors:
            ok.add_metric([c.name], 1.0 if c.success else 0.0)
            took.add_metric([c.name], c.duration_seconds)
        yield ok
        yield took
        events = CounterMetricFamily("nodeagent_events", "Events emitted", labels=["kind"])
        for kind, n in sorted(v.events_by_kind().items()):
            events.add_metric([kind], n)
        yield events
        yield from self._gpus(v)
        yield from self._rdma(v)
        yield from self._nvme(v)
        if v.drift:
            drift = GaugeMetricFamily(
                "nodeagent_tuning_drift",
                "1 when a tuning setting differs from its profile",
                labels=["setting"],
            )
            for setting, drifted in sorted(v.drift.items()):
                drift.add_metric([setting], 1.0 if drifted else 0.0)
            yield drift

    def _gpus(self, v: AgentView) -> Iterator[Metric]:
        gpus = v.inventory.gpus
        info = GaugeMetricFamily(
            "nodeagent_gpu_info",
            "GPU identity (value 1)",
            labels=["gpu", "pci_address", "model", "uuid"],
        )
        healthy = GaugeMetricFamily(
            "nodeagent_gpu_healthy", "1 when the GPU's health is ok", labels=["gpu"]
        )
        gauges = {
            "temperature_celsius": GaugeMetricFamily(
                "nodeagent_gpu_temperature_celsius", "GPU temperature", labels=["gpu"]
            ),
            "power_draw_watts": GaugeMetricFamily(
                "nodeagent_gpu_power_watts", "GPU power draw", labels=["gpu"]
            ),
            "power_limit_watts": GaugeMetricFamily(
                "nodeagent_gpu_power_limit_watts", "Enforced GPU power limit", labels=["gpu"]
            ),
        }
        ecc = CounterMetricFamily(
            "nodeagent_gpu_ecc_errors", "GPU memory ECC errors", labels=["gpu", "severity", "scope"]
        )
        rows = GaugeMetricFamily(
            "nodeagent_gpu_remapped_rows", "Rows remapped by the GPU", labels=["gpu", "cause"]
        )
        remap_state = GaugeMetricFamily(
            "nodeagent_gpu_row_remap_state",
            "1 when a row remap is pending or has failed",
            labels=["gpu", "state"],
        )
        nvl = GaugeMetricFamily("nodeagent_gpu_nvlinks", "NVLinks", labels=["gpu", "state"])
        width = GaugeMetricFamily(
            "nodeagent_gpu_pcie_link_width_lanes", "PCIe link width", labels=["gpu", "kind"]
        )
        degraded = GaugeMetricFamily(
            "nodeagent_gpu_pcie_link_degraded",
            "1 when the PCIe link is narrower than its maximum",
            labels=["gpu"],
        )
        for g in gpus:
            idx = str(g.index)
            info.add_metric([idx, g.pci_address, g.model, g.uuid], 1)
            healthy.add_metric([idx], 1.0 if g.health == pb.HEALTH_OK else 0.0)
            for key, family in gauges.items():
                if g.HasField(key):
                    family.add_metric([idx], getattr(g, key))
            if g.HasField("ecc_errors"):
                e = g.ecc_errors
                counts = (
                    ("corrected", "volatile", e.corrected_volatile),
                    ("uncorrected", "volatile", e.uncorrected_volatile),
                    ("corrected", "aggregate", e.corrected_aggregate),
                    ("uncorrected", "aggregate", e.uncorrected_aggregate),
                )
                for sev, scope, n in counts:
                    ecc.add_metric([idx, sev, scope], n)
            if g.HasField("remapped_rows"):
                r = g.remapped_rows
                rows.add_metric([idx, "correctable"], r.correctable)
                rows.add_metric([idx, "uncorrectable"], r.uncorrectable)
                remap_state.add_metric([idx, "pending"], 1.0 if r.pending else 0.0)
                remap_state.add_metric([idx, "failure"], 1.0 if r.failure else 0.0)
            if g.nvlinks_total:
                nvl.add_metric([idx, "active"], g.nvlinks_active)
                nvl.add_metric([idx, "inactive"], g.nvlinks_total - g.nvlinks_active)
            if g.pcie.max_width:
                width.add_metric([idx, "current"], g.pcie.current_width)
                width.add_metric([idx, "max"], g.pcie.max_width)
                degraded.add_metric([idx], 1.0 if g.pcie.degraded else 0.0)
        xid = CounterMetricFamily(
            "nodeagent_gpu_xid_errors", "XID errors reported by the driver", labels=["gpu", "xid"]
        )
        for (gpu, code), n in sorted(v.xid_counts.items()):
            xid.add_metric([gpu, str(code)], n)
        yield from (
            info,
            healthy,
            *gauges.values(),
            ecc,
            rows,
            remap_state,
            nvl,
            width,
            degraded,
            xid,
        )

    def _rdma(self, v: AgentView) -> Iterator[Metric]:
        labels = ["device", "port"]
        state = GaugeMetricFamily(
            "nodeagent_rdma_port_state", "Port logical state (4 = ACTIVE)", labels=labels
        )
        phys = GaugeMetricFamily(
            "nodeagent_rdma_port_physical_state", "Port physical state (5 = LinkUp)", labels=labels
        )
        active = GaugeMetricFamily(
            "nodeagent_rdma_port_active", "1 when the port is ACTIVE", labels=labels
        )
        rate = GaugeMetricFamily(
            "nodeagent_rdma_port_rate_bytes_per_second", "Port signalling rate", labels=labels
        )
        counters = {
            key: CounterMetricFamily(
                f"nodeagent_rdma_port_{suffix.removesuffix('_total')}", text, labels=labels
            )
            for key, (suffix, text, _) in RDMA_COUNTERS.items()
        }
        for (device, port), status in sorted(v.rdma_ports.items()):
            lv = [device, str(port)]
            state.add_metric(lv, PORT_STATES.get(str(status.get("state")), 0))
            phys.add_metric(lv, PHYS_STATES.get(str(status.get("phys_state")), 0))
            active.add_metric(lv, 1.0 if status.get("state") == "ACTIVE" else 0.0)
            if "rate_gbps" in status:
                rate.add_metric(lv, int(status["rate_gbps"]) * 1e9 / 8)
            for key, (_, _, mult) in RDMA_COUNTERS.items():
                if key in status:
                    counters[key].add_metric(lv, int(status[key]) * mult)
        yield from (state, phys, active, rate, *counters.values())

    def _nvme(self, v: AgentView) -> Iterator[Metric]:
        ctrls = v.inventory.nvme_controllers
        yield GaugeMetricFamily(
            "nodeagent_nvme_controllers", "NVMe controllers present", value=len(ctrls)
        )
        info = GaugeMetricFamily(
            "nodeagent_nvme_controller_info",
            "NVMe controller (value 1)",
            labels=["controller", "model", "serial", "firmware", "pci_address"],
        )
        cap = GaugeMetricFamily(
            "nodeagent_nvme_namespace_capacity_bytes",
            "NVMe namespace capacity",
            labels=["controller", "namespace"],
        )
        for c in ctrls:
            info.add_metric([c.name, c.model, c.serial, c.firmware, c.pci_address], 1)
            for ns in c.namespaces:
                cap.add_metric([c.name, ns.name], ns.size_bytes)
        yield info
        yield cap
