"""The inventory's Kubespray RPCs: clusters, node addresses, the export, join jobs.

A mixin of InventoryServicer (inventory/auth.py keeps the permissions table, service.py
the error mapping for every RPC); each method validates its input, then runs one store function.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from nodeagent.api import auth
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import ansible_env, clusters, gpu_operator, joins, kube_state, pki
from nodeagent.inventory.store import Conflict, Store

EXPORT_PIECE = 1 << 20
MAX_PROBLEMS_SHOWN = 20


class ClusterRpcs:
    store: Store

    def ansible_envs(self) -> ansible_env.Envs:
        """The service's Ansible environments (InventoryServicer gives its service's)."""
        raise NotImplementedError

    async def _inspect(self, cluster: ipb.Cluster) -> ipb.Cluster:
        """The cluster's release, Ansible range and environment, read in a worker thread (git
        and an interpreter run); a mismatch with its own environment is refused here, before
        any job (FAILED_PRECONDITION, with the fix)."""
        clusters.check_cluster(cluster)
        try:
            return await asyncio.to_thread(self.ansible_envs().inspect, cluster)
        except ansible_env.EnvError as exc:
            raise Conflict(f"cluster {cluster.name!r}: {exc}") from exc

    async def CheckHostname(
        self, request: ipb.CheckHostnameRequest, context: grpc.aio.ServicerContext
    ) -> ipb.CheckHostnameResponse:
        me = auth.caller()
        auth.validate_text(request.hostname, "hostname")
        other_than = me.name if me.kind == pki.NODE else ""
        ids = await self.store.run(
            clusters.hostname_owners, self.store, request.hostname, other_than
        )
        return ipb.CheckHostnameResponse(node_ids=ids)

    async def CreateCluster(
        self, request: ipb.Cluster, context: grpc.aio.ServicerContext
    ) -> ipb.Cluster:
        inspected = await self._inspect(clusters.with_defaults(request))
        return await self.store.run(clusters.create_cluster, self.store, request, inspected)

    async def GetCluster(
        self, request: ipb.GetClusterRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Cluster:
        name = auth.validate_text(request.name, "name", 63)
        found = await self.store.run(clusters.get_cluster, self.store, name)
        return await self.store.run(kube_state.describe_cluster, self.store, found)

    async def ListClusters(
        self, request: ipb.ListClustersRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListClustersResponse:
        found = await self.store.run(clusters.list_clusters, self.store)
        found = await self.store.run(kube_state.describe_clusters, self.store, found)
        return ipb.ListClustersResponse(clusters=found)

    async def UpdateCluster(
        self, request: ipb.UpdateClusterRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Cluster:
        auth.validate_text(request.cluster.name, "name", 63)
        fields = list(request.fields)
        current = await self.store.run(clusters.get_cluster, self.store, request.cluster.name)
        inspected = await self._inspect(clusters.merged(current, request.cluster, fields))
        return await self.store.run(
            clusters.update_cluster, self.store, request.cluster, fields, inspected
        )

    async def SetNodeAddress(
        self, request: ipb.NodeAddress, context: grpc.aio.ServicerContext
    ) -> ipb.NodeAddress:
        auth.validate_text(request.node_id, "node_id", 64)
        return await self.store.run(clusters.set_address, self.store, request)

    async def ExportKubespray(
        self, request: ipb.ExportKubesprayRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        auth.validate_text(request.cluster, "cluster", 63)
        inventory, problems, warnings, count = await self.store.run(
            clusters.export, self.store, request.cluster
        )
        if problems:
            more = len(problems) - MAX_PROBLEMS_SHOWN
            shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
            shown += f"; and {more} more" if more > 0 else ""
            raise Conflict(f"cluster {request.cluster!r}: invalid Kubespray inventory: {shown}")
        data = (await asyncio.to_thread(json.dumps, inventory, separators=(",", ":"))).encode()
        first = ipb.ExportKubesprayResponse(nodes=count, warnings=warnings[:1000])
        for start in range(0, max(len(data), 1), EXPORT_PIECE):
            piece = data[start : start + EXPORT_PIECE]
            if start == 0:
                first.inventory_json = piece
                yield first
            else:
                yield ipb.ExportKubesprayResponse(inventory_json=piece)

    async def ExportGpuOperator(
        self, request: ipb.ExportGpuOperatorRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ExportGpuOperatorResponse:
        auth.validate_text(request.cluster, "cluster", 63)
        text, count = await self.store.run(gpu_operator.export, self.store, request.cluster)
        return ipb.ExportGpuOperatorResponse(yaml=text, nodes=count)

    async def StartJoin(
        self, request: ipb.StartJoinRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Job:
        auth.validate_text(request.cluster, "cluster", 63)
        if len(request.node_ids) > 10000:
            raise ValueError("at most 10000 node ids")
        for node_id in request.node_ids:
            auth.validate_text(node_id, "node id", 64)
        return await self.store.run(joins.create_job, self.store, request, auth.caller().actor)

    async def GetJob(
        self, request: ipb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Job:
        return await self.store.run(
            joins.get_job, self.store, auth.validate_text(request.id, "id", 64)
        )

    async def ListJobs(
        self, request: ipb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ListJobsResponse:
        auth.validate_text(request.cluster, "cluster", 63)
        found = await self.store.run(joins.list_jobs, self.store, request.cluster)
        return ipb.ListJobsResponse(jobs=found)

    async def _job_action(self, fn: Any, request: ipb.JobActionRequest) -> ipb.Job:
        auth.validate_text(request.id, "id", 64)
        auth.validate_text(request.reason, "reason", 1000)
        job: ipb.Job = await self.store.run(
            fn, self.store, request.id, auth.caller().actor, request.reason
        )
        return job

    async def CancelJob(
        self, request: ipb.JobActionRequest, context: grpc.aio.ServicerContext
    ) -> ipb.Job:
        return await self._job_action(joins.cancel, request)

    async def RetryJob(self, request: ipb.JobActionRequest, context: Any) -> ipb.Job:
        return await self._job_action(joins.retry, request)

    async def WatchJob(
        self, request: ipb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        # Polls the event table, as WatchNodes does: the same across replicas.
        auth.validate_text(request.id, "id", 64)
        store = self.store
        await store.run(joins.get_job, store, request.id)  # NOT_FOUND before streaming
        seq = request.after_sequence
        while True:
            events = await store.run(joins.events_after, store, request.id, seq)
            for ev in events:
                seq = ev.sequence
                yield ev
                if ev.kind == "job-finished":
                    return
            if not events:
                job = await store.run(joins.get_job, store, request.id)
                if job.state in joins.FINISHED:
                    return
                await asyncio.sleep(0.25)
