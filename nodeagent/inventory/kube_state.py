"""What the reconciler knows and did, in the database: kubeconfigs, node_kube rows, leases.

Each function is one transaction. A node gets a `node_kube` row when a join job's
scale.yml succeeded for it; the row records what nodeagent did to its Node object
(cordoned, which quarantine taint, validated, how far a retirement got) so a change is
made once and undone only where nodeagent made it. `settled_state` is the node state the
row was last reconciled for: a row whose node moved since (or whose agent reported its
devices anew) is due again, and nothing else is read each round.

A node is reconciled by one replica at a time: the lease row of join jobs
(`cluster_leases`), keyed `kube-node:<id>`, so replicas never act twice on one node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import clusters, kube, lifecycle
from nodeagent.inventory.store import NotFound, Store

S = ipb.NodeState
LEASE_PREFIX = "kube-node:"
ACTOR = "system:kube-reconciler"


@dataclass
class Row:
    node_id: str
    hostname: str
    state: int
    state_reason: str
    gpu_count: int
    system_uuid: str
    cluster: str
    node_name: str
    joined_at: float
    ready: bool
    validated: bool
    devices_ok: bool
    cordoned: bool
    taint: str
    retire_step: str
    remove_job: str
    attempts: int
    touched: int = 0  # node_kube.touched when read: record() settles only if unchanged


def set_kubeconfig(store: Store, cluster: str, text: str, source: str) -> ipb.Cluster:
    """Store the cluster's kubeconfig (checked to name a server and credentials)."""
    server = kube.api_server(text)
    with store.tx() as cur:
        c = clusters.load_cluster(store, cur, cluster)
        cur.execute(
            store.q(
                "INSERT INTO cluster_kubeconfigs (cluster, kubeconfig, source, api_server, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (cluster) DO UPDATE SET "
                "kubeconfig = excluded.kubeconfig, source = excluded.source, "
                "api_server = excluded.api_server, updated_at = excluded.updated_at"
            ),
            (cluster, text, source[:300], server, time.time()),
        )
        cur.execute(
            store.q(
                "UPDATE node_kube SET settled_state = 0, touched = touched + 1 WHERE cluster = ?"
            ),
            (cluster,),
        )
    describe(c, True, source, server)
    return c


def adopt_kubeconfig(store: Store, cluster: str, text: str, source: str) -> bool:
    """Keep Kubespray's admin.conf as the cluster's kubeconfig unless it has one already."""
    with store.tx() as cur:
        cur.execute(store.q("SELECT 1 FROM cluster_kubeconfigs WHERE cluster = ?"), (cluster,))
        if cur.fetchone():
            return False
    set_kubeconfig(store, cluster, text, source)
    return True


def get_kubeconfig(store: Store, cluster: str) -> tuple[str, str, str] | None:
    """(kubeconfig, source, api server) of a cluster, or None."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                "SELECT kubeconfig, source, api_server FROM cluster_kubeconfigs WHERE cluster = ?"
            ),
            (cluster,),
        )
        row = cur.fetchone()
    return (str(row[0]), str(row[1]), str(row[2])) if row else None


def describe(c: ipb.Cluster, is_set: bool, source: str, server: str) -> None:
    """Fill a Cluster's output fields about its kubeconfig (never the kubeconfig)."""
    c.kubeconfig_set, c.kubeconfig_source, c.api_server = is_set, source, server


def describe_cluster(store: Store, c: ipb.Cluster) -> ipb.Cluster:
    found = get_kubeconfig(store, c.name)
    if found:
        describe(c, True, found[1], found[2])
    return c


def describe_clusters(store: Store, found: list[ipb.Cluster]) -> list[ipb.Cluster]:
    """describe_cluster for a list, in one query: `clusters list` shows which clusters
    the reconciler can reach without a GetCluster per cluster."""
    with store.tx() as cur:
        cur.execute("SELECT cluster, source, api_server FROM cluster_kubeconfigs")
        known = {str(r[0]): (str(r[1]), str(r[2])) for r in cur.fetchall()}
    for c in found:
        if c.name in known:
            describe(c, True, *known[c.name])
    return found


def has_kubeconfig(store: Store, cur: Any, cluster: str) -> bool:
    cur.execute(store.q("SELECT 1 FROM cluster_kubeconfigs WHERE cluster = ?"), (cluster,))
    return cur.fetchone() is not None


def joined(store: Store, cur: Any, node_id: str, cluster: str, hostname: str) -> None:
    """A join job's scale.yml succeeded for the node: the reconciler takes it from here."""
    cur.execute(
        store.q(
            "INSERT INTO node_kube (node_id, cluster, node_name, joined_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (node_id) DO UPDATE SET cluster = excluded.cluster, node_name = "
            "excluded.node_name, joined_at = excluded.joined_at, ready = 0, validated = 0, "
            "cordoned = 0, taint = '', retire_step = '', remove_job = '', settled_state = 0, "
            "attempts = 0, next_try = 0, last_error = ''"
        ),
        (node_id, cluster, hostname, time.time()),
    )


