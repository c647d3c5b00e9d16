"""Join jobs in the database: creation, the per-cluster lease, progress, cancel and retry.

Each function is one transaction (run in the store's worker thread). A job runs on the
replica that holds its cluster's lease, a row in `cluster_leases` with an expiry the
runner keeps renewing: one job per cluster at a time across replicas, and a job whose
replica died is taken over (resumed) once the lease expires. Every write a runner makes
checks that it still owns the job, so a replica that lost its lease cannot overwrite
the work of the one that took over.

Node states move only through lifecycle.py: READY -> JOINING when a batch starts,
JOINING -> JOINED or FAILED when it ends (FAILED -> READY again on retry).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import clusters, kube_state, kubespray, lifecycle
from nodeagent.inventory.store import Conflict, NotFound, Store, message_from_row

S = ipb.NodeState
J = ipb.JobState
N = ipb.JobNodeState
ACTIVE = (J.JOB_PENDING, J.JOB_RUNNING)
FINISHED = (J.JOB_SUCCEEDED, J.JOB_FAILED, J.JOB_CANCELLED)
DONE = (N.JOB_NODE_JOINED, N.JOB_NODE_REMOVED)  # a node's part of a job succeeded
REMOVE = "remove"  # a job's kind: remove-node.yml for retired nodes (else scale.yml)
JOB_COLUMNS = (
    "id, cluster, state, batch_size, current_batch, message, cancel_requested, owner, "
    "attempts, retry_of, created_by, created_at, updated_at, ansible_env, ansible_core_version, "
    "kind"
)
JOB_FIELDS = tuple(JOB_COLUMNS.replace(" ", "").split(","))  # named as ipb.Job's fields
EVENT_COLUMNS = "seq, job_id, time, kind, node_id, hostname, batch, message, job_state"
EVENT_FIELDS = ("sequence", *EVENT_COLUMNS.replace(" ", "").split(",")[1:])


class LeaseLost(Conflict):
    """This replica no longer owns the job: stop without writing anything more."""


def _transition(store: Store, cur: Any, node_id: str, target: int, actor: str, reason: str) -> bool:
    """Move a node if the lifecycle allows it; False (nothing written) when it does not.

    A job meets nodes that an admin deleted, held or moved meanwhile: those are the
    job's per-node failures, not errors of the whole job.
    """
    try:
        lifecycle.transition(store, cur, node_id, target, actor, reason, unchanged_ok=True)
    except (NotFound, lifecycle.TransitionError):
        return False
    return True


def add_event(
    store: Store,
    cur: Any,
    job_id: str,
    kind: str,
    message: str = "",
    *,
    node_id: str = "",
    hostname: str = "",
    batch: int = 0,
    job_state: int = 0,
) -> None:
    cur.execute(
        store.q(
            "INSERT INTO join_job_events (job_id, time, kind, node_id, hostname, "
            "batch, message, job_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        (job_id, time.time(), kind, node_id, hostname, batch, message[:2000], job_state),
    )


def event(store: Store, job_id: str, kind: str, message: str = "", **kw: Any) -> None:
    with store.tx() as cur:
        add_event(store, cur, job_id, kind, message, **kw)


def _job(store: Store, cur: Any, job_id: str) -> ipb.Job:
    cur.execute(store.q(f"SELECT {JOB_COLUMNS} FROM join_jobs WHERE id = ?"), (job_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no join job {job_id!r}")
    job = message_from_row(ipb.Job, JOB_FIELDS, row)
    cur.execute(
        store.q(
            "SELECT node_id, hostname, batch, state, failed_task, message FROM "
            "join_job_nodes WHERE job_id = ? ORDER BY batch, hostname, node_id"
        ),
        (job_id,),
    )
    for node_id, hostname, batch, nstate, task, msg in cur.fetchall():
        job.nodes.add(
            node_id=node_id,
            hostname=hostname,
            batch=batch,
            state=nstate,
            failed_task=task,
            message=msg,
        )
    job.batches = max((n.batch for n in job.nodes), default=0)
    return job


def get_job(store: Store, job_id: str) -> ipb.Job:
    with store.tx() as cur:
        return _job(store, cur, job_id)


def list_jobs(store: Store, cluster: str) -> list[ipb.Job]:
    with store.tx() as cur:
        where, args = ("WHERE cluster = ?", [cluster]) if cluster else ("", [])
        cur.execute(
            store.q(f"SELECT id FROM join_jobs {where} ORDER BY created_at DESC LIMIT 200"), args
        )
        return [_job(store, cur, r[0]) for r in cur.fetchall()]


def _busy_nodes(store: Store, cur: Any, node_ids: Sequence[str]) -> set[str]:
    if not node_ids:
        return set()
    marks = ", ".join("?" for _ in node_ids)
    states = ", ".join(str(int(s)) for s in ACTIVE)
    cur.execute(
        store.q(
            f"SELECT n.node_id FROM join_job_nodes n JOIN join_jobs j ON "
            f"j.id = n.job_id WHERE j.state IN ({states}) AND n.node_id IN "
            f"({marks})"
        ),
        list(node_ids),
    )
    return {r[0] for r in cur.fetchall()}


def _insert_job(
    store: Store,
    cur: Any,
    cluster: ipb.Cluster,
    nodes: list[tuple[str, str]],
    batch_size: int,
    actor: str,
    retry_of: str = "",
    kind: str = "join",
) -> str:
    job_id = uuid.uuid4().hex[:12]
    now = time.time()
    cur.execute(
        store.q(
            "INSERT INTO join_jobs (id, cluster, state, batch_size, retry_of, "
            "created_by, created_at, updated_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        (job_id, cluster.name, J.JOB_PENDING, batch_size, retry_of, actor, now, now, kind),
    )
    for i, (node_id, hostname) in enumerate(sorted(nodes, key=lambda n: (n[1], n[0]))):
        cur.execute(
            store.q(
                "INSERT INTO join_job_nodes (job_id, node_id, hostname, batch, "
                "state) VALUES (?, ?, ?, ?, ?)"
            ),
            (job_id, node_id, hostname, i // batch_size + 1, N.JOB_NODE_PENDING),
        )
    batches = (len(nodes) + batch_size - 1) // batch_size
    add_event(
        store,
        cur,
        job_id,
        "job-created",
        f"{len(nodes)} node(s) in {batches} batch(es) of up to {batch_size}, by {actor}"
        + (f", retrying job {retry_of}" if retry_of else ""),
        job_state=J.JOB_PENDING,
    )
    return job_id


def create_job(store: Store, req: ipb.StartJoinRequest, actor: str) -> ipb.Job:
    """A PENDING job for READY nodes of the cluster (the listed ones, or all of them)."""
    if req.batch_size > clusters.MAX_BATCH:
        raise ValueError(f"batch_size must be at most {clusters.MAX_BATCH}")
    with store.tx() as cur:
        cluster = clusters.load_cluster(store, cur, req.cluster)
        unusable = clusters.env_unusable(cluster)
        if unusable:
            raise Conflict(unusable)
        if req.node_ids:
            marks = ", ".join("?" for _ in req.node_ids)
            cur.execute(
                store.q(f"SELECT id, hostname, state, cluster FROM nodes WHERE id IN ({marks})"),
                list(req.node_ids),
            )
            rows = {r[0]: r for r in cur.fetchall()}
            for node_id in req.node_ids:
                row = rows.get(node_id)
                if row is None:
                    raise NotFound(node_id)
                if row[3] != cluster.name:
                    raise Conflict(
                        f"node {node_id} is assigned to cluster {row[3] or '(none)'!r}, "
                        f"not {cluster.name!r}"
                    )
                if row[2] != S.READY:
                    raise Conflict(f"node {node_id} is {lifecycle.name(row[2])}, not READY")
            nodes = [(r[0], r[1]) for r in rows.values()]
        else:
            cur.execute(
                store.q("SELECT id, hostname FROM nodes WHERE cluster = ? AND state = ?"),
                (cluster.name, S.READY),
            )
            nodes = [(r[0], r[1]) for r in cur.fetchall()]
        busy = _busy_nodes(store, cur, [n[0] for n in nodes])
        if req.node_ids and busy:
            raise Conflict(f"node(s) {', '.join(sorted(busy))} already in an active join job")
        nodes = [n for n in nodes if n[0] not in busy]
        if not nodes:
            raise Conflict(f"no READY node assigned to cluster {cluster.name!r} is waiting to join")
        job_id = _insert_job(
            store, cur, cluster, nodes, req.batch_size or cluster.batch_size, actor
        )
        return _job(store, cur, job_id)


def create_remove_job(store: Store, cluster: str, node_id: str, hostname: str, actor: str) -> str:
    """A job running Kubespray's remove-node.yml for one retired node (queued behind the
    cluster's other jobs, under the same lease)."""
    with store.tx() as cur:
        c = clusters.load_cluster(store, cur, cluster)
        return _insert_job(store, cur, c, [(node_id, hostname)], 1, actor, kind=REMOVE)


