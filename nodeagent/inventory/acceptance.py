"""Acceptance reports in the inventory: a report per run each agent sends, what a failed
required level does to the node, and the remote runs operators ask for.

A node is not trusted: a report is bounded (size, checks, names, levels) before anything
is stored. The agent sends its latest report whenever it changes, a run in progress too
(the checks done so far), so a run's row is replaced until the run ends; a run that ends
is never overwritten by a later message about it, so an agent cannot turn a failure into a
pass under the same run id.

A finished run that failed the level the node's profile requires moves the node: to
QUARANTINED (the profile's `on_failure: quarantine`, the default) from the states the
health policy may quarantine from, or to FAILED (`on_failure: fail`) where the lifecycle
allows it, else it is an event only. The reason is "acceptance: <check>: <why>". A later
run that passes the required level releases a quarantine that acceptance put there (not
one for another reason).

A remote run (`nodeagent admin nodes validate`) is a row asked of the node; every replica
polls the rows still asked into memory and hands them down in heartbeat replies, so the
agent needs no listener and the ask crosses NAT. The agent answers with its run's report
and the ask's id; the row then follows that run (running, done).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from nodeagent.api import auth
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.inventory import health, lifecycle
from nodeagent.inventory.store import NotFound, Store
from nodeagent.tuning.schema import ACCEPTANCE_CHECKS

ACTOR = "system:acceptance"
LEVELS = ("quick", "standard", "long")
MAX_REPORT_BYTES = 256 * 1024
MAX_CHECKS = 32
MAX_MEASUREMENTS = 1024  # per check: a value per GPU, rail, drive, controller
ASK_SECONDS = 3600.0  # an ask no agent took up within this long expires
S = ipb.NodeState
FINISHED = (vpb.RUN_PASSED, vpb.RUN_FAILED, vpb.RUN_INTERRUPTED)


def check_report(report: vpb.ValidationReport, request_id: str) -> None:
    """ValueError naming the first problem of a report a node sent."""
    size = report.ByteSize()
    if size > MAX_REPORT_BYTES:
        raise ValueError(f"acceptance: report of {size} bytes, at most {MAX_REPORT_BYTES}")
    if not report.run_id:
        raise ValueError("acceptance: report without a run_id")
    auth.validate_text(report.run_id, "acceptance run_id", 64)
    auth.validate_text(request_id, "acceptance_request_id", 64)
    for value, what in ((report.level, "level"), (report.required_level, "required_level")):
        if value and value not in LEVELS:
            raise ValueError(f"acceptance: unknown {what} {value[:20]!r}")
    if report.outcome not in (*FINISHED, vpb.RUN_RUNNING):
        raise ValueError(f"acceptance: outcome {report.outcome} is not a run's outcome")
    if report.on_failure not in ("", "quarantine", "fail"):
        raise ValueError(f"acceptance: unknown on_failure {report.on_failure[:20]!r}")
    if len(report.checks) > MAX_CHECKS:
        raise ValueError(f"acceptance: at most {MAX_CHECKS} checks")
    auth.validate_text(report.reason, "acceptance reason", 8000)
    for check in report.checks:
        if check.name not in ACCEPTANCE_CHECKS:
            raise ValueError(f"acceptance: unknown check {check.name[:40]!r}")
        if len(check.measurements) > MAX_MEASUREMENTS:
            raise ValueError(f"acceptance: {check.name}: at most {MAX_MEASUREMENTS} measurements")


def _outcome(report: vpb.ValidationReport) -> str:
    return vpb.RunOutcome.Name(report.outcome)


def judged_level(report: vpb.ValidationReport) -> bool:
    """Whether the run says something about READY: the whole required level (or above),
    not a partial (--only) run."""
    need = report.required_level or "quick"
    level = report.level if report.level in LEVELS else "quick"
    return not report.only and LEVELS.index(level) >= LEVELS.index(need)


def _move(store: Store, cur: Any, node_id: str, report: vpb.ValidationReport) -> None:
    """What a finished run does to the node's state (see the module's docstring)."""
    cur.execute(store.q("SELECT state, state_reason FROM nodes WHERE id = ?"), (node_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(node_id)
    state, reason = int(row[0]), str(row[1])
    if report.outcome == vpb.RUN_FAILED and judged_level(report):
        why = f"acceptance: {report.reason}"
        target = S.FAILED if report.on_failure == "fail" else S.QUARANTINED
        legal = (
            state in health.QUARANTINABLE
            if target == S.QUARANTINED
            else target in lifecycle.ALLOWED.get(state, set())
        )
        if legal:
            lifecycle.transition(store, cur, node_id, target, ACTOR, why)
        elif state != target or reason != why[:1000]:
            store.add_event(cur, node_id, ACTOR, state, state, why)
    elif (
        report.outcome == vpb.RUN_PASSED
        and judged_level(report)
        and state == S.QUARANTINED
        and reason.startswith("acceptance:")
    ):
        back = lifecycle.release_target(store, cur, node_id)
        lifecycle.transition(
            store,
            cur,
            node_id,
            back,
            ACTOR,
            f"acceptance passed at {report.level} (run {report.run_id})",
            release=True,
        )


def store_report(
    store: Store, node_id: str, report: vpb.ValidationReport, request_id: str = ""
) -> bool:
    """Keep a report a heartbeat carried; move the node when a finished run says so. True
    when the node's state may have changed (the caller re-reads it)."""
    blob = json_format.MessageToJson(report, indent=None, preserving_proto_field_name=True)
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q("SELECT outcome FROM acceptance_reports WHERE node_id = ? AND run_id = ?"),
            (node_id, report.run_id),
        )
        row = cur.fetchone()
        finished_names = {vpb.RunOutcome.Name(o) for o in FINISHED}
        if row is not None and row[0] in finished_names:
            return False  # a run's end is recorded once
        if row is None:
            cur.execute(
                store.q(
                    "INSERT INTO acceptance_reports (node_id, run_id, level, outcome, reason, "
                    "report, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                (node_id, report.run_id, report.level, _outcome(report), report.reason, blob, now),
            )
        else:
            cur.execute(
                store.q(
                    "UPDATE acceptance_reports SET level = ?, outcome = ?, reason = ?, "
                    "report = ?, received_at = ? WHERE node_id = ? AND run_id = ?"
                ),
                (report.level, _outcome(report), report.reason, blob, now, node_id, report.run_id),
            )
        done = report.outcome in FINISHED
        if request_id:
            cur.execute(
                store.q(
                    "UPDATE acceptance_requests SET run_id = ?, state = ?, updated_at = ? "
                    "WHERE request_id = ? AND node_id = ?"
                ),
                (report.run_id, "done" if done else "running", now, request_id, node_id),
            )
        elif done:
            cur.execute(
                store.q(
                    "UPDATE acceptance_requests SET state = 'done', updated_at = ? "
                    "WHERE node_id = ? AND run_id = ?"
                ),
                (now, node_id, report.run_id),
            )
        if done:
            what = f"acceptance {report.level}: {_outcome(report)}"
            if report.reason:
                what += f": {report.reason}"
            cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
            state_row = cur.fetchone()
            if state_row is None:
                raise NotFound(node_id)
            store.add_event(cur, node_id, ACTOR, state_row[0], state_row[0], what)
            _move(store, cur, node_id, report)
        return done


def latest(
    store: Store, cur: Any, node_id: str
) -> tuple[vpb.ValidationReport | None, ipb.ValidationAsk | None]:
    """The node's latest report (by when it arrived) and its latest remote run asked."""
    cur.execute(
        store.q(
            "SELECT report FROM acceptance_reports WHERE node_id = ? "
            "ORDER BY received_at DESC LIMIT 1"
        ),
        (node_id,),
    )
    row = cur.fetchone()
    report = None
    if row is not None:
        report = json_format.Parse(row[0], vpb.ValidationReport(), ignore_unknown_fields=True)
    cur.execute(
        store.q(
            "SELECT request_id, node_id, level, state, run_id, asked_at FROM acceptance_requests "
            "WHERE node_id = ? ORDER BY asked_at DESC LIMIT 1"
        ),
        (node_id,),
    )
    ask_row = cur.fetchone()
    return report, _ask(ask_row) if ask_row is not None else None


def reports(store: Store, node_id: str, limit: int = 20) -> list[vpb.ValidationReport]:
    """The node's reports, newest first (one per run)."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                "SELECT report FROM acceptance_reports WHERE node_id = ? "
                "ORDER BY received_at DESC LIMIT ?"
            ),
            (node_id, limit),
        )
        return [
            json_format.Parse(r[0], vpb.ValidationReport(), ignore_unknown_fields=True)
            for r in cur.fetchall()
        ]


def _ask(row: Any) -> ipb.ValidationAsk:
    ask = ipb.ValidationAsk(
        request_id=row[0], node_id=row[1], level=row[2], state=row[3], run_id=row[4]
    )
    ask.asked_at.FromNanoseconds(int(float(row[5]) * 1e9))
    return ask


def ask(store: Store, node_id: str, level: str, actor: str) -> ipb.ValidationAsk:
    """Record an operator's remote run; the node's next heartbeat reply carries it."""
    if level and level not in LEVELS:
        raise ValueError("level must be quick, standard or long")
    now = time.time()
    with store.tx() as cur:
        cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(node_id)
        if row[0] == S.RETIRED:
            raise ValueError(f"node {node_id} is retired")
        request_id = uuid.uuid4().hex[:16]
        cur.execute(
            store.q(
                "INSERT INTO acceptance_requests (request_id, node_id, level, state, actor, "
                "asked_at, updated_at) VALUES (?, ?, ?, 'asked', ?, ?, ?)"
            ),
            (request_id, node_id, level, actor, now, now),
        )
        store.add_event(
            cur, node_id, actor, row[0], row[0], f"acceptance run asked ({level or 'required'})"
        )
        return _ask((request_id, node_id, level, "asked", "", now))


def poll(store: Store) -> dict[str, list[ipb.ValidationAsk]]:
    """The asks no agent took up yet, by node; those older than ASK_SECONDS expire."""
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q(
                "UPDATE acceptance_requests SET state = 'expired', updated_at = ? "
                "WHERE state = 'asked' AND asked_at < ?"
            ),
            (now, now - ASK_SECONDS),
        )
        cur.execute(
            store.q(
                "SELECT request_id, node_id, level, state, run_id, asked_at "
                "FROM acceptance_requests WHERE state = 'asked' ORDER BY asked_at"
            )
        )
        out: dict[str, list[ipb.ValidationAsk]] = {}
        for row in cur.fetchall():
            out.setdefault(row[1], []).append(_ask(row))
    return out


def answered(
    cache: Mapping[str, list[ipb.ValidationAsk]], node_id: str, request_id: str
) -> dict[str, list[ipb.ValidationAsk]]:
    """The cache without the ask a heartbeat answered: stop asking before the next poll."""
    out = dict(cache)
    out[node_id] = [a for a in cache.get(node_id, []) if a.request_id != request_id]
    return out
