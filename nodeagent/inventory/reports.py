"""What agents report beside their inventory: their label map, their addresses, and how
the join hooks the inventory asked for ended; and what goes back down: the fleet's tiers
and the hooks to run.

The label map is stored as the node computed it, so an export reads it instead of
deriving ten thousand maps from stored inventories; the addresses are where Kubespray
reaches the node when no admin set one. Both are checked before they are stored: a node
is not trusted to send valid labels or addresses.

Heartbeats are answered from memory; what they need from the database (hooks asked by a
job on any replica, tiers regrouped by an admin) is polled into `ReportCache`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from nodeagent import label_syntax as syntax
from nodeagent.api import auth
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.store import Store
from nodeagent.labels.config import FAMILIES

MAX_LABELS = 500
MAX_INTERFACES = 256
MAX_ADDRESSES = 64  # per interface
HOOK_PHASES = ("pre-join", "post-join")
NO_USABLE_ADDRESS = "reported only loopback or link-local addresses"


def check_labels(rep: ipb.ReportedLabels) -> None:
    """ValueError naming the first problem of a reported label map."""
    syntax.check_domain(rep.domain)
    unknown = sorted(set(rep.families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"labels: unknown family {unknown[0][:40]!r}")
    total = sum(len(f.labels) for f in rep.families.values())
    if total > MAX_LABELS:
        raise ValueError(f"labels: {total} labels, at most {MAX_LABELS}")
    for family in rep.families.values():
        bad = syntax.problems(dict(family.labels))
        if bad:
            raise ValueError(f"labels: {bad[0][:200]}")


def check_network(net: ipb.NodeNetwork) -> None:
    """ValueError naming the first problem of a reported address list."""
    if len(net.interfaces) > MAX_INTERFACES:
        raise ValueError(f"network: at most {MAX_INTERFACES} interfaces")
    for iface in net.interfaces:
        auth.validate_text(iface.name, "interface name", 15)
        if len(iface.addresses) > MAX_ADDRESSES:
            raise ValueError(f"network: {iface.name}: at most {MAX_ADDRESSES} addresses")
        for address in iface.addresses:
            try:
                ipaddress.ip_interface(address)
            except ValueError:
                raise ValueError(
                    f"network: {iface.name}: {address[:60]!r} is not address/prefix"
                ) from None
    auth.validate_text(net.default_route_interface, "default route interface", 15)
    if net.default_route_address:
        try:
            ipaddress.ip_address(net.default_route_address)
        except ValueError:
            raise ValueError(
                f"network: default route address {net.default_route_address[:60]!r} "
                "is not an address"
            ) from None


def check_hook_phases(phases: Sequence[str]) -> None:
    unknown = [p for p in phases if p not in HOOK_PHASES]
    if unknown:
        raise ValueError(f"hook_phases: unknown phase {unknown[0][:40]!r}")


def check_hook_results(results: Sequence[ipb.HookResult]) -> None:
    if len(results) > 16:
        raise ValueError("hook_results: at most 16")
    for r in results:
        if r.phase not in HOOK_PHASES:
            raise ValueError(f"hook_results: unknown phase {r.phase[:40]!r}")
        auth.validate_text(r.request_id, "hook request id", 64)
        if len(r.message) > 8000:
            raise ValueError("hook_results: message over 8000 characters")


def store_reports(
    store: Store,
    node_id: str,
    labels: ipb.ReportedLabels | None,
    network: ipb.NodeNetwork | None,
    hook_results: Sequence[ipb.HookResult],
    hook_phases: Sequence[str] | None = None,
) -> None:
    """Keep what a heartbeat reported (each part only when it was sent)."""
    with store.tx() as cur:
        now = time.time()
        if labels is not None or network is not None or hook_phases is not None:
            cur.execute(
                store.q(
                    "INSERT INTO node_reports (node_id, updated_at) VALUES (?, ?) ON CONFLICT "
                    "(node_id) DO NOTHING"
                ),
                (node_id, now),
            )
        if labels is not None:
            cur.execute(
                store.q("UPDATE node_reports SET labels = ?, updated_at = ? WHERE node_id = ?"),
                (json_format.MessageToJson(labels, indent=None, sort_keys=True), now, node_id),
            )
        if network is not None:
            cur.execute(
                store.q("UPDATE node_reports SET network = ?, updated_at = ? WHERE node_id = ?"),
                (json_format.MessageToJson(network, indent=None), now, node_id),
            )
        if hook_phases is not None:
            cur.execute(
                store.q("UPDATE node_reports SET hook_phases = ? WHERE node_id = ?"),
                (json.dumps(sorted(set(hook_phases))), node_id),
            )
        for r in hook_results:
            cur.execute(
                store.q(
                    "UPDATE node_hooks SET state = ?, message = ?, updated_at = ? "
                    "WHERE node_id = ? AND request_id = ? AND phase = ? AND state = 'asked'"
                ),
                ("ok" if r.ok else "failed", r.message, now, node_id, r.request_id, r.phase),
            )


def reported(store: Store, cur: Any, node_id: str) -> tuple[ipb.ReportedLabels, ipb.NodeNetwork]:
    cur.execute(store.q("SELECT labels, network FROM node_reports WHERE node_id = ?"), (node_id,))
    row = cur.fetchone()
    labels, network = ipb.ReportedLabels(), ipb.NodeNetwork()
    if row is not None:
        if row[0]:
            json_format.Parse(row[0], labels, ignore_unknown_fields=True)
        if row[1]:
            json_format.Parse(row[1], network, ignore_unknown_fields=True)
    return labels, network


# --- what the export takes from the reports --------------------------------------------


def labels_for_export(
    labels_json: str | None, domain: str, families: Sequence[str]
) -> dict[str, str] | None:
    """The families a cluster puts in node_labels, from the node's report; None when the
    node reported none, or with another domain than the cluster's (then the export
    derives them from the stored inventory, as for an agent that reports no labels)."""
    if not labels_json:
        return None
    data = json.loads(labels_json)
    if data.get("domain", "") != domain:
        return None
    out: dict[str, str] = {}
    for family in families:
        out |= data.get("families", {}).get(family, {}).get("labels", {})
    return out


def export_address(network_json: str | None, node_network: str) -> tuple[str, str]:
    """(address, problem) for a node with no admin-set address: the reported address
    inside `node_network` when the cluster names one, else the default route's source.
    Never a loopback or link-local address, and never the host name."""
    if not network_json:
        return "", ""
    data = json.loads(network_json)
    interfaces = data.get("interfaces", [])
    if node_network:
        net = ipaddress.ip_network(node_network, strict=False)
        for iface in interfaces:
            for address in iface.get("addresses", []):
                ip = ipaddress.ip_interface(address).ip
                if ip.version == net.version and ip in net and _usable(ip):
                    return str(ip), ""
        return "", f"reported no address in the cluster's node_network {node_network}"
    default = data.get("defaultRouteAddress", "")
    if default and _usable(ipaddress.ip_address(default)):
        return default, ""
    if not any(
        _usable(ipaddress.ip_interface(a).ip) for i in interfaces for a in i.get("addresses", [])
    ):
        return "", NO_USABLE_ADDRESS
    return "", "reported no default route: set the cluster's node_network or an address"


def _usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


# --- what goes down in heartbeat replies -------------------------------------------------


def tiers_hash(tiers: fpb.FabricTiers) -> str:
    return hashlib.sha256(tiers.SerializeToString(deterministic=True)).hexdigest()


@dataclass
class ReportCache:
    """Polled from the database by every replica: hooks any replica's job asked for, and
    tiers an admin's grouping changed."""

    hooks: dict[str, list[ipb.HookRequest]] = field(default_factory=dict)
    tiers: dict[str, tuple[str, fpb.FabricTiers]] = field(default_factory=dict)
    tiers_since: float = 0.0

    def fill(self, resp: ipb.HeartbeatResponse, node_id: str, held_hash: str) -> None:
        entry = self.tiers.get(node_id)
        if entry is not None and entry[0] != held_hash:
            resp.fleet_tiers.CopyFrom(entry[1])
        resp.hooks.extend(self.hooks.get(node_id, []))

    def adds(self, node_id: str, held_hash: str) -> bool:
        """Whether fill would add anything for this node (a quiet beat's shortcut)."""
        entry = self.tiers.get(node_id)
        return (entry is not None and entry[0] != held_hash) or bool(self.hooks.get(node_id))


