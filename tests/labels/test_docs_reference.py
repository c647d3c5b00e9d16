"""docs/labels.md against the code: every key the label families write is documented there,
and every documented key is written on some modelled machine (or needs what no model has)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodeagent.labels.config import FAMILIES, LabelConfig
from nodeagent.labels.inputs import Assignment
from testbed.machines import MACHINES
from tests.labels.conftest import LabelsOf

DOC = Path(__file__).resolve().parents[2] / "docs" / "labels.md"
# what a <placeholder> in a documented key stands for
PLACEHOLDERS = {"class": "[0-9a-f]{4}", "vendor": "[0-9a-f]{4}"}
# Documented keys no modelled machine produces, each with the reason.
NEEDS_HARDWARE = {
    "feature.node.kubernetes.io/rdma.available": (
        "needs the ib_uverbs and rdma_ucm modules both loaded; no modelled machine loads rdma_ucm"
    ),
}
EVERYTHING = LabelConfig(families=FAMILIES)
ASSIGNED = Assignment(pool="train-a", profile="hgx-h100", tuning="applied")


def documented_keys(text: str) -> list[str]:
    """The first cell of every row of the tables whose first header cell is `key`."""
    keys: list[str] = []
    in_key_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_key_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "key":
            in_key_table = True
        elif in_key_table and not set(cells[0]) <= set("-: "):
            m = re.fullmatch(r"`([^`\s]+)`", cells[0])
            assert m, f"docs/labels.md: a key cell must be one `key`, got {cells[0]!r}"
            keys.append(m.group(1))
    return keys


def key_pattern(documented: str) -> re.Pattern[str]:
    parts = re.split(r"<([a-z-]+)>", documented)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            assert part in PLACEHOLDERS, f"docs/labels.md: unknown placeholder <{part}>"
            out.append(PLACEHOLDERS[part])
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


@pytest.fixture(scope="module")
def documented() -> dict[str, re.Pattern[str]]:
    keys = documented_keys(DOC.read_text(encoding="utf-8"))
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"documented twice: {duplicates}"
    return {key: key_pattern(key) for key in keys}


@pytest.fixture(scope="module")
def produced(labels_of: LabelsOf) -> dict[str, set[str]]:
    """Every key any modelled machine gets with every family on, and the machines that do."""
    out: dict[str, set[str]] = {}
    for name in MACHINES:
        for key in labels_of(name, EVERYTHING, ASSIGNED):
            out.setdefault(key, set()).add(name)
    return out


def test_the_reference_tables_are_found(documented: dict[str, re.Pattern[str]]) -> None:
    assert "gpu.nodeagent.io/count" in documented
    assert "nvidia.com/gpu.product" in documented
    assert len(documented) > 50


def test_every_key_the_code_writes_is_documented(
    documented: dict[str, re.Pattern[str]], produced: dict[str, set[str]]
) -> None:
    missing = {
        key: sorted(machines)
        for key, machines in produced.items()
        if not any(p.fullmatch(key) for p in documented.values())
    }
    assert not missing, f"written but not in docs/labels.md: {missing}"


def test_every_documented_key_is_written_somewhere(
    documented: dict[str, re.Pattern[str]], produced: dict[str, set[str]]
) -> None:
    unseen = sorted(
        key
        for key, pattern in documented.items()
        if key not in NEEDS_HARDWARE and not any(pattern.fullmatch(k) for k in produced)
    )
    assert not unseen, f"in docs/labels.md but no modelled machine writes them: {unseen}"


def test_keys_said_to_need_other_hardware_are_documented_and_unseen(
    documented: dict[str, re.Pattern[str]], produced: dict[str, set[str]]
) -> None:
    for key in NEEDS_HARDWARE:
        assert key in documented, f"{key}: listed in NEEDS_HARDWARE but not documented"
        assert key not in produced, f"{key}: a modelled machine writes it now; unlist it"