def remove_nodes(store: Store, job_id: str, owner: str) -> list[tuple[str, str]]:
    """(node id, hostname) of a remove job's unfinished nodes, marked running."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        cur.execute(
            store.q(
                "SELECT node_id, hostname FROM join_job_nodes WHERE job_id = ? AND state IN "
                "(?, ?) ORDER BY hostname"
            ),
            (job_id, N.JOB_NODE_PENDING, N.JOB_NODE_RUNNING),
        )
        out = [(r[0], r[1]) for r in cur.fetchall()]
        _set_nodes(store, cur, job_id, N.JOB_NODE_PENDING, N.JOB_NODE_RUNNING, "")
        cur.execute(
            store.q("UPDATE join_jobs SET current_batch = 1, updated_at = ? WHERE id = ?"),
            (time.time(), job_id),
        )
        return out


def record_removed(
    store: Store, job_id: str, owner: str, results: Sequence[tuple[str, str, bool, str, str]]
) -> None:
    """(node id, hostname, removed, failed task, message) of a remove job's nodes; the
    nodes stay RETIRED either way (the reconciler decides what comes next)."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        for node_id, hostname, ok, task, message in results:
            cur.execute(
                store.q(
                    "UPDATE join_job_nodes SET state = ?, failed_task = ?, message = ? "
                    "WHERE job_id = ? AND node_id = ?"
                ),
                (
                    N.JOB_NODE_REMOVED if ok else N.JOB_NODE_FAILED,
                    task[:500],
                    message[:2000],
                    job_id,
                    node_id,
                ),
            )
            add_event(
                store,
                cur,
                job_id,
                "node-removed" if ok else "node-failed",
                "removed" if ok else f"{task}: {message}".strip(": "),
                node_id=node_id,
                hostname=hostname,
                batch=1,
                job_state=J.JOB_RUNNING,
            )


