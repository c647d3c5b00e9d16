"""Kubespray clusters in the inventory: specs, node addresses, the inventory export.

Like nodes.py, each function is one transaction run in the store's worker thread.
A cluster's spec is stored as the `Cluster` message's JSON (one model, no parallel
schema); the name is the key.

Node labels come from the stored hardware inventory through `labels.derive`, with the
cluster's label policy. Parsing a stored inventory costs milliseconds, so the result is
cached per node under a fingerprint of everything it depends on (the agent's inventory
hash and size, pool, profile, the policy): an export of ten thousand nodes reads the
cache, not ten thousand inventories.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from nodeagent import label_syntax as syntax
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import kubespray, reports
from nodeagent.inventory.store import Conflict, NotFound, Store, dumps
from nodeagent.labels import config as lconfig
from nodeagent.labels.derive import derive
from nodeagent.labels.inputs import Assignment, LabelInputs
from nodeagent.tuning import gpu_driver

S = ipb.NodeState
DEFAULT_BATCH = 10
MAX_BATCH = 1000
DEFAULT_FAMILIES = ("own",)
CLUSTER_FIELDS = (
    "kubespray_dir",
    "control_plane",
    "etcd",
    "ssh_user",
    "ssh_key_path",
    "group_vars",
    "label_policy",
    "batch_size",
    "auto_join",
    "ansible_venv",
    "gpu_driver",
    "node_network",
)
# Read from the Kubespray tree and the environment by the service, never set by a caller.
OUTPUT_FIELDS = (
    "kubespray_release",
    "ansible_min_version",
    "ansible_max_version",
    "ansible_env",
    "ansible_core_version",
    "ansible_env_error",
)
EXPORTED_STATES = (S.READY, S.JOINING, S.JOINED)
_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _checked_path(value: str, what: str) -> None:
    if value and (not value.startswith("/") or len(value) > 1024 or not value.isprintable()):
        raise ValueError(f"{what} must be an absolute path")


def check_cluster(c: ipb.Cluster) -> None:
    """Refuse a spec that could never make a usable inventory (ValueError: INVALID_ARGUMENT).
    Softer problems (an even etcd count while hosts are being added) are left to export."""
    if not _CLUSTER_NAME.fullmatch(c.name):
        raise ValueError(f"cluster name {c.name[:80]!r}: 1-63 of [a-z0-9-]")
    _checked_path(c.kubespray_dir, "kubespray_dir")
    _checked_path(c.ssh_key_path, "ssh_key_path")
    _checked_path(c.ansible_venv, "ansible_venv")
    if c.ssh_user and not _SSH_USER.fullmatch(c.ssh_user):
        raise ValueError(f"ssh_user {c.ssh_user[:40]!r} is not a user name")
    if not 1 <= c.batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
    for group, hosts in (("control_plane", c.control_plane), ("etcd", c.etcd)):
        for h in hosts:
            bad = kubespray.host_problems(h.name, h.ansible_host, h.ip, h.access_ip)
            if bad:
                raise ValueError(f"{group}: {bad[0]}")
    bad = kubespray.group_vars_problems(json_format.MessageToDict(c.group_vars))
    if bad:
        raise ValueError(bad[0])
    if len(c.group_vars.SerializeToString()) > 256 * 1024:
        raise ValueError("group_vars: at most 256 KiB")
    p = c.label_policy
    syntax.check_domain(p.domain)
    unknown = [f for f in p.families if f not in lconfig.FAMILIES]
    if unknown:
        raise ValueError(f"label families {unknown}: known are {', '.join(lconfig.FAMILIES)}")
    bad = kubespray.labels_problems(p.labels, p.taints)
    if bad:
        raise ValueError(f"label policy: {bad[0]}")
    gpu_driver.check(c.gpu_driver)  # "": a cluster stored before the setting, host
    if c.node_network:
        try:
            ipaddress.ip_network(c.node_network, strict=False)
        except ValueError:
            raise ValueError(
                f"node_network {c.node_network[:80]!r} is not a network (e.g. 10.0.0.0/16)"
            ) from None


def with_defaults(c: ipb.Cluster) -> ipb.Cluster:
    out = ipb.Cluster()
    out.CopyFrom(c)
    out.batch_size = out.batch_size or DEFAULT_BATCH
    out.gpu_driver = out.gpu_driver or gpu_driver.HOST
    p = out.label_policy
    p.domain = p.domain or lconfig.DEFAULT_DOMAIN
    if not p.families:
        p.families.extend(DEFAULT_FAMILIES)
    if not p.taints:
        p.taints.append(lconfig.DEFAULT_TAINT.replace("{domain}", p.domain))
    return out


def _spec_json(c: ipb.Cluster) -> str:
    spec = ipb.Cluster()
    spec.CopyFrom(c)
    spec.ClearField("created_at")
    spec.ClearField("updated_at")
    return json_format.MessageToJson(spec, indent=None)


def cluster_from_row(row: Any) -> ipb.Cluster:
    _name, spec, created, updated = row
    c = json_format.Parse(spec, ipb.Cluster())
    c.created_at.FromNanoseconds(int(created * 1e9))
    c.updated_at.FromNanoseconds(int(updated * 1e9))
    return c


def load_cluster(store: Store, cur: Any, name: str) -> ipb.Cluster:
    cur.execute(
        store.q("SELECT name, spec, created_at, updated_at FROM clusters WHERE name = ?"), (name,)
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no cluster {name!r}")
    return cluster_from_row(row)


def create_cluster(
    store: Store, cluster: ipb.Cluster, inspected: ipb.Cluster | None = None
) -> ipb.Cluster:
    """Store a new cluster; the release, range and environment are `inspected`'s (read of
    the tree by the service), never the caller's."""
    c = with_defaults(cluster)
    _copy_outputs(c, inspected)
    check_cluster(c)
    now = time.time()
    with store.tx() as cur:
        cur.execute(store.q("SELECT 1 FROM clusters WHERE name = ?"), (c.name,))
        if cur.fetchone():
            raise Conflict(f"cluster {c.name!r} exists")
        cur.execute(
            store.q(
                "INSERT INTO clusters (name, spec, created_at, updated_at) VALUES (?, ?, ?, ?)"
            ),
            (c.name, _spec_json(c), now, now),
        )
        return load_cluster(store, cur, c.name)


