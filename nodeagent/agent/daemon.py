"""`nodeagent serve`: the node daemon.

One asyncio loop owns the state; discovery and sysfs polling run in worker
threads, blocking hardware sources (udev, NVML events) in their own threads.
The gRPC API is served on a root-only unix socket (the directory is 0700 and the
socket 0600, since gRPC over a unix socket cannot tell who the peer is) and,
with certificates, on TCP with mTLS. systemd is told READY=1 once the first
discovery is done and the socket is up, STOPPING=1 on SIGTERM; SIGHUP reloads
what can change without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from nodeagent import __version__
from nodeagent.agent import config as config_mod
from nodeagent.agent import hooks, preflight, sdnotify
from nodeagent.agent.acceptance_gate import AcceptanceGate
from nodeagent.agent.enrol import InventoryClient, Snapshot
from nodeagent.agent.events import EventBus
from nodeagent.agent.label_file import (
    DRIFTED,
    FLEET_TIERS,
    OVERRIDES,
    LabelFile,
    decided_from_state,
)
from nodeagent.agent.metrics import AgentCollector, AgentView
from nodeagent.agent.permissions import PERMISSIONS
from nodeagent.agent.state import AgentState, Phase, StateFile
from nodeagent.agent.tuning_rpc import TuningService
from nodeagent.agent.watch import HOTPLUG_CLASSES, UdevWatcher, XidWatcher
from nodeagent.api import auth
from nodeagent.api.handlers import service_handler
from nodeagent.api.v1 import agent_pb2, agent_pb2_grpc, tuning_pb2, validate_pb2
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.hardware import discover as hw
from nodeagent.hardware.addresses import read_network_in_child
from nodeagent.hardware.rdma import read_port_status
from nodeagent.host import HostRoot
from nodeagent.labels.features import NodeFeatures, read_features
from nodeagent.topology.observe import observe

log = logging.getLogger("nodeagent.agent")
EVENT_KINDS = {"hotplug", "xid", "rdma-port", "discovery", "phase", "hook", "labels", "drift"}
JOIN_PHASES = ("pre-join", "post-join")
SETTLED_BY_DISCOVERY = (Phase.STARTING, Phase.DISCOVERED, Phase.READY)


class StartupError(RuntimeError):
    """The daemon cannot start; the message is the one line to show."""


def inventory_hash(inv: pb.HardwareInventory) -> str:
    """Identity of the hardware: timings and where it was read from do not count."""
    stable = pb.HardwareInventory()
    stable.CopyFrom(inv)
    stable.ClearField("collectors")
    stable.ClearField("source")
    return hashlib.sha256(stable.SerializeToString(deterministic=True)).hexdigest()


def blocking_line(text: str) -> str:
    """One printable line of at most 1000 characters: what the inventory accepts in a
    heartbeat's `blocking` (a message with a newline would get every heartbeat refused)."""
    return "".join(c if c.isprintable() else " " for c in text)[:1000]


def blocking_check(check: preflight.Check) -> str:
    """A failing preflight check as the inventory shows it: "name: message (fix: remedy)"."""
    fix = f" (fix: {check.remedy})" if check.remedy else ""
    return blocking_line(f"{check.name}: {check.message}{fix}")


