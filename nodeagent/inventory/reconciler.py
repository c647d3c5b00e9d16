"""The Kubernetes reconciler: makes each joined node's Node object match its state.

Per node (a `node_kube` row, kube_state.py), under the node's lease so that no two
replicas act on it:

- JOINING after scale.yml: JOINED when the Node (by name, else by the machine's system
  UUID) is Ready=True; FAILED with the API's reason once `kube_ready_timeout_seconds` pass
  (or with the last error, where the API server could not be reached or refused);
- JOINED: the validating taint comes off once the agent reports its devices usable and,
  where the Node advertises `nvidia.com/gpu`, its allocatable count is the node's;
- QUARANTINED: cordoned and tainted `<domain>/quarantined=<reason-slug>:NoSchedule`;
  MAINTENANCE: cordoned; back to JOINED: what nodeagent did is undone, nothing else;
- RETIRED: cordon, drain (the Eviction API, so PodDisruptionBudgets hold), a remove job
  (Kubespray's remove-node.yml), then the Node is deleted.

Every change is one merge patch guarded by the resourceVersion it was computed from, an
event on the node's record and a row update, so a round that finds nothing to change
writes nothing. An API server that cannot be reached, or refuses, is retried with
exponential backoff; the node keeps its state meanwhile and the error shows on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import health, joins, kube, kube_state
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.kube_state import Row
from nodeagent.inventory.store import NotFound, Store, StoreError

log = logging.getLogger("nodeagent.inventory.kube")
S = ipb.NodeState
J = ipb.JobState
CORDONED = (S.QUARANTINED, S.MAINTENANCE, S.RETIRED)
GPU = "nvidia.com/gpu"
CONFLICT_RETRIES = 3


class Reconciler:
    def __init__(self, store: Store, config: InventoryConfig, owner: str, stats: Any = None):
        self.store = store
        self.config = config
        self.owner = owner
        self.stats = stats  # the service's metrics, when it has them: reconciler_action()
        self.domain = "nodeagent.io"
        self._clients: dict[str, tuple[str, kube.Kube]] = {}
        self._tmp = Path(config.data_dir) / "kube-tmp"
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(StoreError):
                await self.tick()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.kube_reconcile_seconds)

    async def stop(self) -> None:
        self._stop.set()
        for _, client in self._clients.values():
            client.close()

    async def tick(self) -> int:
        """One round over the due nodes; returns how many this replica reconciled."""
        done = 0
        for row in await self.store.run(kube_state.due, self.store, time.time()):
            lease = self.config.join_lease_seconds
            if not await self.store.run(
                kube_state.claim, self.store, row.node_id, self.owner, lease
            ):
                continue
            try:
                await self.reconcile(row)
                done += 1
            finally:
                with contextlib.suppress(StoreError):
                    await self.store.run(kube_state.unclaim, self.store, row.node_id, self.owner)
        return done

    # --- one node -------------------------------------------------------------------------
    async def _record(self, row: Row, action: str, **kw: Any) -> bool:
        ok: bool = await self.store.run(
            lambda: kube_state.record(self.store, row, self.owner, **kw)
        )
        if self.stats is not None and action:
            self.stats.reconciler_action(action, "ok" if not kw.get("retry_in") else "retry")
        return ok

    async def _client(self, cluster: str) -> kube.Kube | None:
        found = await self.store.run(kube_state.get_kubeconfig, self.store, cluster)
        if found is None:
            return None
        text = found[0]
        cached = self._clients.get(cluster)
        if cached is not None and cached[0] == text:
            return cached[1]
        client = await asyncio.to_thread(
            kube.Kube, text, self._tmp, self.config.kube_request_timeout_seconds
        )
        self._clients[cluster] = (text, client)
        return client

    def _backoff(self, attempts: int) -> float:
        base = max(self.config.kube_reconcile_seconds, 0.5)
        return float(min(base * 2 ** min(attempts, 16), self.config.kube_backoff_max_seconds))

    async def reconcile(self, row: Row) -> None:
        try:
            client = await self._client(row.cluster)
            if client is None:  # nothing to ask until a kubeconfig is set
                await self._record(row, "", changes={}, settled=True)
                return
            await self._reconcile(row, client)
        except kube.KubeError as exc:
            attempts = row.attempts + 1
            why = str(exc)
            if await self._too_late(row, attempts, f"Kubernetes: {why}"):
                return
            await self._record(
                row,
                "error",
                changes={"attempts": attempts, "last_error": why[:1000]},
                event=f"Kubernetes: {why}" if attempts == 1 else "",  # once per outage
                retry_in=self._backoff(attempts),
            )
            log.warning("node %s: %s (attempt %d)", row.node_id, why, attempts)
        except (ValueError, OSError) as exc:  # a kubeconfig the client cannot use
            why = f"Kubernetes: the cluster's kubeconfig is unusable: {exc}"
            if await self._too_late(row, row.attempts + 1, why):
                return
            await self._record(
                row,
                "error",
                changes={"attempts": row.attempts + 1, "last_error": str(exc)[:1000]},
                event=why if row.attempts == 0 else "",
                retry_in=self._backoff(row.attempts + 1),
            )

    async def _too_late(self, row: Row, attempts: int, why: str) -> bool:
        """A JOINING node whose API server could not be asked (unreachable, refused) until
        the Ready deadline passed is FAILED with the last error, as one whose Node never
        became Ready: a join retried later finds it READY again, its join recorded."""
        waited = time.time() - row.joined_at
        if row.state != S.JOINING or waited <= self.config.kube_ready_timeout_seconds:
            return False
        reason = f"the Node could not be seen Ready within {waited:.0f}s: {why}"
        await self._record(
            row,
            "ready",
            changes={"attempts": attempts, "last_error": why[:1000]},
            target=S.FAILED,
            event=reason,
            settled=True,
        )
        log.warning("node %s: %s", row.node_id, reason)
        return True

    async def _find(self, row: Row, client: kube.Kube) -> dict[str, Any] | None:
        return await asyncio.to_thread(
            client.find_node, row.node_name or row.hostname, row.system_uuid
        )

    async def _reconcile(self, row: Row, client: kube.Kube) -> None:
        node = await self._find(row, client)
        ok = {"attempts": 0, "last_error": ""}
        if row.state == S.JOINING:
            await self._wait_ready(row, node)
            return
        if row.state == S.RETIRED and row.retire_step in ("remove", "delete", "done"):
            await self._retire(row, client, node)
            return
        if node is None:
            if row.state == S.RETIRED:  # never registered, or deleted by someone
                await self._record(
                    row,
                    "retire",
                    changes={**ok, "retire_step": "done"},
                    settled=True,
                    event="retired: no Node in the cluster to remove",
                )
                return
            raise kube.KubeNotFound(
                f"no Node named {row.node_name or row.hostname!r} (nor one with system UUID "
                f"{row.system_uuid or 'unknown'}) in cluster {row.cluster}"
            )
        name = node["metadata"]["name"]
        for _ in range(CONFLICT_RETRIES):
            spec, changes, what = self._desired(row, node)
            if not spec:
                break
            try:
                node = await asyncio.to_thread(client.patch_node, node, spec)
            except kube.KubeConflict:
                node = await asyncio.to_thread(client.get_node, name)
                continue
            changes["node_name"] = name
            row = await self._after(row, changes)
            await self._record(
                row,
                what.split(" ")[0].strip(";:"),
                changes={**ok, **changes},
                event=f"Node {name}: {what}",
                settled=row.state != S.RETIRED,
            )
            break
        else:
            raise kube.KubeConflict(
                f"patch nodes {name}: changed under us {CONFLICT_RETRIES} times"
            )
        if row.state == S.RETIRED:
            await self._retire(row, client, node)
            return
        if not spec:
            waiting = row.state == S.JOINED and row.devices_ok and not row.validated
            await self._record(
                row,
                "",
                changes={**ok, "node_name": name},
                settled=not waiting,
                retry_in=self.config.kube_reconcile_seconds if waiting else 0.0,
            )

    async def _after(self, row: Row, changes: dict[str, Any]) -> Row:
        for key, value in changes.items():
            setattr(row, key, value)
        return row

    def _desired(
        self, row: Row, node: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """(spec patch, node_kube changes, what it does) to bring the Node to the state."""
        spec: dict[str, Any] = {}
        changes: dict[str, Any] = {}
        what: list[str] = []
        unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        current = kube.taints(node)
        taints = list(current)
        qkey, vkey = f"{self.domain}/quarantined", f"{self.domain}/validating"
        if row.state in CORDONED:
            if not unschedulable:
                spec["unschedulable"] = True
                changes["cordoned"] = True
                what.append("cordoned")
        elif row.cordoned:
            if unschedulable:
                spec["unschedulable"] = False
                what.append("uncordoned")
            changes["cordoned"] = False
        if row.state == S.QUARANTINED:
            value = health.slug(row.state_reason)
            want = {"key": qkey, "value": value, "effect": "NoSchedule"}
            if want not in taints:
                taints = [t for t in taints if t.get("key") != qkey] + [want]
                changes["taint"] = value
                what.append(f"tainted {qkey}={value}:NoSchedule")
        elif row.taint or any(t.get("key") == qkey for t in taints):
            if any(t.get("key") == qkey and t.get("value") == row.taint for t in taints):
                taints = [t for t in taints if t.get("key") != qkey]
                what.append(f"taint {qkey} removed")
            changes["taint"] = ""
        if row.state == S.JOINED and not row.validated and self._valid(row, node, what):
            if any(t.get("key") == vkey for t in taints):
                taints = [t for t in taints if t.get("key") != vkey]
                what.append(f"validated: taint {vkey} removed")
            changes["validated"] = True
        if taints != current:
            spec["taints"] = taints
        return spec, changes, "; ".join(what) or "nothing to change"

    def _valid(self, row: Row, node: dict[str, Any], what: list[str]) -> bool:
        """The agent says its devices work and, where the GPU Operator's device plugin
        advertises nvidia.com/gpu, the kubelet sees as many GPUs as the node has."""
        if not row.devices_ok:
            return False
        gpus = kube.allocatable(node, GPU)
        return gpus is None or row.gpu_count == 0 or gpus == str(row.gpu_count)

    async def _wait_ready(self, row: Row, node: dict[str, Any] | None) -> None:
        waited = time.time() - row.joined_at
        late = waited > self.config.kube_ready_timeout_seconds
        name = row.node_name or row.hostname
        if node is not None:
            status, why = kube.condition(node, "Ready")
            real = node["metadata"]["name"]
            if status == "True":
                other = f" (registered as {real})" if real != name else ""
                await self._record(
                    row,
                    "ready",
                    changes={"ready": True, "node_name": real, "attempts": 0, "last_error": ""},
                    target=S.JOINED,
                    event=f"Node {real} is Ready{other}: {why}",
                )
                return
            reason = f"Node {real} is not Ready after {waited:.0f}s: Ready={status}: {why}"
        else:
            reason = (
                f"no Node named {name!r} (nor one with system UUID {row.system_uuid or 'unknown'})"
                f" registered with the API server within {waited:.0f}s"
            )
        if late:
            await self._record(
                row,
                "ready",
                changes={"last_error": reason},
                target=S.FAILED,
                event=reason,
                settled=True,  # nothing to ask until a join retried moves the node again
            )
        else:
            await self._record(row, "", changes={}, retry_in=self.config.kube_reconcile_seconds)

    # --- retirement -----------------------------------------------------------------------
    async def _retire(self, row: Row, client: kube.Kube, node: dict[str, Any] | None) -> None:
        step = row.retire_step or "drain"
        name = node["metadata"]["name"] if node else (row.node_name or row.hostname)
        if step == "drain":
            stop = asyncio.Event()
            renew = asyncio.create_task(self._renew(row.node_id, stop))
            try:
                left = await asyncio.to_thread(
                    client.drain, name, self.config.kube_drain_timeout_seconds
                )
            finally:
                stop.set()
                await renew
            if left:
                raise kube.KubeBusy(
                    f"drain of {name} stopped after {self.config.kube_drain_timeout_seconds:g}s: "
                    f"{', '.join(left[:5])} not evicted (PodDisruptionBudget)"
                )
            await self._record(
                row, "drain", changes={"retire_step": "remove"}, event=f"Node {name}: drained"
            )
            row.retire_step = step = "remove"
        if step == "remove":
            if not row.remove_job:
                job = await self.store.run(
                    joins.create_remove_job,
                    self.store,
                    row.cluster,
                    row.node_id,
                    row.hostname,
                    kube_state.ACTOR,
                )
                await self._record(
                    row,
                    "remove",
                    changes={"remove_job": job},
                    event=f"remove job {job}: remove-node.yml -e node={row.hostname}",
                    retry_in=self.config.kube_reconcile_seconds,
                )
                return
            try:
                job_rec = await self.store.run(joins.get_job, self.store, row.remove_job)
            except NotFound:
                job_rec = ipb.Job(state=J.JOB_FAILED, message="job gone")
            if job_rec.state not in joins.FINISHED:
                await self._record(row, "", changes={}, retry_in=self.config.kube_reconcile_seconds)
                return
            if job_rec.state != J.JOB_SUCCEEDED:
                await self._record(row, "", changes={"remove_job": ""})
                raise kube.KubeError(
                    f"remove job {row.remove_job} {ipb.JobState.Name(job_rec.state)}: "
                    f"{job_rec.message}; a new one follows"
                )
            row.retire_step = step = "delete"
        if step == "delete":
            gone = await asyncio.to_thread(client.delete_node, name)
            await self._record(
                row,
                "delete",
                changes={"retire_step": "done", "attempts": 0, "last_error": ""},
                event=f"Node {name} deleted" if gone else f"Node {name} was already gone",
                settled=True,
            )

    async def _renew(self, node_id: str, stop: asyncio.Event) -> None:
        """Keep the node's lease through a long drain."""
        every = max(self.config.join_lease_seconds / 3, 0.2)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if not stop.is_set():
                with contextlib.suppress(StoreError):
                    await self.store.run(
                        kube_state.claim,
                        self.store,
                        node_id,
                        self.owner,
                        self.config.join_lease_seconds,
                    )
