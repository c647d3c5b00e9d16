"""Acceptance in the agent's own life: READY waits for the required level, the agent runs
that level itself, and runs an operator asked for through the inventory.

READY needs preflight and the last acceptance report to pass the level the node's profile
requires (validate_rpc.last_result). Nobody has to ask for the first run: after preflight
passes, the agent runs the required level once for what it is checking, which is the
hardware (the inventory hash), the profile and its required level, and the last tuning
apply; a change of any of them runs it again. A failed or interrupted run is not retried by
itself, and an interrupted one holds the node until a run finishes (a failing part fails
again; an interrupted run is kept as the report the inventory sees, never replaced by one
the agent started unasked): `nodeagent validate`, ValidateNode or `nodeagent admin nodes
validate` runs it again.

A remote run comes down in a heartbeat reply (HeartbeatResponse.validations) and runs in a
worker thread; its report, the checks done so far while it runs, goes up in the
following heartbeats with the ask's id. The inventory needs no way in to the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nodeagent.acceptance import runner, store
from nodeagent.agent import validate_rpc
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.tuning import profiles

log = logging.getLogger("nodeagent.agent.acceptance")
KEY = "acceptance_key"  # in the state file: what the agent's own last run was for
PROFILE_ERRORS = (profiles.NoProfile, profiles.ProfileError, ValueError, OSError)


class AcceptanceGate:
    """One per agent; `agent` is the daemon's Agent (root, inventory, state, config)."""

    def __init__(self, agent: Any, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.agent = agent
        self.spawn = spawn
        self.asked: set[str] = set()  # remote runs taken up (request ids)
        self.running: tuple[str, vpb.ValidationReport] | None = None  # (request id, so far)
        self.answers: dict[str, str] = {}  # run id -> the request id it answered

    def _profile(self) -> Any:
        try:
            return validate_rpc.service(self.agent)._profile("")
        except PROFILE_ERRORS:
            return None

    def _key(self, profile: Any) -> str:
        tuning = self.agent.state.data.get("tuning")
        what = [
            self.agent.hash,
            profile.name if profile is not None else "",
            profile.acceptance.required_level if profile is not None else "",
            tuning if isinstance(tuning, dict) else None,
        ]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def blocking(self) -> str:
        """'' when the required level has passed, else the line that keeps the node from
        READY ("acceptance: <check>: <why>"). Runs the level first when the agent has not
        run it for this hardware, profile and tuning. Blocking: call it in a worker thread."""
        profile = self._profile()
        key = self._key(profile)
        last = validate_rpc.last_result(self.agent)
        interrupted = last.report is not None and last.report.outcome == vpb.RUN_INTERRUPTED
        if last.report is None or (self.agent.state.data.get(KEY) != key and not interrupted):
            try:
                report = runner.run(
                    self.agent.root,
                    self.agent.inventory,
                    profile,
                    self.agent.config.state_dir,
                    runner.Options(gpu_driver=self.agent.tuning.gpu_driver()),
                )
            except store.Busy:
                return "acceptance: tests running"
            except ValueError as exc:  # an unknown level in the profile
                return f"acceptance: cannot run: {exc}"
            self.agent.state.data[KEY] = key
            log.info(
                "acceptance %s: %s%s",
                report.level,
                vpb.RunOutcome.Name(report.outcome),
                f" ({report.reason})" if report.reason else "",
            )
            last = validate_rpc.last_result(self.agent)
        if last.required_passed:
            return ""
        if last.report is not None and last.report.outcome == vpb.RUN_FAILED:
            return f"acceptance: {last.report.reason}"
        return f"acceptance: {last.reason}"

    def report(self) -> tuple[vpb.ValidationReport | None, str]:
        """For heartbeats: the latest report (a remote run in progress with its checks so
        far) and the remote run it answers ('' the agent's own)."""
        last = validate_rpc.last_result(self.agent).report
        if last is None:
            return None, ""
        if last.outcome == vpb.RUN_RUNNING and self.running is not None:
            request_id, so_far = self.running
            out = vpb.ValidationReport()
            out.CopyFrom(last)
            out.checks.extend(so_far.checks)
            return out, request_id
        return last, self.answers.get(last.run_id, "")

    def on_asks(self, asks: list[Any]) -> None:
        """Remote runs the inventory hands down; each is taken up once."""
        for ask in asks:
            if ask.request_id in self.asked or self.running is not None:
                continue
            self.asked.add(ask.request_id)
            self.running = (ask.request_id, vpb.ValidationReport())
            self.spawn(self._run(ask.request_id, ask.level))

    async def _run(self, request_id: str, level: str) -> None:
        so_far = self.running[1] if self.running is not None else vpb.ValidationReport()

        def progress(event: vpb.ValidationEvent) -> None:
            if event.HasField("check"):
                so_far.checks.append(event.check)

        profile = self._profile()
        opts = runner.Options(
            level=level, progress=progress, gpu_driver=self.agent.tuning.gpu_driver()
        )
        agent = self.agent
        try:
            report = await asyncio.to_thread(
                runner.run, agent.root, agent.inventory, profile, agent.config.state_dir, opts
            )
        except store.Busy:  # another run holds the lock: the inventory asks again
            log.info("remote acceptance run %s waits: another run is in progress", request_id)
            self.asked.discard(request_id)
            self.running = None
            return
        except Exception as exc:  # e.g. an unknown level: nothing ran, nothing to report
            log.error("remote acceptance run %s: %s", request_id, exc)
            self.running = None
            return
        self.answers[report.run_id] = request_id
        while len(self.answers) > 16:
            self.answers.pop(next(iter(self.answers)))
        self.running = None
        log.info(
            "remote acceptance run %s (%s): %s",
            request_id,
            report.level,
            vpb.RunOutcome.Name(report.outcome),
        )
        await agent.discover("acceptance run")  # READY follows the new report
