"""The mutation-testing driver's configuration and arithmetic (tools/mutation.py).

`make mutation` takes minutes per module and is not part of `make test`, so a module renamed
or a test file moved would only show when someone next runs it; these checks keep its list,
the committed equivalents and the score it reports honest in every test run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_driver() -> ModuleType:  # tools/ is not a package; load the script as a module
    name = "tools_mutation"
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mutation = _load_driver()


def test_every_configured_module_and_test_selection_exists() -> None:
    for target in mutation.TARGETS:
        assert (REPO / target.module).is_file(), target.module
        for path in target.tests:
            assert (REPO / path).exists(), f"{target.module}: {path}"
        assert set(target.through_child) <= set(target.tests), target.module
    modules = [t.module for t in mutation.TARGETS]
    assert len(modules) == len(set(modules))


def test_the_committed_equivalents_parse_and_name_configured_modules() -> None:
    equivalents = mutation.load_equivalents(mutation.EQUIVALENTS)
    for module, entries in equivalents.items():
        prefix = mutation.dotted(module) + "."
        for name, reason in entries.items():
            assert name.startswith(prefix) and "__mutmut_" in name, name
            assert reason


@pytest.mark.parametrize(
    "line",
    [
        "nodeagent/topology/tiers.py x_set_id__mutmut_3",  # no reason
        "nodeagent/topology/tiers.py x_set_id__mutmut_3  #   ",  # an empty reason
        "nodeagent/nowhere.py x_f__mutmut_1  # not a configured module",
        "x_set_id__mutmut_3  # no module",
    ],
)
def test_an_equivalents_entry_needs_a_configured_module_and_a_reason(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "equivalents.txt"
    path.write_text(f"# comment\n\n{line}\n")
    with pytest.raises(SystemExit):
        mutation.load_equivalents(path)


def test_short_and_full_mutant_names_mean_the_same_mutant(tmp_path: Path) -> None:
    path = tmp_path / "equivalents.txt"
    path.write_text(
        "nodeagent/topology/tiers.py  x_health__mutmut_1  # a reason\n"
        "nodeagent/topology/tiers.py  nodeagent.topology.tiers.x_health__mutmut_2  # another\n"
    )
    assert mutation.load_equivalents(path) == {
        "nodeagent/topology/tiers.py": {
            "nodeagent.topology.tiers.x_health__mutmut_1": "a reason",
            "nodeagent.topology.tiers.x_health__mutmut_2": "another",
        }
    }


def test_the_score_counts_uncovered_as_survivors_and_leaves_out_equivalent_and_skipped() -> None:
    target = mutation.TARGETS[0]
    statuses = {
        "m.x_f__mutmut_1": "killed",
        "m.x_f__mutmut_2": "timeout",
        "m.x_f__mutmut_3": "segfault",
        "m.x_f__mutmut_4": "survived",
        "m.x_f__mutmut_5": "no tests",
        "m.x_f__mutmut_6": "skipped",
        "m.x_f__mutmut_7": "survived",
        "m.x_f__mutmut_10": "suspicious",
    }
    result = mutation.Result(target, statuses, equivalent={"m.x_f__mutmut_7"})
    counts = result.counts()
    assert (counts["killed"], counts["timeout"], counts["survived"]) == (2, 1, 2)
    assert (counts["not covered"], counts["skipped"], counts["equivalent"]) == (1, 1, 1)
    assert result.score() == pytest.approx(100.0 * 3 / 6)
    # what a test still has to kill, in source order (9 before 10)
    assert result.undetected() == ["m.x_f__mutmut_4", "m.x_f__mutmut_5", "m.x_f__mutmut_10"]