def poll(store: Store, since: float) -> tuple[dict[str, list[ipb.HookRequest]], list[Any], float]:
    """(hooks asked, tiers rows changed since `since`, the new mark)."""
    now = time.time()
    with store.tx() as cur:
        cur.execute(
            store.q("SELECT node_id, request_id, phase FROM node_hooks WHERE state = 'asked'")
        )
        hooks: dict[str, list[ipb.HookRequest]] = {}
        for node_id, request_id, phase in cur.fetchall():
            hooks.setdefault(node_id, []).append(
                ipb.HookRequest(phase=phase, request_id=request_id)
            )
        cur.execute(
            store.q("SELECT node_id, tiers FROM fabric WHERE tiers_at >= ? AND tiers <> ''"),
            (since,),
        )
        rows = cur.fetchall()
    return hooks, rows, now - 5.0  # overlap: a write committed during the read is seen


def apply_poll(cache: ReportCache, hooks: Mapping[str, list[ipb.HookRequest]], rows: Any) -> None:
    cache.hooks = dict(hooks)
    for node_id, tiers_json in rows:
        tiers = json_format.Parse(tiers_json, fpb.FabricTiers(), ignore_unknown_fields=True)
        cache.tiers[node_id] = (tiers_hash(tiers), tiers)


# --- join hooks, for the join runner ------------------------------------------------------