def get_cluster(store: Store, name: str) -> ipb.Cluster:
    with store.tx() as cur:
        return load_cluster(store, cur, name)


def list_clusters(store: Store) -> list[ipb.Cluster]:
    with store.tx() as cur:
        cur.execute("SELECT name, spec, created_at, updated_at FROM clusters ORDER BY name")
        return [cluster_from_row(r) for r in cur.fetchall()]


def merged(current: ipb.Cluster, change: ipb.Cluster, fields: Sequence[str]) -> ipb.Cluster:
    """`current` with the named `fields` (all when empty) taken from `change`."""
    unknown = set(fields) - set(CLUSTER_FIELDS)
    if unknown:
        raise ValueError(f"unknown cluster fields {sorted(unknown)}")
    c = ipb.Cluster()
    c.CopyFrom(current)
    for f in fields or CLUSTER_FIELDS:
        if f in ("batch_size", "gpu_driver") and not getattr(change, f):
            continue
        if f in ("control_plane", "etcd"):
            c.ClearField(f)
            getattr(c, f).extend(getattr(change, f))
        elif f in ("group_vars", "label_policy"):
            getattr(c, f).CopyFrom(getattr(change, f))
        else:
            setattr(c, f, getattr(change, f))
    if not c.label_policy.domain:
        c.label_policy.domain = lconfig.DEFAULT_DOMAIN
    return c