def auto_join_candidates(store: Store) -> list[str]:
    """Clusters with auto_join on, READY nodes waiting and no active job."""
    out = []
    for cluster in clusters.list_clusters(store):
        if not cluster.auto_join or cluster.ansible_env_error:
            continue
        with store.tx() as cur:
            states = ", ".join(str(int(s)) for s in ACTIVE)
            cur.execute(
                store.q(f"SELECT 1 FROM join_jobs WHERE cluster = ? AND state IN ({states})"),
                (cluster.name,),
            )
            if cur.fetchone():
                continue
            cur.execute(
                store.q("SELECT 1 FROM nodes WHERE cluster = ? AND state = ? LIMIT 1"),
                (cluster.name, S.READY),
            )
            if cur.fetchone():
                out.append(cluster.name)
    return out


def cancel(store: Store, job_id: str, actor: str, reason: str) -> ipb.Job:
    with store.tx() as cur:
        job = _job(store, cur, job_id)
        why = reason or "cancelled"
        if job.state in FINISHED:
            raise Conflict(f"job {job_id} has already finished ({ipb.JobState.Name(job.state)})")
        if job.state == J.JOB_PENDING:
            _set_nodes(store, cur, job_id, N.JOB_NODE_PENDING, N.JOB_NODE_CANCELLED, why)
            _finish(store, cur, job_id, J.JOB_CANCELLED, f"cancelled by {actor}: {why}")
        else:
            cur.execute(
                store.q("UPDATE join_jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?"),
                (time.time(), job_id),
            )
            add_event(
                store, cur, job_id, "cancel-requested", f"by {actor}: {why}", job_state=job.state
            )
        return _job(store, cur, job_id)


