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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from nodeagent.agent.config import TuningConfig
from nodeagent.agent.metrics import AgentView
from nodeagent.agent.state import AgentState, Phase
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.host import HostRoot
from nodeagent.tuning import apply as apply_mod
from nodeagent.tuning import bios as bios_mod
from nodeagent.tuning import commands as commands_mod
from nodeagent.tuning import profiles
from nodeagent.tuning.verify import DRIFT, PENDING, verify

log = logging.getLogger("nodeagent.agent.tuning_rpc")


class TuningService:
    """Tuning reads what discovery found and writes only the phase, the tuning record and
    the drift gauge; the configuration and the inventory are read at each call, since a
    reload or a discovery replaces them."""

    def __init__(
        self,
        state: AgentState,
        root: HostRoot,
        view: AgentView,
        config: Callable[[], TuningConfig],
        inventory: Callable[[], pb.HardwareInventory],
    ) -> None:
        self.state = state
        self.root = root
        self.view = view
        self.config = config
        self.inventory = inventory
        self._busy = asyncio.Lock()

    def _profile(self, name: str) -> tpb.TuningProfile:
        cfg = self.config()
        dirs = profiles.profile_dirs(cfg.profiles_dir or None)
        assigned = str(self.state.data.get("assigned_profile", "") or cfg.profile)
        # a caller over TCP names an installed profile; a file path is for the local CLI
        name = profiles.installed_name(name) if name else ""
        return profiles.resolve(name or None, self.inventory(), dirs, assigned)

    def _bmc(self) -> bios_mod.BmcTarget | None:
        cfg = self.config()
        if not cfg.bmc_url:
            return None
        password = Path(cfg.bmc_password_file).read_text().strip() if cfg.bmc_password_file else ""
        return bios_mod.BmcTarget(cfg.bmc_url, cfg.bmc_username, password, cfg.bmc_verify_tls)

    def _record(self, report: tpb.TuningReport) -> None:
        self.view.drift = {s.setting: s.status in (DRIFT, PENDING) for s in report.settings}

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
            return verify(self.root, profile, self.inventory(), bios)

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
        state = self.state
        reason = apply_mod.refuse_reason(state.phase, request.allow_joined)
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
                commands = commands_mod.load(self.config().commands_file or None)
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
                self.root,
                self.inventory(),
                check=request.check,
                reboot_policy=request.reboot_policy or "never",
                commands=commands,
                bios=bios_step,
            )
            before = state.phase
            if not request.check:
                state.set_phase(Phase.TUNING)
                # Recorded before the first task: a kill -9 mid-run leaves "running" behind,
                # which the next start reports as interrupted, never as success.
                state.data["tuning"] = {
                    "profile": profile.name,
                    "outcome": "running",
                    "phase_before": str(before),
                }
                state.save()
            async for event in _in_thread(apply_mod.apply, opts):
                if event.HasField("result"):
                    self._finish(event.result, before)
                yield event

    def recover(self) -> None:
        """At start: an apply that was running when the agent died did not finish."""
        record = self.state.data.get("tuning")
        if not isinstance(record, dict) or record.get("outcome") != "running":
            return
        record["outcome"] = "interrupted"
        self._fail(
            f"tuning apply of profile {record.get('profile')!r} was interrupted "
            "(the agent stopped during the run); nothing was verified: "
            "run it again"
        )
        self.state.save()

    def _fail(self, error: str) -> None:
        log.error("%s", error)
        self.state.set_phase(Phase.FAILED, error)

    def _finish(self, result: tpb.ApplyResult, before: Phase) -> None:
        self._record(result.report)
        if result.check:
            return
        self.state.data["tuning"] = {
            "profile": result.profile,
            "outcome": result.outcome,
            "failed_task": result.failed_task,
        }
        if result.outcome == "failed":
            self._fail(f"tuning task '{result.failed_task}' failed: {result.error}")
        elif result.outcome in ("reboot-required", "rebooting"):
            self.state.set_phase(Phase.REBOOT_REQUIRED)
        elif before in (Phase.TUNING, Phase.FAILED):
            self.state.set_phase(Phase.DISCOVERED)
        else:
            self.state.set_phase(before)
        self.state.save()


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