def prepare_socket(path: str) -> None:
    """Make the socket's directory root-only and clear a stale socket left by a crash.

    A live socket (another agent answers) or a path that is not a socket is an
    error: the daemon must not steal a running agent's socket or delete a file.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if p.parent.stat().st_uid == os.getuid():
        os.chmod(p.parent, 0o700)
    if not os.path.lexists(p):
        return
    if not stat.S_ISSOCK(os.lstat(p).st_mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or choose api.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(p))
        except (ConnectionRefusedError, FileNotFoundError):
            p.unlink()  # stale: nobody listens
            return
        except OSError:
            p.unlink()
            return
    raise StartupError(f"{path} is in use by a running agent")


class NodeAgentServicer(agent_pb2_grpc.NodeAgentServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def GetInventory(
        self, request: agent_pb2.GetInventoryRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetInventoryResponse:
        if request.refresh:
            remaining = context.time_remaining()
            try:
                await asyncio.wait_for(asyncio.shield(self.agent.discover("refresh")), remaining)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "discovery did not finish before the deadline",
                )
        return self.agent.inventory_response()

    async def GetStatus(
        self, request: agent_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.AgentStatus:
        return self.agent.status()

    async def WatchEvents(
        self, request: agent_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kinds = set(request.kinds)
        unknown = kinds - EVENT_KINDS
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown event kinds {sorted(unknown)}; known: {sorted(EVENT_KINDS)}",
            )
        async for event in self.agent.bus.subscribe(kinds):
            yield event

    async def ApplyTuning(
        self, request: tuning_pb2.ApplyTuningRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        async for event in self.agent.tuning.apply(request, context):
            yield event

    async def VerifyTuning(
        self, request: tuning_pb2.VerifyTuningRequest, context: grpc.aio.ServicerContext
    ) -> tuning_pb2.TuningReport:
        return await self.agent.tuning.verify(request, context)

    async def ValidateNode(
        self, request: validate_pb2.ValidateNodeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        from nodeagent.agent import validate_rpc  # acceptance checks load on first use

        async for event in validate_rpc.service(self.agent).validate(request, context):
            yield event


class Agent:
    def __init__(self, config: config_mod.AgentConfig, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.root = HostRoot(config.root)
        self.bus = EventBus(config.watch.coalesce_seconds)
        self.state = AgentState(StateFile(Path(config.state_dir) / "state.json"), self.bus)
        self.view = AgentView(
            version=__version__,
            phase=lambda: self.state.phase,
            events_by_kind=lambda: self.bus.by_kind,
        )
        self.inventory = pb.HardwareInventory()
        self.discovered_at = Timestamp()
        self.hash = ""
        self._discovery_failed = False
        self._preflight_failing: list[str] = []
        # what keeps the node from READY, as heartbeats carry it (None: preflight not run)
        self.blocking: list[str] | None = None
        self.fabric: fpb.FabricObservation | None = None
        self.features: NodeFeatures | None = None
        self.network: ipb.NodeNetwork | None = None
        self.hook_phases: list[str] | None = None
        # (phase, job id) -> result of pre-/post-join hooks (None: running); reported ones
        self._hook_runs: dict[tuple[str, str], ipb.HookResult | None] = {}
        self._hook_reported: set[tuple[str, str]] = set()
        self.label_file = LabelFile(
            config.root,
            lambda: self.config.labels,
            on_error=lambda error: self.bus.publish("labels", "", error),
        )
        self.started = time.monotonic()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[UdevWatcher | XidWatcher] = []
        self.server: grpc.aio.Server | None = None
        self._metrics: Any = None
        self.inventory_client: InventoryClient | None = None
        self.acceptance = AcceptanceGate(self, self._spawn)  # READY waits for acceptance
        self.tuning = TuningService(
            self.state,
            self.root,
            self.view,
            config=lambda: self.config.tuning,
            inventory=lambda: self.inventory,
            run_hooks=self._hooks,
        )

    # --- discovery -----------------------------------------------------------------------
    def _record_discovery(self) -> None:
        """Discovery's keys in the state file. Recorded at start too (an empty hash): the
        file speaks for what this process has found, not for an earlier one."""
        self.state.data.update(
            inventory_hash=self.hash, last_discovery=self.discovered_at.ToJsonString()
        )

    def _facts(self) -> dict[str, str]:
        inv = self.inventory
        return {
            "hostname": inv.system.hostname,
            "gpu_count": str(len(inv.gpus)),
            "rdma_count": str(len(inv.rdma_devices)),
            "root": self.root.path,
            "inventory_hash": self.hash,
        }

    async def _hooks(self, phase: str, **extra: str) -> str:
        """Run a phase's hooks: '' when they all pass, else why one failed. A failing
        post-* hook under post_hook_failure = "warn" is recorded (log, event) and passes."""
        try:
            await hooks.run_phase(
                self.config.hooks_dir,
                phase,
                self._facts() | extra,
                self.config.hook_timeout_seconds,
            )
            return ""
        except (hooks.HookError, OSError) as exc:
            warn = phase.startswith("post-") and self.config.post_hook_failure == "warn"
            (log.warning if warn else log.error)("%s", exc)
            self.bus.publish("hook", phase, str(exc), outcome="warn" if warn else "fail")
            return "" if warn else str(exc)

    def _on_hook_requests(self, requests: list[Any]) -> None:
        """The inventory asks for pre-join or post-join around this node's join job."""
        for req in requests:
            key = (req.phase, req.request_id)
            if req.phase not in JOIN_PHASES or key in self._hook_runs:
                continue
            self._hook_runs[key] = None  # running
            self._spawn(self._run_join_hooks(req.phase, req.request_id))

    async def _run_join_hooks(self, phase: str, request_id: str) -> None:
        error = await self._hooks(phase, job_id=request_id)
        self._hook_runs[(phase, request_id)] = ipb.HookResult(
            phase=phase, request_id=request_id, ok=not error, message=error[-4000:]
        )
        while len(self._hook_runs) > 64:  # old jobs' entries: the inventory stopped asking
            self._hook_reported.discard(next(iter(self._hook_runs)))
            self._hook_runs.pop(next(iter(self._hook_runs)))

    def _hooks_reported(self, results: list[Any]) -> None:
        for r in results:
            self._hook_reported.add((r.phase, r.request_id))

    async def discover(self, reason: str, only: set[str] | None = None) -> None:
        async with self._lock:
            error = await self._hooks("pre-discovery") if only is None else ""
            if error:
                self._discovery_failed = True
                self.state.set_phase(Phase.FAILED, error)
                self.state.save()
                return
            start = time.perf_counter()
            if only is None:
                inv = await asyncio.to_thread(hw.discover, self.root)
                self.inventory = inv
                self.view.discovery_seconds = time.perf_counter() - start
                self.view.discoveries += 1
            else:
                await asyncio.to_thread(hw.rediscover, self.root, self.inventory, only)
            self.view.inventory = self.inventory
            self.view.hostname = self.inventory.system.hostname
            if only is None or "rdma" in only or "network" in only:
                self.fabric = await asyncio.to_thread(self._observe_fabric)
            if only is None or "pci" in only or "gpu" in only:
                self.features = await asyncio.to_thread(self._read_features)
            if only is None:  # a job waits for the join hooks only of nodes that have some
                self.hook_phases = [
                    p for p in JOIN_PHASES if hooks.hooks_for(self.config.hooks_dir, p)
                ]
            inv_cfg = self.config.inventory  # addresses are for the inventory's export only
            if inv_cfg.address and inv_cfg.report_addresses and (only is None or "network" in only):
                self.network = await asyncio.to_thread(self._read_network)
            self.discovered_at.FromNanoseconds(time.time_ns())
            new_hash = inventory_hash(self.inventory)
            if self.hash and new_hash != self.hash:
                self.bus.publish(
                    "discovery", "", "hardware changed", reason=reason, inventory_hash=new_hash
                )
            self.hash = new_hash
            self._record_discovery()
            failed = [c.name for c in self.inventory.collectors if not c.success]
            inv = self.inventory
            errs = f"; collectors with errors: {', '.join(failed)}" if failed else ""
            log.info(
                "discovery (%s) in %.1f ms: %d GPUs, %d RDMA devices, %d NVMe%s",
                reason,
                (time.perf_counter() - start) * 1000,
                len(inv.gpus),
                len(inv.rdma_devices),
                len(inv.nvme_controllers),
                errs,
            )
            if only is None:
                error = await self._hooks("post-discovery")
                if error:
                    self._discovery_failed = True
                    self.state.set_phase(Phase.FAILED, error)
                else:
                    # discovery settles only what discovery owns: a failed tuning run or a
                    # later phase stays as it is until its own step changes it
                    if self.state.phase in SETTLED_BY_DISCOVERY or self._discovery_failed:
                        ready = await asyncio.to_thread(self._ready_or_not)
                        self.state.set_phase(ready, error="")
                    self._discovery_failed = False
            self.state.save()
            await self.refresh_labels()

    def inventory_response(self) -> agent_pb2.GetInventoryResponse:
        return agent_pb2.GetInventoryResponse(
            inventory=self.inventory, discovered_at=self.discovered_at, inventory_hash=self.hash
        )

    def status(self) -> agent_pb2.AgentStatus:
        return agent_pb2.AgentStatus(
            phase=self.state.phase,
            version=__version__,
            uptime_seconds=time.monotonic() - self.started,
            last_discovery=self.discovered_at,
            last_discovery_seconds=self.view.discovery_seconds,
            collectors=self.inventory.collectors,
            config=self.config.summary(),
            root=self.root.path,
            events_emitted=self.bus.emitted,
            watchers=self.bus.watchers,
            inventory_hash=self.hash,
            last_error=self.state.last_error,
            node_id=self.inventory_client.identity.node_id() if self.inventory_client else "",
            inventory_state=self.inventory_client.state
            if self.inventory_client
            else "not-configured",
        )

    def _ready_or_not(self) -> Phase:
        """READY when preflight passes (the node can join a cluster), else DISCOVERED."""
        try:
            opts = preflight.Options(gpu_driver=self.tuning.gpu_driver())
            report = preflight.run(self.root, opts)
        except Exception as exc:  # a broken check must not stop the agent
            log.warning("preflight failed to run: %s", exc)
            self.blocking = [blocking_line(f"preflight: failed to run: {exc}")]
            return Phase.DISCOVERED
        failed = [c for c in report.checks if c.status == preflight.FAIL]
        failing = [c.name for c in failed]
        if failing and failing != self._preflight_failing:
            log.info("not ready to join: preflight fails %s", ", ".join(failing))
        self._preflight_failing = failing
        self.blocking = [blocking_check(c) for c in failed]
        if failing:
            return Phase.DISCOVERED
        gate = self.acceptance.blocking()  # runs the required level when it has not yet
        if gate:
            self.blocking = [blocking_line(gate)]
            return Phase.DISCOVERED
        return Phase.READY

    def _read_network(self) -> ipb.NodeNetwork | None:
        try:
            return read_network_in_child()
        except Exception as exc:  # the inventory keeps the last addresses it was sent
            log.warning("reading the node's addresses over netlink failed: %s", exc)
            return self.network

    def _read_features(self) -> NodeFeatures | None:
        try:
            return read_features(self.root)
        except Exception as exc:  # NFD's keys are left out, the rest of the labels stay
            log.warning("reading PCI classes and modules for the NFD labels failed: %s", exc)
            return None

    async def refresh_labels(self) -> None:
        """Recompute the label map; the feature file is rewritten when it changed."""
        drifted = any(self.view.drift.values())
        if bool(self.state.data.get(DRIFTED)) != drifted:
            self.state.data[DRIFTED] = drifted
            self.state.save()
        decided = decided_from_state(self.state.data)
        try:
            await asyncio.to_thread(
                self.label_file.refresh,
                self.inventory,
                self.fabric or fpb.FabricObservation(),
                self.features,
                decided,
            )
        except Exception as exc:  # a bug in a label family must not stop the agent
            log.error("computing the node's labels failed: %s", exc)

    async def _refresh_labels_periodically(self) -> None:
        """Before the file's expiry, and to undo a hand edit."""
        while True:
            cfg = self.config.labels
            await asyncio.sleep(min(10.0, cfg.expiry_seconds / 4))
            await self.refresh_labels()

    def _observe_fabric(self) -> fpb.FabricObservation | None:
        """Where the node sits in the fabric (rails, leaf/spine switches, cloud placement)."""
        try:
            return observe(self.root, self.inventory, self.config.fabric)
        except Exception as exc:  # a probe gone wrong must not stop the agent
            log.warning("fabric observation failed: %s", exc)
            return None

    def _on_desired(self, desired: Any) -> None:
        """The inventory's assignment: tuning resolves the profile from it, the labels
        carry its pool, profile and overrides."""
        data = self.state.data
        overrides = dict(sorted(desired.labels.items()))
        if (desired.profile, desired.pool, overrides) == (
            data.get("assigned_profile", ""),
            data.get("assigned_pool", ""),
            data.get(OVERRIDES, {}),
        ):
            return
        if (desired.profile, desired.pool) != (
            data.get("assigned_profile", ""),
            data.get("assigned_pool", ""),
        ):
            log.info(
                "assignment from the inventory: profile %s, pool %s",
                desired.profile or "-",
                desired.pool or "-",
            )
        data.update(assigned_profile=desired.profile, assigned_pool=desired.pool)
        data[OVERRIDES] = overrides
        self.state.save()
        self._spawn(self.refresh_labels())

    def _on_tiers(self, tiers: fpb.FabricTiers) -> None:
        """The fleet's tiers for this node (the inventory groups every node's fabric)."""
        value = json_format.MessageToDict(tiers)
        if value == self.state.data.get(FLEET_TIERS):
            return
        self.state.data[FLEET_TIERS] = value
        self.state.save()
        self._spawn(self.refresh_labels())

    def snapshot(self) -> Snapshot:
        health = [
            f"GPU {g.index} {g.pci_address}: {r}"
            for g in self.inventory.gpus
            for r in g.health_reasons
        ]
        return Snapshot(
            phase=self.state.phase,
            inventory=self.inventory,
            inventory_hash=self.hash,
            drift_count=sum(1 for d in self.view.drift.values() if d),
            health=health,
            fabric=self.fabric,
            blocking=self.blocking,
            labels=self._reported_labels(),
            network=self.network,
            fleet_tiers_hash=self._fleet_tiers_hash(),
            hook_phases=self.hook_phases,
            # the inventory's health policy (issue 16): XIDs, row remapping, rails, devices
            xids=dict(self.view.xid_counts),
            row_remap_failure=any(g.remapped_rows.failure for g in self.inventory.gpus),
            rails_down=sum(
                1 for st in self.view.rdma_ports.values() if "ACTIVE" not in str(st.get("state"))
            ),
            devices_ok=not health,
            hook_results=[
                r
                for key, r in self._hook_runs.items()
                if r is not None and key not in self._hook_reported
            ],
            acceptance=self.acceptance.report(),
        )

    def _reported_labels(self) -> ipb.ReportedLabels | None:
        current = self.label_file.current
        if current is None:
            return None
        out = ipb.ReportedLabels(domain=self.config.labels.domain)
        for family, labels in current.by_family.items():
            out.families[family].labels.update(labels)
        return out

    def _fleet_tiers_hash(self) -> str:
        value = self.state.data.get(FLEET_TIERS)
        if not isinstance(value, dict) or not value:
            return ""
        tiers = json_format.ParseDict(value, fpb.FabricTiers(), ignore_unknown_fields=True)
        return hashlib.sha256(tiers.SerializeToString(deterministic=True)).hexdigest()

    # --- watchers ------------------------------------------------------------------------
    def _on_hotplug(self, subsystem: str, action: str, name: str) -> None:
        self.bus.publish(
            "hotplug", name, f"{subsystem} {action}", subsystem=subsystem, action=action
        )
        only = HOTPLUG_CLASSES.get(subsystem)
        if only:
            self._spawn(self.discover(f"hotplug {subsystem} {action} {name}", only=set(only)))

    def _on_xid(self, address: str, xid: int) -> None:
        gpu = next((str(g.index) for g in self.inventory.gpus if g.pci_address == address), address)
        key = (gpu, xid)
        self.view.xid_counts[key] = self.view.xid_counts.get(key, 0) + 1
        self.bus.publish("xid", address, f"XID {xid}", xid=str(xid), gpu=gpu)

    async def _poll_rdma(self) -> None:
        while self.config.watch.rdma_poll_seconds > 0:
            await asyncio.sleep(self.config.watch.rdma_poll_seconds)
            try:
                ports = await asyncio.to_thread(read_port_status, self.root)
            except Exception as exc:  # keep polling through odd sysfs
                log.warning("RDMA poll: %s", exc)
                ports = self.view.rdma_ports
            for key, status in ports.items():
                before = self.view.rdma_ports.get(key)
                if before is not None and (before.get("state"), before.get("phys_state")) != (
                    status.get("state"),
                    status.get("phys_state"),
                ):
                    self.bus.publish(
                        "rdma-port",
                        f"{key[0]}/{key[1]}",
                        f"{before.get('state')} -> {status.get('state')}",
                        state=str(status.get("state")),
                        phys_state=str(status.get("phys_state")),
                    )
            changed = self.view.rdma_ports and any(
                (self.view.rdma_ports.get(k) or {}).get("state") != v.get("state")
                for k, v in ports.items()
            )
            self.view.rdma_ports = ports
            if changed:  # the rails' state is in the labels and the fabric observation
                self._spawn(self.discover("rdma port state", only={"rdma"}))

    async def _verify_periodically(self) -> None:
        """Drift found without anyone asking: in the heartbeat, the metric, the labels."""
        while self.config.tuning.verify_seconds > 0:
            await asyncio.sleep(self.config.tuning.verify_seconds)
            try:
                what = await self.tuning.periodic(self.config.tuning.apply_on_drift_when_joined)
            except Exception as exc:  # no profile yet, a BMC away: next time
                what = f"not run: {exc}"
            log.info("periodic verify: %s", what)
            self.bus.publish("drift", "", what)
            await self.refresh_labels()

    async def _rediscover_periodically(self) -> None:
        while self.config.watch.rediscover_seconds > 0:
            await asyncio.sleep(self.config.watch.rediscover_seconds)
            await self.discover("periodic")

    async def _watchdog(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # --- lifecycle -----------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: re-read the configuration; a bad file keeps the running one."""
        try:
            new = config_mod.load(self.config_path, required=self.config_path is not None)
        except config_mod.ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        if (new.api, new.metrics, new.root, new.state_dir) != (
            self.config.api,
            self.config.metrics,
            self.config.root,
            self.config.state_dir,
        ):
            log.warning("api, metrics, root and state_dir changes apply at the next restart")
        self.config = dataclasses.replace(
            new,
            root=self.config.root,
            state_dir=self.config.state_dir,
            api=self.config.api,
            metrics=self.config.metrics,
            inventory=self.config.inventory,
        )
        self.bus.coalesce_seconds = new.watch.coalesce_seconds
        logging.getLogger().setLevel(new.log_level.upper())
        log.info("configuration reloaded from %s", self.config_path or "defaults")
        self.bus.publish("phase", "", "configuration reloaded")
        self._spawn(self.refresh_labels())

    async def _start_server(self) -> None:
        api = self.config.api
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", api.max_request_bytes),
                ("grpc.max_send_message_length", api.max_response_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=api.max_concurrent_rpcs,
        )
        service = agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"]
        auth.check_covers(service, PERMISSIONS)
        authorize = auth.Authorizer(PERMISSIONS, trust_local=True)
        server.add_generic_rpc_handlers(
            (service_handler(service, NodeAgentServicer(self), authorize=authorize),)
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        prepare_socket(api.socket)
        server.add_insecure_port(f"unix:{api.socket}")
        if api.tcp_listen:
            creds = grpc.ssl_server_credentials(
                [(Path(api.tls_key).read_bytes(), Path(api.tls_cert).read_bytes())],
                root_certificates=Path(api.tls_ca).read_bytes(),
                require_client_auth=True,
            )
            if not server.add_secure_port(api.tcp_listen, creds):
                raise StartupError(f"cannot listen on {api.tcp_listen}")
        await server.start()
        os.chmod(api.socket, 0o600)
        for name in names[:2]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self.server = server

    def _start_metrics(self) -> None:
        listen = self.config.metrics.listen
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        registry = CollectorRegistry()
        registry.register(AgentCollector(self.view))
        try:
            self._metrics = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
        except (OSError, ValueError) as exc:
            raise StartupError(f"metrics: cannot listen on {listen}: {exc}") from None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        state.load()
        state.data["starts"] = int(state.data.get("starts", 0)) + 1
        self._record_discovery()
        self._discovery_failed = state.phase == Phase.FAILED and not isinstance(
            state.data.get("tuning"), dict
        )
        self.tuning.recover()
        await self.discover("startup")
        with contextlib.suppress(Exception):  # the poller retries; metrics start complete
            self.view.rdma_ports = await asyncio.to_thread(read_port_status, self.root)
        await self._start_server()
        self._start_metrics()
        for sig, handler in (
            (signal.SIGTERM, self._stop.set),
            (signal.SIGINT, self._stop.set),
            (signal.SIGHUP, self.reload),
        ):
            loop.add_signal_handler(sig, handler)
        if self.config.watch.udev:
            udev = UdevWatcher(loop, self._on_hotplug)
            if udev.start():
                self._watchers.append(udev)
        if self.config.watch.nvml_events and self.root.is_live and self.inventory.gpus:
            xid = XidWatcher(loop, self._on_xid)
            if xid.start():
                self._watchers.append(xid)
        self._spawn(self._poll_rdma())
        self._spawn(self._refresh_labels_periodically())
        self._spawn(self._verify_periodically())
        self._spawn(self._rediscover_periodically())
        if self.config.inventory.address:
            self.inventory_client = InventoryClient(
                self.config.inventory,
                self.config.state_dir,
                self.snapshot,
                self._on_desired,
                on_tiers=self._on_tiers,
                on_hooks=self._on_hook_requests,
                on_reported=self._hooks_reported,
                on_validations=self.acceptance.on_asks,
            )
            self._spawn(self.inventory_client.run(self._stop))
        interval = sdnotify.watchdog_interval()
        if interval:
            self._spawn(self._watchdog(interval))
        sdnotify.notify(f"READY=1\nSTATUS=serving on {self.config.api.socket}")
        log.info(
            "nodeagent %s serving on %s (root %s)",
            __version__,
            self.config.api.socket,
            self.root.path,
        )
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        log.info("stopping: draining streams")
        self.bus.close()
        if self.server is not None:
            await self.server.stop(grace=5)
        for watcher in self._watchers:
            watcher.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._metrics is not None:
            server, _thread = self._metrics
            server.shutdown()
        self.state.save()
        with contextlib.suppress(OSError):
            os.unlink(self.config.api.socket)
        log.info("stopped")