def retry(store: Store, job_id: str, actor: str, reason: str) -> ipb.Job:
    """A new job for the nodes of a finished job that did not join (FAILED ones go back to
    READY first, through the lifecycle)."""
    with store.tx() as cur:
        old = _job(store, cur, job_id)
        if old.state not in FINISHED:
            raise Conflict(f"job {job_id} is {ipb.JobState.Name(old.state)}: cancel it first")
        if old.state == J.JOB_SUCCEEDED:
            raise Conflict(f"job {job_id} succeeded: nothing to retry")
        cluster = clusters.load_cluster(store, cur, old.cluster)
        why = f"retry of join job {job_id}" + (f": {reason}" if reason else "")
        nodes = []
        for n in old.nodes:
            if n.state == N.JOB_NODE_JOINED:
                continue
            cur.execute(store.q("SELECT state, cluster FROM nodes WHERE id = ?"), (n.node_id,))
            row = cur.fetchone()
            if row is None or row[1] != cluster.name:
                continue
            if row[0] == S.FAILED:
                _transition(store, cur, n.node_id, S.READY, actor, why)
            elif row[0] != S.READY:
                continue
            nodes.append((n.node_id, n.hostname))
        busy = _busy_nodes(store, cur, [n[0] for n in nodes])
        nodes = [n for n in nodes if n[0] not in busy]
        if not nodes:
            raise Conflict(f"job {job_id}: no node left to retry (joined, moved or busy)")
        new_id = _insert_job(store, cur, cluster, nodes, old.batch_size, actor, retry_of=job_id)
        return _job(store, cur, new_id)


# --- the runner's side --------------------------------------------------------------------


def claim_next(store: Store, owner: str, lease_seconds: float) -> str | None:
    """Take the lease of the oldest runnable job's cluster; the job id, or None.

    Runnable: PENDING, or RUNNING with its lease expired (its replica died)."""
    now = time.time()
    states = ", ".join(str(int(s)) for s in ACTIVE)
    with store.tx() as cur:
        cur.execute(
            store.q(
                f"SELECT id, cluster, state, attempts FROM join_jobs WHERE state IN "
                f"({states}) ORDER BY created_at, id"
            )
        )
        tried: set[str] = set()
        for job_id, cluster, state, attempts in cur.fetchall():
            if cluster in tried:
                continue  # the cluster's oldest active job goes first
            tried.add(cluster)
            cur.execute(
                store.q(
                    "INSERT INTO cluster_leases (cluster, job_id, owner, expires_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (cluster) DO UPDATE SET "
                    "job_id = excluded.job_id,"
                    " owner = excluded.owner, expires_at = excluded.expires_at "
                    "WHERE cluster_leases.expires_at < ?"
                ),
                (cluster, job_id, owner, now + lease_seconds, now),
            )
            if cur.rowcount != 1:
                continue
            cur.execute(
                store.q(
                    "UPDATE join_jobs SET state = ?, owner = ?, attempts = ?, "
                    "updated_at = ? WHERE id = ?"
                ),
                (J.JOB_RUNNING, owner, attempts + 1, now, job_id),
            )
            kind = "job-started" if state == J.JOB_PENDING else "job-resumed"
            add_event(
                store,
                cur,
                job_id,
                kind,
                f"attempt {attempts + 1} on {owner}",
                job_state=J.JOB_RUNNING,
            )
            return str(job_id)
    return None