def _copy_outputs(c: ipb.Cluster, inspected: ipb.Cluster | None) -> None:
    for f in OUTPUT_FIELDS:
        setattr(c, f, getattr(inspected, f) if inspected is not None else "")


def update_cluster(
    store: Store,
    change: ipb.Cluster,
    fields: Sequence[str],
    inspected: ipb.Cluster | None = None,
) -> ipb.Cluster:
    """Set `fields` of the cluster; its release, range and environment become those of
    `inspected` (what ansible_env.Envs.inspect read of the merged spec), which also clears
    a mark of an unusable environment: an update is how an admin says "try again"."""
    with store.tx() as cur:
        c = merged(load_cluster(store, cur, change.name), change, fields)
        _copy_outputs(c, inspected)
        check_cluster(c)
        cur.execute(
            store.q("UPDATE clusters SET spec = ?, updated_at = ? WHERE name = ?"),
            (_spec_json(c), time.time(), c.name),
        )
        return load_cluster(store, cur, c.name)


def record_env(store: Store, name: str, env: str, core_version: str, error: str = "") -> None:
    """Record the environment a job of the cluster resolved (or why none could be made:
    an `error` marks the cluster unusable until it is updated)."""
    with store.tx() as cur:
        c = load_cluster(store, cur, name)
        c.ansible_env, c.ansible_core_version, c.ansible_env_error = env, core_version, error
        cur.execute(store.q("UPDATE clusters SET spec = ? WHERE name = ?"), (_spec_json(c), c.name))


def env_unusable(c: ipb.Cluster) -> str:
    """Why no job may start for the cluster ("" when one may), with the fix."""
    if not c.ansible_env_error:
        return ""
    return (
        f"cluster {c.name!r} has no usable Ansible environment: {c.ansible_env_error}; fix "
        f"{c.kubespray_dir}/requirements.txt or point the cluster at an existing environment "
        f"(--ansible-venv), then `nodeagent admin clusters update {c.name}` to try again"
    )


def set_address(store: Store, addr: ipb.NodeAddress) -> ipb.NodeAddress:
    bad = [
        p
        for p in (
            kubespray.ansible_host_problem(addr.ansible_host),
            kubespray.address_problem(addr.ip, "ip"),
            kubespray.address_problem(addr.access_ip, "access_ip"),
        )
        if p
    ]
    if bad:
        raise ValueError(bad[0])
    with store.tx() as cur:
        cur.execute(store.q("SELECT 1 FROM nodes WHERE id = ?"), (addr.node_id,))
        if cur.fetchone() is None:
            raise NotFound(addr.node_id)
        cur.execute(
            store.q(
                "INSERT INTO node_addresses (node_id, ansible_host, ip, access_ip) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "ansible_host = excluded.ansible_host, ip = excluded.ip, "
                "access_ip = excluded.access_ip"
            ),
            (addr.node_id, addr.ansible_host, addr.ip, addr.access_ip),
        )
    return addr


def hostname_owners(store: Store, hostname: str, other_than: str) -> list[str]:
    with store.tx() as cur:
        cur.execute(
            store.q(
                "SELECT id FROM nodes WHERE hostname = ? AND id <> ? AND state <> ? "
                "ORDER BY id LIMIT 20"
            ),
            (hostname, other_than, S.RETIRED),
        )
        return [r[0] for r in cur.fetchall()]


# --- the inventory ------------------------------------------------------------------------


def _fingerprint(policy: ipb.LabelPolicy, inv_hash: str, size: int, pool: str, profile: str) -> str:
    text = dumps([policy.domain, sorted(policy.families), inv_hash, size, pool, profile])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _derive_labels(
    inventory_json: str, policy: ipb.LabelPolicy, pool: str, profile: str
) -> dict[str, str]:
    inv = json_format.Parse(inventory_json, pb.HardwareInventory(), ignore_unknown_fields=True)
    config = lconfig.LabelConfig(domain=policy.domain, families=tuple(policy.families))
    return derive(LabelInputs(inv, assignment=Assignment(pool=pool, profile=profile)), config)


