"""The Grafana dashboards: the committed JSON is tools/gen_grafana.py's output, and every
metric a panel or an alert rule queries is one that a live agent (on a modelled DGX H100,
after a tuning verification) or a live inventory serves on /metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import yaml

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import profiles
from testbed import fakehost
from testbed.agent_process import AgentProcess
from testbed.inventory_process import InventoryProcess
from testbed.machines import build_machine

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "nodeagent" / "monitoring" / "grafana"
ALERTS = REPO / "nodeagent" / "monitoring" / "alerts.yml"
# Prometheus' own: the scrape's health, not an exporter's metric
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# the series a histogram's TYPE line stands for (counters and info metrics are declared
# under their series' own names: x_total, x_info)
HISTOGRAM = ("_bucket", "_sum", "_count")


def _generator() -> ModuleType:  # tools/ is not a package; load the script as a module
    spec = importlib.util.spec_from_file_location("gen_grafana", REPO / "tools" / "gen_grafana.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_grafana"] = module
    spec.loader.exec_module(module)
    return module


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges, grouping clauses, numbers, function calls and keywords are gone."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:e[+-]?\d+)?[a-z]*", " ", text, flags=re.I)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or an operator
        names.add(word)
    return names


def test_metric_names_of_promql() -> None:
    assert metric_names(
        'sum by (instance, gpu) (increase(a_total{x=~"1|2", y="by (z)"}[$__range])) or vector(0)'
    ) == {"a_total"}
    assert metric_names(
        "(b == 0) + on (instance, gpu) group_left (model, uuid) c_info offset 10m"
    ) == {"b", "c_info"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(d_bucket[5m])))") == {
        "d_bucket"
    }
    assert metric_names('min(e{role="node"}) - time() < min(f) / 2 and 14 * 86400 > 1e+09') == {
        "e",
        "f",
    }
    assert metric_names("max_over_time(count by (job) (g)[1d:5m]) unless bool h") == {"g", "h"}


def dashboard_queries() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(GRAFANA.glob("*.json")):
        model = json.loads(path.read_text())
        exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", [])]
        variables = [v["query"] for v in model["templating"]["list"] if v["type"] == "query"]
        # Grafana's label_values(METRIC, LABEL) is not PromQL: its metric is what it queries
        exprs += [re.sub(r"^label_values\((\w+), \w+\)$", r"\1", q) for q in variables]
        found[path.name] = exprs
    return found


def alert_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def exported(text: str) -> set[str]:
    """The series names a /metrics page declares (from its TYPE lines)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM)
            else:
                names.add(name)
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_committed_dashboards_are_the_generators_output(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in GRAFANA.glob("*.json"))
    for path in written:
        assert path.read_text() == (GRAFANA / path.name).read_text(), (
            f"{path.name} differs from tools/gen_grafana.py's output: run it, do not edit JSON"
        )


def test_every_metric_queried_is_exported(scratch: Path) -> None:
    root = scratch / "dgx"
    build_machine("dgx-h100", root)
    fakehost.prepare(root)  # a throwaway host: tuning's commands are stand-ins
    tuning = (
        f'[tuning]\ncommands_file = "{root}/.nodeagent/commands.json"\n'
        f'profiles_dir = "{profiles.SHIPPED}"\n'
    )
    (scratch / "agent").mkdir()
    agent = AgentProcess(scratch / "agent", root, tuning).start()
    inventory = InventoryProcess(
        scratch / "inv", f"sqlite:///{scratch / 'inv.db'}", metrics=True
    ).start()
    try:
        with agent.channel() as channel:
            agent.stub(channel).VerifyTuning(tpb.VerifyTuningRequest(), timeout=60)
        agent_page, inventory_page = scrape(agent.metrics_port), scrape(inventory.metrics_port)
    finally:
        inventory.kill()
        agent.stop()
        agent.close()
    # the agent's page has samples for the hardware the panels show, not only TYPE lines
    for family in (
        "gpu_temperature_celsius",
        "rdma_port_active",
        "nvme_namespace_capacity_bytes",
        "tuning_drift",
    ):
        assert f"\nnodeagent_{family}{{" in agent_page, family
    served = exported(agent_page) | exported(inventory_page) | PROMETHEUS_OWN
    queried: dict[str, set[str]] = {}
    sources: list[tuple[str, list[str]]] = [
        *dashboard_queries().items(),
        ("alerts.yml", alert_queries()),
    ]
    for source, exprs in sources:
        for expr in exprs:
            for name in metric_names(expr):
                queried.setdefault(name, set()).add(source)
    missing = {name: sorted(where) for name, where in queried.items() if name not in served}
    assert not missing, f"queried but not exported: {missing}"
    # both dashboards and the rules query something of both exporters' pages
    assert {"nodeagent-nodes.json", "nodeagent-inventory.json", "alerts.yml"} == {
        s for where in queried.values() for s in where
    }
    assert len(queried) >= 40, sorted(queried)