def set_devices(store: Store, node_id: str, ok: bool) -> None:
    """The agent's report that its devices are usable (validation of a joined node)."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                "UPDATE node_kube SET devices_ok = ?, settled_state = 0, touched = touched + 1 "
                "WHERE node_id = ? AND devices_ok != ?"
            ),
            (int(ok), node_id, int(ok)),
        )


ROW_SQL = (
    "SELECT n.id, n.hostname, n.state, n.state_reason, n.gpu_count, n.inventory, k.cluster, "
    "k.node_name, k.joined_at, k.ready, k.validated, k.devices_ok, k.cordoned, k.taint, "
    "k.retire_step, k.remove_job, k.attempts, k.touched "
    "FROM node_kube k JOIN nodes n ON n.id = k.node_id"
)


def _row(r: Any) -> Row:
    try:
        uuid = str((json.loads(r[5] or "{}").get("system") or {}).get("uuid", ""))
    except ValueError:
        uuid = ""
    return Row(
        r[0],
        r[1],
        int(r[2]),
        r[3],
        int(r[4]),
        uuid,
        r[6],
        r[7],
        float(r[8]),
        bool(r[9]),
        bool(r[10]),
        bool(r[11]),
        bool(r[12]),
        r[13],
        r[14],
        r[15],
        int(r[16]),
        int(r[17]),
    )


def due(store: Store, now: float, limit: int = 200) -> list[Row]:
    """Rows whose node moved since they were last reconciled, or that wait (for Ready, a
    retry, a remove job), and whose backoff has passed."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                f"{ROW_SQL} WHERE k.next_try <= ? AND (k.settled_state != n.state "
                "OR k.settled_state = 0) ORDER BY k.next_try LIMIT ?"
            ),
            (now, limit),
        )
        return [_row(r) for r in cur.fetchall()]


def load(store: Store, node_id: str) -> Row:
    with store.tx() as cur:
        cur.execute(store.q(f"{ROW_SQL} WHERE k.node_id = ?"), (node_id,))
        r = cur.fetchone()
        if r is None:
            raise NotFound(node_id)
        return _row(r)


def claim(store: Store, node_id: str, owner: str, lease_seconds: float) -> bool:
    """Take the node's lease (the join jobs' lease table); False when another holds it."""
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q(
                "INSERT INTO cluster_leases (cluster, job_id, owner, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (cluster) DO UPDATE SET "
                "job_id = excluded.job_id, owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE cluster_leases.expires_at < ? OR cluster_leases.owner = excluded.owner"
            ),
            (LEASE_PREFIX + node_id, LEASE_PREFIX + node_id, owner, now + lease_seconds, now),
        )
        return bool(cur.rowcount == 1)


def unclaim(store: Store, node_id: str, owner: str) -> None:
    with store.tx() as cur:
        cur.execute(
            store.q("DELETE FROM cluster_leases WHERE cluster = ? AND owner = ?"),
            (LEASE_PREFIX + node_id, owner),
        )


def record(
    store: Store,
    row: Row,
    owner: str,
    changes: dict[str, Any],
    event: str = "",
    target: int = 0,
    settled: bool = False,
    retry_in: float = 0.0,
) -> bool:
    """Write what was done to the Node (columns of node_kube), its event on the node's
    record and, with `target`, the node's move (through the lifecycle, in the same
    transaction). Returns False (nothing written) when this replica no longer holds the
    node's lease.

    `settled`: nothing left to do for the state the row was read in (`row`). The row is
    settled for that state, never for the node's state now, and only where nothing touched
    it since it was read: a node quarantined, or an agent's device report, that lands
    while the reconciler works on the old row leaves it due, not settled and forgotten."""
    node_id = row.node_id
    with store.tx() as cur:
        cur.execute(
            store.q("SELECT owner FROM cluster_leases WHERE cluster = ?"), (LEASE_PREFIX + node_id,)
        )
        lease = cur.fetchone()
        if lease is None or lease[0] != owner:
            return False
        cur.execute(store.q("SELECT state FROM nodes WHERE id = ?"), (node_id,))
        found = cur.fetchone()
        if found is None:
            cur.execute(store.q("DELETE FROM node_kube WHERE node_id = ?"), (node_id,))
            return True
        state, seen = int(found[0]), row.state
        if target:
            try:
                lifecycle.transition(store, cur, node_id, target, ACTOR, event)
                state = seen = target
            except lifecycle.TransitionError:
                pass  # moved by someone else meanwhile: the next round sees the new state
        elif event:
            store.add_event(cur, node_id, ACTOR, state, state, event)
        cols = {k: int(v) if isinstance(v, bool) else v for k, v in changes.items()}
        cols["next_try"] = time.time() + retry_in
        sets = ", ".join(f"{k} = ?" for k in cols)
        cur.execute(
            store.q(
                f"UPDATE node_kube SET {sets}, settled_state = "
                "CASE WHEN touched = ? THEN ? ELSE 0 END WHERE node_id = ?"
            ),
            [*cols.values(), row.touched, seen if settled else 0, node_id],
        )
        return True


def forget(store: Store, node_id: str) -> None:
    with store.tx() as cur:
        cur.execute(store.q("DELETE FROM node_kube WHERE node_id = ?"), (node_id,))


def status(store: Store, cur: Any, node_id: str) -> ipb.KubeStatus | None:
    cur.execute(
        store.q(
            "SELECT cluster, node_name, ready, validated, cordoned, taint, retire_step, "
            "last_error, attempts FROM node_kube WHERE node_id = ?"
        ),
        (node_id,),
    )
    r = cur.fetchone()
    if r is None:
        return None
    return ipb.KubeStatus(
        cluster=r[0],
        node_name=r[1],
        ready=bool(r[2]),
        validated=bool(r[3]),
        cordoned=bool(r[4]),
        quarantine_taint=r[5],
        retire_step=r[6],
        last_error=r[7],
        attempts=r[8],
    )
