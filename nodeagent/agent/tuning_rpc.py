"""The agent's side of golden-image tuning: the ApplyTuning stream and VerifyTuning.

Apply runs in a worker thread (ansible-runner blocks) and its events are forwarded to the
gRPC stream as they come. One apply at a time. The phase follows the run: TUNING while it
runs, FAILED with the task and its error, REBOOT_REQUIRED when a setting waits for a boot,
otherwise back to where it was. Every verification refreshes the drift gauge
(`nodeagent_tuning_drift{setting}`: 1 for drift or pending). A client that goes away does
not stop a run half-way: the run finishes and its result is kept in the state file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import apply as apply_mod
from nodeagent.tuning import bios as bios_mod
from nodeagent.tuning import commands as commands_mod
from nodeagent.tuning import profiles
from nodeagent.tuning.verify import DRIFT, PENDING, verify

if TYPE_CHECKING:
    from nodeagent.agent.daemon import Agent

log = logging.getLogger("nodeagent.agent.tuning_rpc")


class TuningService:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._busy = asyncio.Lock()

    def _profile(self, name: str) -> tpb.TuningProfile:
        cfg = self.agent.config.tuning
        dirs = profiles.profile_dirs(cfg.profiles_dir or None)
        assigned = str(self.agent.state.get("assigned_profile", "") or cfg.profile)
        return profiles.resolve(name or None, self.agent.inventory, dirs, assigned)

    def _bmc(self) -> bios_mod.BmcTarget | None:
        cfg = self.agent.config.tuning
        if not cfg.bmc_url:
            return None
        password = Path(cfg.bmc_password_file).read_text().strip() if cfg.bmc_password_file else ""
        return bios_mod.BmcTarget(cfg.bmc_url, cfg.bmc_username, password, cfg.bmc_verify_tls)

    def _record(self, report: tpb.TuningReport) -> None:
        self.agent.view.drift = {s.setting: s.status in (DRIFT, PENDING) for s in report.settings}

    async def verify(
        self, request: tpb.VerifyTuningRequest, context: grpc.aio.ServicerContext
    ) -> tpb.TuningReport:
        try:
            profile = self._profile(request.profile)
            bmc = self._bmc()
        except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

        def run() -> tpb.TuningReport:
            bios = bios_mod.verify_bios(bmc, profile.bios) if bmc else []
            return verify(self.agent.root, profile, self.agent.inventory, bios)

        try:
            report = await asyncio.to_thread(run)
        except bios_mod.BiosError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise
        self._record(report)
        return report

    async def apply(
        self, request: tpb.ApplyTuningRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tpb.TuningEvent]:
        agent = self.agent
        reason = apply_mod.refuse_reason(agent.phase, request.allow_joined)
        if reason and not request.check:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"refusing to apply: {reason}")
        if request.reboot_policy not in ("", *apply_mod.REBOOT_POLICIES):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reboot_policy must be one of {apply_mod.REBOOT_POLICIES}",
            )
        if self._busy.locked():
            await context.abort(grpc.StatusCode.ABORTED, "another tuning run is in progress")
        async with self._busy:
            try:
                profile = self._profile(request.profile)
                commands = commands_mod.load(agent.config.tuning.commands_file or None)
                bmc = self._bmc()
            except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError) as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                return
            bios_step = None
            if bmc is not None:
                target, settings = bmc, profile.bios

                def bios_step(check: bool) -> Any:
                    return bios_mod.apply_bios(target, settings, check)

            opts = apply_mod.ApplyOptions(
                profile,
                agent.root,
                agent.inventory,
                check=request.check,
                reboot_policy=request.reboot_policy or "never",
                commands=commands,
                bios=bios_step,
            )
            before = agent.phase
            if not request.check:
                agent._set_phase("TUNING")
                # Recorded before the first task: a kill -9 mid-run leaves "running" behind,
                # which the next start reports as interrupted, never as success.
                agent.state["tuning"] = {
                    "profile": profile.name,
                    "outcome": "running",
                    "phase_before": before,
                }
                agent._save_state()
            async for event in _in_thread(apply_mod.apply, opts):
                if event.HasField("result"):
                    self._finish(event.result, before)
                yield event

    def recover(self) -> None:
        """At start: an apply that was running when the agent died did not finish."""
        agent = self.agent
        record = agent.state.get("tuning")
        if not isinstance(record, dict) or record.get("outcome") != "running":
            return
        record["outcome"] = "interrupted"
        agent.last_error = (
            f"tuning apply of profile {record.get('profile')!r} was interrupted "
            "(the agent stopped during the run); nothing was verified: "
            "run it again"
        )
        log.error("%s", agent.last_error)
        agent.phase = "FAILED"
        agent.view.phase = "FAILED"
        agent._save_state()

    def _finish(self, result: tpb.ApplyResult, before: str) -> None:
        agent = self.agent
        self._record(result.report)
        if result.check:
            return
        agent.state["tuning"] = {
            "profile": result.profile,
            "outcome": result.outcome,
            "failed_task": result.failed_task,
        }
        if result.outcome == "failed":
            agent.last_error = f"tuning task '{result.failed_task}' failed: {result.error}"
            log.error("%s", agent.last_error)
            agent._set_phase("FAILED")
        elif result.outcome in ("reboot-required", "rebooting"):
            agent._set_phase("REBOOT_REQUIRED")
        else:
            agent._set_phase(before if before not in ("TUNING", "FAILED") else "DISCOVERED")
        agent._save_state()


async def _in_thread(func: Any, *args: Any) -> AsyncIterator[Any]:
    """Iterate a blocking generator in a worker thread, yielding its items on the loop."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def work() -> None:
        try:
            for item in func(*args):
                loop.call_soon_threadsafe(items.put_nowait, ("item", item))
        except BaseException as exc:  # re-raised on the loop
            loop.call_soon_threadsafe(items.put_nowait, ("error", exc))
        finally:
            loop.call_soon_threadsafe(items.put_nowait, ("done", None))

    threading.Thread(target=work, name="tuning-apply", daemon=True).start()
    while True:
        kind, value = await items.get()
        if kind == "item":
            yield value
        elif kind == "error":
            raise value
        else:
            return
