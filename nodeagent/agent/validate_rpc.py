"""The agent's side of acceptance tests: the ValidateNode stream, and the last result that
READY and heartbeats read.

The run itself is nodeagent.acceptance.runner in a worker thread (the checks block on
tools for minutes); its progress events are forwarded to the stream as they come. One run
at a time, across the API and the CLI alike (the lock is in the state directory): a second
is refused with ABORTED. A client that goes away does not stop a run: it finishes and its
report is kept. A run the agent died during is recorded as interrupted at the next start.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from nodeagent.acceptance import runner, store
from nodeagent.api.v1 import validate_pb2 as vpb
from nodeagent.tuning import profiles

_SERVICES: weakref.WeakKeyDictionary[Any, ValidateService] = weakref.WeakKeyDictionary()


class ValidateService:
    """Reads the agent's root, inventory, configuration and assigned profile at each call."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.state_dir = Path(agent.config.state_dir)
        store.recover(self.state_dir)

    def _profile(self, name: str) -> Any:
        cfg = self.agent.config.tuning
        dirs = profiles.profile_dirs(cfg.profiles_dir or None)
        assigned = str(self.agent.state.data.get("assigned_profile", "") or cfg.profile)
        name = profiles.installed_name(name) if name else ""
        return profiles.resolve(name or None, self.agent.inventory, dirs, assigned)

    def last_result(self) -> store.LastResult:
        """The last report and whether it passed the level the node's profile requires."""
        try:
            required = self._profile("").acceptance.required_level
        except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError):
            required = ""
        return store.last_result(self.state_dir, required)

    async def validate(
        self, request: vpb.ValidateNodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vpb.ValidationEvent]:
        try:
            profile = self._profile(request.profile)
        except (profiles.NoProfile, profiles.ProfileError, ValueError, OSError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            return
        if request.level and request.level not in ("quick", "standard", "long"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "level must be quick, standard or long"
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def progress(event: vpb.ValidationEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("event", event))

        opts = runner.Options(
            level=request.level,
            only=list(request.only),
            progress=progress,
            gpu_driver=self.agent.tuning.gpu_driver(),
        )
        root, inventory = self.agent.root, self.agent.inventory

        def work() -> None:
            try:
                runner.run(root, inventory, profile, self.state_dir, opts)
            except BaseException as exc:  # reported on the stream
                loop.call_soon_threadsafe(events.put_nowait, ("error", exc))
            finally:
                loop.call_soon_threadsafe(events.put_nowait, ("done", None))

        threading.Thread(target=work, name="acceptance-run", daemon=True).start()
        while True:
            kind, value = await events.get()
            if kind == "event":
                yield value
            elif kind == "error":
                code = (
                    grpc.StatusCode.ABORTED
                    if isinstance(value, store.Busy)
                    else grpc.StatusCode.INVALID_ARGUMENT
                    if isinstance(value, ValueError)
                    else grpc.StatusCode.INTERNAL
                )
                await context.abort(code, str(value))
            else:
                return


def service(agent: Any) -> ValidateService:
    """The agent's one ValidateService (made on first use: it records a run the previous
    agent process died during)."""
    found = _SERVICES.get(agent)
    if found is None:
        found = _SERVICES[agent] = ValidateService(agent)
    return found


def last_result(agent: Any) -> store.LastResult:
    """For READY and heartbeats: the last acceptance report, whether it passed the level
    the profile requires, and a one-line reason when it did not."""
    return service(agent).last_result()
