"""The committed generated modules match protos/ (run `make protos` after editing a .proto)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load_generator():  # tools/ is not a package; load the script as a module
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "tools" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    written = _load_generator().generate(tmp_path)
    assert written, "no modules generated"
    committed = REPO / "nodeagent" / "api" / "v1"
    fresh = {p.name: p.read_text() for p in written}
    existing = {p.name: p.read_text() for p in committed.glob("*_pb2*.py*")}
    assert sorted(existing) == sorted(fresh), "generated file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != existing[name]]
    assert not stale, f"stale generated modules {stale}: run `make protos`"