def _own(store: Store, cur: Any, job_id: str, owner: str) -> tuple[str, bool]:
    """(cluster, cancel requested) of a job this replica still runs; LeaseLost otherwise."""
    cur.execute(
        store.q("SELECT cluster, cancel_requested, owner, state FROM join_jobs WHERE id = ?"),
        (job_id,),
    )
    row = cur.fetchone()
    if row is None or row[2] != owner or row[3] != J.JOB_RUNNING:
        raise LeaseLost(f"job {job_id} is no longer run by {owner}")
    return row[0], bool(row[1])


def renew(store: Store, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether a cancel was requested. LeaseLost if taken over."""
    with store.tx() as cur:
        cluster, cancel_requested = _own(store, cur, job_id, owner)
        cur.execute(
            store.q(
                "UPDATE cluster_leases SET expires_at = ? WHERE cluster = ? AND "
                "owner = ? AND job_id = ?"
            ),
            (time.time() + lease_seconds, cluster, owner, job_id),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"lease of cluster {cluster} lost")
        return cancel_requested


def set_ansible(store: Store, job_id: str, owner: str, env: str, core_version: str) -> None:
    """Record the environment the job's playbooks run with (shown in the job record)."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        cur.execute(
            store.q("UPDATE join_jobs SET ansible_env = ?, ansible_core_version = ? WHERE id = ?"),
            (env, core_version, job_id),
        )


def release(store: Store, job_id: str, owner: str) -> None:
    """Give the lease up now (a replica stopping): the job is resumed without waiting."""
    with store.tx() as cur:
        cur.execute(
            store.q("UPDATE cluster_leases SET expires_at = 0 WHERE job_id = ? AND owner = ?"),
            (job_id, owner),
        )


Run = tuple[ipb.Cluster, dict[str, Any], list[str], dict[str, list[str]]]


def job_inventory(store: Store, job_id: str, owner: str) -> Run:
    """(cluster, inventory, cluster problems, problems per job node id) for a run: the
    cluster's JOINED nodes and this job's unfinished nodes as workers."""
    states = f"{int(N.JOB_NODE_PENDING)}, {int(N.JOB_NODE_RUNNING)}"
    with store.tx() as cur:
        name, _ = _own(store, cur, job_id, owner)
        cluster = clusters.load_cluster(store, cur, name)
        entries = clusters.node_entries(
            store,
            cur,
            cluster,
            f"(n.cluster = ? AND n.state = {int(S.JOINED)}) OR n.id IN (SELECT node_id FROM "
            f"join_job_nodes WHERE job_id = ? AND state IN ({states}))",
            [name, job_id],
        )
        cur.execute(
            store.q(f"SELECT node_id FROM join_job_nodes WHERE job_id = ? AND state IN ({states})"),
            (job_id,),
        )
        mine = {r[0] for r in cur.fetchall()}
    per_node = {e.node_id: kubespray.node_problems(e) for e in entries if e.node_id in mine}
    names: dict[str, list[str]] = {}
    for e in entries:
        names.setdefault(e.name, []).append(e.node_id)
    for e in entries:
        if e.node_id in mine and len(names[e.name]) > 1:
            per_node[e.node_id].append(f"{e.name}: another node has this name")
    usable = [e for e in entries if not per_node.get(e.node_id)]
    inventory, _ = kubespray.build(cluster, usable)
    return cluster, inventory, kubespray.cluster_problems(cluster), per_node


