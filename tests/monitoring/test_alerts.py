"""The alert rules (nodeagent/monitoring/alerts.yml) through Debian's promtool: they load,
and each has unit tests in rules/ that pass, with a case where it fires and one where it
stays quiet."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "nodeagent" / "monitoring" / "alerts.yml"
RULE_TESTS = sorted((Path(__file__).parent / "rules").glob("*.test.yml"))


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_names() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["alert"] for group in rules["groups"] for r in group["rules"]]


def test_the_rules_load() -> None:
    check = promtool("check", "rules", str(ALERTS))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout
    assert sorted(alert_names()) == [
        "NodeagentAgentDown",
        "NodeagentCertificateExpiringSoon",
        "NodeagentGpuFatalXid",
        "NodeagentGpuFellOffTheBus",
        "NodeagentGpuRowRemapFailure",
        "NodeagentInventoryDatabaseErrors",
        "NodeagentInventoryDown",
        "NodeagentNodeCertificateNotRenewed",
        "NodeagentNodeUnreachable",
        "NodeagentRailDegraded",
        "NodeagentRailDown",
        "NodeagentTuningDrift",
    ]


def test_every_rule_is_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        spec: dict[str, Any] = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == ["../../../nodeagent/monitoring/alerts.yml"], path
        for case in spec["tests"]:
            for check in case["alert_rule_test"]:
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == set(alert_names()), "rules without a case where they fire"
    assert quiet == set(alert_names()), "rules without a case where they stay quiet"


@pytest.mark.parametrize("path", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_rule_unit_tests_pass(path: Path) -> None:
    run = promtool("test", "rules", path.name, cwd=path.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("SUCCESS"), run.stdout
