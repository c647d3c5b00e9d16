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
from collections.abc import AsyncIterator, Awaitable, Callable
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
from nodeagent.tuning import gpu_driver, profiles
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
        run_hooks: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        self.state = state
        self.root = root
        self.view = view
        self.config = config
        self.inventory = inventory
        self.run_hooks = run_hooks
        self._busy = asyncio.Lock()

    def _profile(self, name: str) -> tpb.TuningProfile:
        cfg = self.config()
        dirs = profiles.profile_dirs(cfg.profiles_dir or None)
        assigned = str(self.state.data.get("assigned_profile", "") or cfg.profile)
        # a caller over TCP names an installed profile; a file path is for the local CLI
        name = profiles.installed_name(name) if name else ""
        return profiles.resolve(name or None, self.inventory(), dirs, assigned)

    def gpu_driver(self) -> str:
        """The node's driver mode: its own setting, else its profile's, else host. Preflight
        asks at every discovery; a node with no profile yet (none matches) is host."""
        cfg = self.config()
        if cfg.gpu_driver:
            return gpu_driver.effective(cfg.gpu_driver)
        try:
            return gpu_driver.effective(self._profile("").gpu_driver)
        except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError):
            return gpu_driver.HOST

    def _bmc(self) -> bios_mod.BmcTarget | None:
        cfg = self.config()
        if not cfg.bmc_url:
            return None
        password = Path(cfg.bmc_password_file).read_text().strip() if cfg.bmc_password_file else ""
        return bios_mod.BmcTarget(cfg.bmc_url, cfg.bmc_username, password, cfg.bmc_verify_tls)

    def _record(self, report: tpb.TuningReport) -> None:
        self.view.drift = {s.setting: s.status in (DRIFT, PENDING) for s in report.settings}

    def _verify(
        self, profile: tpb.TuningProfile, bmc: bios_mod.BmcTarget | None
    ) -> tpb.TuningReport:
        bios = bios_mod.verify_bios(bmc, profile.bios) if bmc else []
        mode = gpu_driver.effective(self.config().gpu_driver, profile.gpu_driver)
        tuned = gpu_driver.for_mode(profile, mode).profile
        return verify(self.root, tuned, self.inventory(), bios)

    def _options(
        self,
        profile: tpb.TuningProfile,
        commands: Any,
        bmc: bios_mod.BmcTarget | None,
        check: bool,
        reboot_policy: str,
    ) -> apply_mod.ApplyOptions:
        bios_step = None
        if bmc is not None:
            target, settings = bmc, profile.bios

            def bios_step(check: bool) -> Any:
                return bios_mod.apply_bios(target, settings, check)

        return apply_mod.ApplyOptions(
            profile,
            self.root,
            self.inventory(),
            check=check,
            reboot_policy=reboot_policy,
            commands=commands,
            bios=bios_step,
            gpu_driver=self.config().gpu_driver,
        )

    def _running(self, profile: tpb.TuningProfile, before: Phase) -> None:
        """Recorded before the first task: a kill -9 mid-run leaves "running" behind,
        which the next start reports as interrupted, never as success."""
        self.state.set_phase(Phase.TUNING)
        self.state.data["tuning"] = {
            "profile": profile.name,
            "outcome": "running",
            "phase_before": str(before),
        }
        self.state.save()

    async def verify(
        self, request: tpb.VerifyTuningRequest, context: grpc.aio.ServicerContext
    ) -> tpb.TuningReport:
        try:
            profile = self._profile(request.profile)
            bmc = self._bmc()
        except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

        try:
            report = await asyncio.to_thread(self._verify, profile, bmc)
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
            opts = self._options(
                profile, commands, bmc, request.check, request.reboot_policy or "never"
            )
            before = state.phase
            if not request.check and self.run_hooks is not None:
                error = await self.run_hooks("pre-tuning")
                if error:
                    await context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"refusing to apply: pre-tuning hook failed: {error}",
                    )
                    return
            if not request.check:
                self._running(profile, before)
            outcome = ""
            async for event in _in_thread(apply_mod.apply, opts):
                if event.HasField("result"):
                    self._finish(event.result, before)
                    outcome = event.result.outcome
                yield event
            if outcome not in ("", "failed", "checked") and self.run_hooks is not None:
                error = await self.run_hooks("post-tuning")
                if error:
                    self._fail(f"post-tuning hook failed: {error}")
                    self.state.save()

    async def periodic(self, allow_joined: bool) -> str:
        """The daemon's periodic verify: drift is recorded (metric, heartbeat, labels);
        where the profile says `on_drift: apply` it is applied again, never rebooting, and
        never on a node in a cluster unless allowed. Returns what it did, for the log."""
        if self._busy.locked():
            return "skipped: a tuning run is in progress"
        async with self._busy:
            profile = self._profile("")
            bmc = self._bmc()
            report = await asyncio.to_thread(self._verify, profile, bmc)
            self._record(report)
            drifted = [s.setting for s in report.settings if s.status == DRIFT]
            if not drifted:
                return "no drift"
            said = f"drift in {len(drifted)} settings ({', '.join(drifted[:5])})"
            if profile.on_drift != "apply":
                return f"{said}; the profile says report"
            reason = apply_mod.refuse_reason(self.state.phase, allow_joined)
            if reason:
                return f"{said}; not applied again: {reason}"
            commands = commands_mod.load(self.config().commands_file or None)
            opts = self._options(profile, commands, bmc, False, "never")
            before = self.state.phase
            self._running(profile, before)
            outcome = ""
            async for event in _in_thread(apply_mod.apply, opts):
                if event.HasField("result"):
                    self._finish(event.result, before)
                    outcome = event.result.outcome
            return f"{said}; applied again: {outcome}"

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