def batch_nodes(store: Store, job_id: str, owner: str) -> tuple[int, list[tuple[str, str]]]:
    """(batch, [(node id, hostname)]) of the next batch with unfinished nodes; (0, []) when
    none is left. Nodes are moved READY -> JOINING; a node no longer READY (held, moved to
    another cluster) is dropped from the job as FAILED with the reason."""
    with store.tx() as cur:
        name, _ = _own(store, cur, job_id, owner)
        cur.execute(
            store.q("SELECT MIN(batch) FROM join_job_nodes WHERE job_id = ? AND state IN (?, ?)"),
            (job_id, N.JOB_NODE_PENDING, N.JOB_NODE_RUNNING),
        )
        batch = cur.fetchone()[0]
        if batch is None:
            return 0, []
        cur.execute(
            store.q(
                "SELECT j.node_id, j.hostname, n.state, n.cluster FROM "
                "join_job_nodes j LEFT JOIN nodes n ON n.id = j.node_id "
                "WHERE j.job_id = ? AND j.batch = ? AND j.state IN (?, ?) "
                "ORDER BY j.hostname, j.node_id"
            ),
            (job_id, batch, N.JOB_NODE_PENDING, N.JOB_NODE_RUNNING),
        )
        out = []
        actor = f"system:join/{job_id}"
        for node_id, hostname, state, cluster in cur.fetchall():
            ok = cluster == name and state in (S.READY, S.JOINING)
            if ok:
                ok = _transition(
                    store, cur, node_id, S.JOINING, actor, f"join job {job_id}: batch {batch}"
                )
            if not ok:
                why = (
                    "node was deleted"
                    if state is None
                    else f"node is {lifecycle.name(state)} in cluster {cluster or '(none)'!r}"
                )
                _node_result(store, cur, job_id, node_id, hostname, batch, False, "", why)
                continue
            cur.execute(
                store.q("UPDATE join_job_nodes SET state = ? WHERE job_id = ? AND node_id = ?"),
                (N.JOB_NODE_RUNNING, job_id, node_id),
            )
            out.append((node_id, hostname))
        cur.execute(
            store.q("UPDATE join_jobs SET current_batch = ?, updated_at = ? WHERE id = ?"),
            (batch, time.time(), job_id),
        )
        return int(batch), out


def _node_result(
    store: Store,
    cur: Any,
    job_id: str,
    node_id: str,
    hostname: str,
    batch: int,
    joined: bool,
    task: str,
    message: str,
) -> None:
    actor = f"system:join/{job_id}"
    if joined:
        # JOINED once the API server shows the Node Ready (reconciler.py); a cluster without
        # a kubeconfig cannot be asked, and the node is JOINED on scale.yml's word
        cur.execute(store.q("SELECT cluster FROM join_jobs WHERE id = ?"), (job_id,))
        cluster = cur.fetchone()[0]
        kube_state.joined(store, cur, node_id, cluster, hostname)
        if kube_state.has_kubeconfig(store, cur, cluster):
            store.add_event(
                cur,
                node_id,
                actor,
                S.JOINING,
                S.JOINING,
                f"scale.yml of job {job_id} succeeded: waiting for the Node to be Ready",
            )
        else:
            _transition(store, cur, node_id, S.JOINED, actor, f"joined by job {job_id}")
    else:
        where = f"task {task!r}: " if task else ""
        _transition(store, cur, node_id, S.FAILED, actor, f"join job {job_id}: {where}{message}")
    cur.execute(
        store.q(
            "UPDATE join_job_nodes SET state = ?, failed_task = ?, message = ? "
            "WHERE job_id = ? AND node_id = ?"
        ),
        (
            N.JOB_NODE_JOINED if joined else N.JOB_NODE_FAILED,
            task[:500],
            message[:2000],
            job_id,
            node_id,
        ),
    )
    text = "joined" if joined else (f"{task}: {message}" if task else message)
    add_event(
        store,
        cur,
        job_id,
        "node-joined" if joined else "node-failed",
        text,
        node_id=node_id,
        hostname=hostname,
        batch=batch,
        job_state=J.JOB_RUNNING,
    )