def ask_hooks(store: Store, node_ids: Sequence[str], request_id: str, phase: str) -> None:
    with store.tx() as cur:
        for node_id in node_ids:
            cur.execute(
                store.q(
                    "INSERT INTO node_hooks (node_id, request_id, phase, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (node_id, request_id, phase) DO NOTHING"
                ),
                (node_id, request_id, phase, time.time()),
            )


def hook_states(store: Store, request_id: str, phase: str) -> dict[str, tuple[str, str]]:
    """node id -> (asked | ok | failed | timed-out, message)."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                "SELECT node_id, state, message FROM node_hooks WHERE request_id = ? AND phase = ?"
            ),
            (request_id, phase),
        )
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def declared(store: Store, node_ids: Sequence[str], phase: str) -> set[str]:
    """The nodes whose agents said they have hooks for `phase`."""
    out = set()
    with store.tx() as cur:
        for node_id in node_ids:
            cur.execute(
                store.q("SELECT hook_phases FROM node_reports WHERE node_id = ?"), (node_id,)
            )
            row = cur.fetchone()
            if row is not None and phase in json.loads(row[0] or "[]"):
                out.add(node_id)
    return out


def run_join_hooks(
    call: Callable[..., Any],
    request_id: str,
    phase: str,
    node_ids: Sequence[str],
    timeout: float,
    interrupted: Callable[[], bool],
) -> dict[str, str]:
    """Ask the nodes that have `phase` hooks to run them, wait for their answers.
    node id -> why it failed ('' passed); nodes without such hooks pass at once.
    `call(fn, *args)` runs fn(store, *args) (the join runner's way to the database)."""
    wanted = sorted(call(declared, list(node_ids), phase))
    out = {node_id: "" for node_id in node_ids}
    if not wanted:
        return out
    call(ask_hooks, wanted, request_id, phase)
    deadline = time.monotonic() + timeout
    while True:
        states = call(hook_states, request_id, phase)
        pending = [n for n in wanted if states.get(n, ("asked", ""))[0] == "asked"]
        if not pending or time.monotonic() > deadline or interrupted():
            break
        time.sleep(0.5)
    call(give_up_hooks, request_id, phase)
    for node_id in wanted:
        state, message = states.get(node_id, ("asked", ""))
        if state == "failed":
            out[node_id] = f"{phase} hook failed: {message}"
        elif state != "ok":
            out[node_id] = f"{phase} hooks: no answer from the node's agent within {timeout:g} s"
    return out


def give_up_hooks(store: Store, request_id: str, phase: str) -> None:
    """The job stops waiting: nodes that never answered stop being asked."""
    with store.tx() as cur:
        cur.execute(
            store.q(
                "UPDATE node_hooks SET state = 'timed-out', updated_at = ? "
                "WHERE request_id = ? AND phase = ? AND state = 'asked'"
            ),
            (time.time(), request_id, phase),
        )
