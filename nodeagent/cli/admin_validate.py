"""`nodeagent admin nodes validate NODE`: run a node's acceptance checks from afar.

The inventory cannot call the agent (no listener on the node, NAT in between): it hands
the ask down in the node's next heartbeat reply, and the agent's report comes back in the
heartbeats after it, a run in progress with the checks done so far. So this command asks
(StartValidation) and then watches the node's record (GetNode) until its report for this
ask is finished, printing each check as it arrives. Progress moves at the pace of the
node's heartbeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.cli import render
from nodeagent.cli.admin_client import AdminClient
from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, CliError

VERDICTS = {vpb.VERDICT_PASS: "pass", vpb.VERDICT_FAIL: "FAIL", vpb.VERDICT_SKIP: "skip"}
OUTCOMES = {vpb.RUN_PASSED: "passed", vpb.RUN_FAILED: "FAILED", vpb.RUN_INTERRUPTED: "INTERRUPTED"}


def _answer(node: Any, request_id: str) -> tuple[str, Any]:
    """(the run answering the ask, "" none yet; its report when the node's latest is it)."""
    ask = node.validation
    if ask.request_id != request_id or not ask.run_id:
        return "", None
    report = node.acceptance
    return ask.run_id, report if report.run_id == ask.run_id else None


def run(client: AdminClient, args: argparse.Namespace) -> int:
    ask = client.call(
        "StartValidation", ipb.StartValidationRequest(node_id=args.node, level=args.level or "")
    )
    table = client.output == "table"
    say = print if table else (lambda *a, **k: None)
    level = args.level or "the profile's required level"
    say(f"asked node {args.node} to run acceptance ({level}); waiting for its next heartbeat")
    deadline = time.monotonic() + args.wait
    shown = 0
    started = False
    while True:
        node = client.call("GetNode", ipb.GetNodeRequest(node_id=args.node, events=1))
        run_id, report = _answer(node, ask.request_id)
        if run_id and not started:
            started = True
            say(f"run {run_id} started")
        if report is not None:
            for check in report.checks[shown:]:
                line = f"  {check.name}: {VERDICTS.get(check.verdict, '-')}"
                say(f"{line} ({check.reason})" if check.reason else line)
            shown = len(report.checks)
            if report.outcome != vpb.RUN_RUNNING:
                return _finish(client, node, report)
        if node.validation.request_id == ask.request_id and node.validation.state == "expired":
            raise CliError(f"node {args.node} did not take the run up (is its agent running?)")
        if time.monotonic() > deadline:
            raise CliError(
                f"no finished report from node {args.node} within {args.wait:g} s "
                f"(ask {ask.request_id}; `nodeagent admin nodes show {args.node}` shows it later)"
            )
        time.sleep(args.poll)


def summary(report: Any) -> str:
    """The `nodes show` line of the node's latest acceptance report."""
    outcome = OUTCOMES.get(report.outcome, "running")
    why = f": {render.clip(report.reason, 200)}" if report.reason else ""
    return f"acceptance {report.level} {outcome}{why} (run {report.run_id})"


def _finish(client: AdminClient, node: Any, report: Any) -> int:
    if client.output == "table":
        # read again: GetNode reads the node and its report in two transactions, and the
        # heartbeat that stored the report moved the node in the same one as the report,
        # so a read that saw the report may have seen the state from before it
        node = client.call("GetNode", ipb.GetNodeRequest(node_id=node.id))
        outcome = OUTCOMES.get(report.outcome, "?")
        why = f" ({report.reason})" if report.reason else ""
        print(f"acceptance {report.level}: {outcome}{why}")
        print(f"node {node.id} is {ipb.NodeState.Name(node.state)}  {node.state_reason}".rstrip())
    else:
        sys.stdout.write(render.message(report, client.output))
    return EXIT_OK if report.outcome == vpb.RUN_PASSED else EXIT_PROBLEM


def register(nodes_sub: Any, command: Any, node_help: str) -> None:
    p = command(
        nodes_sub,
        "validate",
        run,
        nodes=("node",),
        help="run the node's acceptance checks through its heartbeats and show their progress",
    )
    p.add_argument("node", help=node_help)
    p.add_argument("--level", choices=("quick", "standard", "long"))
    p.add_argument("--wait", type=float, default=7200, help="seconds to wait for the report")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