def node_entries(
    store: Store, cur: Any, cluster: ipb.Cluster, where: str, args: Sequence[Any]
) -> list[kubespray.NodeEntry]:
    """Inventory entries of the nodes matching `where` (over `nodes n`).

    Labels are the map the node's agent reported (the families the cluster puts in
    node_labels); for a node whose agent reported none, or under another domain, they are
    derived from its stored inventory and cached. Addresses: an admin's, else the one
    chosen from what the agent reported (reports.export_address)."""
    policy = cluster.label_policy
    cur.execute(
        store.q(
            "SELECT n.id, n.hostname, n.pool, n.profile, n.labels, n.taints, n.inventory_hash, "
            "length(n.inventory), c.fingerprint, c.labels, r.labels, r.network, "
            "a.ansible_host, a.ip, a.access_ip "
            "FROM nodes n LEFT JOIN node_label_cache c ON c.node_id = n.id "
            "LEFT JOIN node_reports r ON r.node_id = n.id "
            f"LEFT JOIN node_addresses a ON a.node_id = n.id WHERE {where} "
            "ORDER BY n.hostname, n.id"
        ),
        list(args),
    )
    rows = cur.fetchall()
    derived: dict[str, dict[str, str]] = {}
    stale = []
    for node_id, _h, pool, profile, _l, _t, inv_hash, size, fp, cached, reported, *_ in rows:
        from_node = reports.labels_for_export(reported, policy.domain, policy.families)
        if from_node is not None:
            derived[node_id] = from_node
            continue
        want = _fingerprint(policy, inv_hash, size or 0, pool, profile)
        if fp == want:
            derived[node_id] = json.loads(cached)
        else:
            stale.append((node_id, want, pool, profile))
    for node_id, want, pool, profile in stale:
        cur.execute(store.q("SELECT inventory FROM nodes WHERE id = ?"), (node_id,))
        text = cur.fetchone()[0] or "{}"
        labels = _derive_labels(text, policy, pool, profile)
        derived[node_id] = labels
        cur.execute(
            store.q(
                "INSERT INTO node_label_cache (node_id, fingerprint, labels) "
                "VALUES (?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, labels = excluded.labels"
            ),
            (node_id, want, dumps(labels)),
        )
    entries = []
    for row in rows:
        node_id, hostname, labels, taints = row[0], row[1], row[4], row[5]
        network, host, ip, access = row[11], row[12], row[13], row[14]
        merged = derived[node_id] | dict(policy.labels) | json.loads(labels)
        node_taints = list(dict.fromkeys([*policy.taints, *json.loads(taints)]))
        problem = ""
        if not (host or ip):
            ip, problem = reports.export_address(network, cluster.node_network)
            access = ip
        entries.append(
            kubespray.NodeEntry(
                node_id,
                hostname,
                merged,
                node_taints,
                host or "",
                ip or "",
                access or "",
                address_problem=problem,
            )
        )
    return entries


def export(store: Store, name: str) -> tuple[dict[str, Any], list[str], list[str], int]:
    """(inventory, problems, warnings, node count) of the cluster's READY, JOINING and
    JOINED nodes beside its control plane and etcd.

    Problems are the cluster's own and block the export. A node that cannot be in the
    inventory (its self-reported name breaks the rules, no admin-set address, ...) is a
    warning and is left out: one node must not hold back the rest of its cluster.
    """
    states = ", ".join(str(int(s)) for s in EXPORTED_STATES)
    with store.tx() as cur:
        cluster = load_cluster(store, cur, name)
        entries = node_entries(
            store, cur, cluster, f"n.cluster = ? AND n.state IN ({states})", [name]
        )
    usable, left_out = kubespray.usable_nodes(cluster, entries)
    inventory, problems = kubespray.build(cluster, usable)
    warnings = [f"left out: {line}" for line in left_out]
    return inventory, problems, warnings, len(usable)