def record_results(
    store: Store,
    job_id: str,
    owner: str,
    batch: int,
    results: Sequence[tuple[str, str, bool, str, str]],
) -> None:
    """Record (node id, hostname, joined, failed task, message) for nodes of a batch."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        for node_id, hostname, joined, task, message in results:
            _node_result(store, cur, job_id, node_id, hostname, batch, joined, task, message)


def fail_unstarted(store: Store, job_id: str, owner: str, problems: dict[str, list[str]]) -> None:
    """Nodes that cannot go into the inventory (bad name, bad labels) end FAILED at once."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        cur.execute(
            store.q(
                "SELECT node_id, hostname, batch FROM join_job_nodes WHERE job_id = ? "
                "AND state IN (?, ?)"
            ),
            (job_id, N.JOB_NODE_PENDING, N.JOB_NODE_RUNNING),
        )
        for node_id, hostname, batch in cur.fetchall():
            if problems.get(node_id):
                _node_result(
                    store,
                    cur,
                    job_id,
                    node_id,
                    hostname,
                    batch,
                    False,
                    "inventory validation",
                    "; ".join(problems[node_id]),
                )


def _set_nodes(
    store: Store, cur: Any, job_id: str, from_state: int, to_state: int, message: str
) -> None:
    cur.execute(
        store.q("UPDATE join_job_nodes SET state = ?, message = ? WHERE job_id = ? AND state = ?"),
        (to_state, message[:2000], job_id, from_state),
    )


def _finish(store: Store, cur: Any, job_id: str, state: int, message: str) -> None:
    cur.execute(
        store.q("UPDATE join_jobs SET state = ?, message = ?, updated_at = ? WHERE id = ?"),
        (state, message[:2000], time.time(), job_id),
    )
    cur.execute(store.q("DELETE FROM cluster_leases WHERE job_id = ?"), (job_id,))
    add_event(store, cur, job_id, "job-finished", message, job_state=state)


def finish(
    store: Store, job_id: str, owner: str, message: str, *, cancelled: bool = False, abort: str = ""
) -> ipb.Job:
    """End the job. `cancelled`: nodes not started become CANCELLED, nodes mid-batch FAILED;
    `abort` (a cluster-level problem): nodes not started are FAILED in the job with it but
    stay READY (nothing ran on them)."""
    with store.tx() as cur:
        _own(store, cur, job_id, owner)
        cur.execute(
            store.q(
                "SELECT node_id, hostname, batch FROM join_job_nodes WHERE job_id = ? AND state = ?"
            ),
            (job_id, N.JOB_NODE_RUNNING),
        )
        for node_id, hostname, batch in cur.fetchall():
            why = "job cancelled while this node was joining" if cancelled else abort or message
            _node_result(store, cur, job_id, node_id, hostname, batch, False, "", why)
        if cancelled:
            _set_nodes(store, cur, job_id, N.JOB_NODE_PENDING, N.JOB_NODE_CANCELLED, "cancelled")
        elif abort:
            _set_nodes(store, cur, job_id, N.JOB_NODE_PENDING, N.JOB_NODE_FAILED, abort)
        job = _job(store, cur, job_id)
        if cancelled:
            state = J.JOB_CANCELLED
        elif abort or any(n.state not in DONE for n in job.nodes):
            state = J.JOB_FAILED
        else:
            state = J.JOB_SUCCEEDED
        joined = sum(n.state in DONE for n in job.nodes)
        verb = "removed" if job.kind == REMOVE else "joined"
        summary = f"{joined}/{len(job.nodes)} {verb}" + (f"; {message}" if message else "")
        _finish(store, cur, job_id, state, summary)
        return _job(store, cur, job_id)


def events_after(store: Store, job_id: str, seq: int, limit: int = 500) -> list[ipb.JobEvent]:
    with store.tx() as cur:
        cur.execute(
            store.q(
                f"SELECT {EVENT_COLUMNS} FROM join_job_events WHERE job_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?"
            ),
            (job_id, seq, limit),
        )
        return [message_from_row(ipb.JobEvent, EVENT_FIELDS, r) for r in cur.fetchall()]
