"""dcgm-diag (standard: `dcgmi diag -r 2 -j`; long: `-r 3`), parsed from its JSON.

DCGM 3 nests tests in categories under "DCGM GPU Diagnostic" with a result per GPU
(`gpu_id` or `gpu_ids`, status Pass/Fail/Warn/Skip); DCGM 4 puts "tests" at the top (or under
"DCGM Diagnostic") with `entity_id` results and lower-case statuses. Both are read; a Fail
fails the check and names the test and GPU, a Warn is recorded, not failed.
"""

from __future__ import annotations

import json
from typing import Any

from nodeagent.acceptance import tools
from nodeagent.acceptance.model import Check, Context, Unparseable, judged, measure, skipped
from nodeagent.api.v1 import validate_pb2 as vpb

NAME = "dcgm-diag"
TOOL = "dcgmi"


def _json(out: bytes) -> dict[str, Any]:
    """dcgmi prints a line or two before the document ("Successfully ran diagnostic ...")."""
    text = out.decode("utf-8", "replace")
    start = text.find("{")
    if start < 0:
        raise Unparseable(TOOL, out, "no JSON document")
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise Unparseable(TOOL, out, f"not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise Unparseable(TOOL, out, "not a JSON object")
    return data


def results(data: dict[str, Any], raw: bytes) -> tuple[str, list[tuple[str, str, str, str]]]:
    """(DCGM version, [(test, gpu, status lower-case, warning text)]) from either layout."""
    body = data.get("DCGM GPU Diagnostic") or data.get("DCGM Diagnostic") or data
    if not isinstance(body, dict):
        raise Unparseable(TOOL, raw, "unexpected layout")
    version = str(body.get("version") or data.get("version") or "")
    tests: list[dict[str, Any]] = []
    if isinstance(body.get("test_categories"), list):
        for cat in body["test_categories"]:
            if isinstance(cat, dict) and isinstance(cat.get("tests"), list):
                tests += [t for t in cat["tests"] if isinstance(t, dict)]
    elif isinstance(body.get("tests"), list):
        tests = [t for t in body["tests"] if isinstance(t, dict)]
    else:
        raise Unparseable(TOOL, raw, "no test_categories or tests")
    out = []
    for test in tests:
        for res in test.get("results") or []:
            if not isinstance(res, dict):
                continue
            gpu = res.get("gpu_id", res.get("gpu_ids", res.get("entity_id", "")))
            warnings = res.get("warnings") or []
            text = "; ".join(
                str(w.get("warning", w)) if isinstance(w, dict) else str(w) for w in warnings
            )
            status = str(res.get("status", "")).lower()
            out.append((str(test.get("name", "?")), str(gpu), status, text))
    return version, out


def run(ctx: Context) -> vpb.CheckResult:
    path = tools.find(ctx, TOOL)
    if path is None:
        return skipped(NAME, "dcgmi not installed (DCGM absent)")
    if not ctx.inventory.gpus:
        return skipped(NAME, "no NVIDIA GPU on this node")
    level = "3" if ctx.level == "long" else "2"
    argv = [path, "diag", "-r", level, "-j"]
    out = tools.run(ctx, argv)
    data = _json(out.stdout)
    version, rows = results(data, out.stdout)
    ctx.tools[-1].version = version
    ms: list[vpb.Measurement] = []
    bad: list[str] = []
    for test, gpu, status, text in rows:
        ok = status not in ("fail", "failed")
        ms.append(measure(f"GPU {gpu}", test, 0, "", "!= fail", ok, status))
        if not ok:
            bad.append(f"DCGM {test} failed on GPU {gpu}{f': {text}' if text else ''}")
    if not rows:
        bad.append("dcgmi diag reported no test results")
    if out.code != 0 and not bad:
        bad.append(f"dcgmi diag exited {out.code}")
    return judged(NAME, ms, bad)


def timeout(ctx: Context) -> float:
    return 3600.0 if ctx.level == "long" else 900.0


CHECK = Check(NAME, "standard", "DCGM diagnostics (dcgmi diag -r 2, -r 3 at long)", run, timeout)
