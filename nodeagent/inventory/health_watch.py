"""The health policy applied to heartbeats: the service's side of health.py.

A heartbeat costs no transaction unless the verdict changes something: the streaks
(hysteresis) and each node's hardware mismatches are kept in memory, per replica (an
agent keeps its channel to one replica, and a replica that restarts starts counting again,
which only delays an automatic release). Mismatches are worked out again only when the
node's inventory or profile changes. Quarantine and release go through nodes.py and the
lifecycle, idempotently, so two replicas judging the same node write one move.

Drift (settings that differ from the node's profile, as the agent's periodic verify
counts them) is an event and a metric, never a state: the count is stored when it
changes, with an event only when the node starts or stops drifting, so an agent that
finds 3 settings and then 4 adds no second event. What each node last reported is kept
in memory, seeded from the database at the first heartbeat, so a node that stays as it
was costs no transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import health, kube_state, nodes
from nodeagent.inventory.catalogue import ProfileCatalogue, UnknownProfile
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.store import Store
from nodeagent.tuning import hardware_check

log = logging.getLogger("nodeagent.inventory.health")
ACTOR = "system:health"


def policy(config: InventoryConfig) -> health.Policy:
    return health.Policy(
        fatal_xids=tuple(config.health_fatal_xids),
        rails_limit=config.health_rails_limit,
        quarantine_after=config.health_quarantine_after,
        release_after=config.health_release_after,
        auto_release=tuple(config.health_auto_release),
        hardware_mismatch=config.health_hardware_mismatch,
    )


DRIFTED_SQL = "SELECT id, drift_count FROM nodes WHERE drift_count > 0"  # index nodes_drifting


def drifted_nodes(store: Store) -> dict[str, int]:
    """The nodes whose last report counted drift, and how much (the others counted 0)."""
    with store.tx() as cur:
        cur.execute(DRIFTED_SQL)
        return {str(node_id): int(count) for node_id, count in cur.fetchall()}


def record_drift(store: Store, node_id: str, count: int) -> bool:
    """Store the node's drift count; an event when it starts (0 to more) or stops drifting.
    Idempotent, so two replicas told the same count write one event. True when it wrote
    an event."""
    with store.tx() as cur:
        cur.execute(store.q("SELECT state, drift_count FROM nodes WHERE id = ?"), (node_id,))
        row = cur.fetchone()
        if row is None or int(row[1]) == count:
            return False
        state, before = int(row[0]), int(row[1])
        cur.execute(store.q("UPDATE nodes SET drift_count = ? WHERE id = ?"), (count, node_id))
        if (before == 0) == (count == 0):
            return False
        what = (
            f"tuning drift: {count} setting(s) differ from the profile"
            if count
            else "tuning drift cleared: the node matches its profile again"
        )
        store.add_event(cur, node_id, ACTOR, state, state, what)
        return True


class HealthWatch:
    def __init__(self, store: Store, config: InventoryConfig, profiles: ProfileCatalogue):
        self.store = store
        self.policy = policy(config)
        self.profiles = profiles
        self.streaks: dict[str, health.Streak] = {}
        self.mismatches: dict[str, tuple[str, str, list[str]]] = {}
        self.devices: dict[str, bool] = {}
        self.drift: dict[str, int] | None = None  # node -> last drift count; None: not read
        self._drift_read = asyncio.Lock()  # the first heartbeats of a fleet read it once

    def _mismatches(self, node: ipb.Node, inv: pb.HardwareInventory | None) -> list[str] | None:
        """The node's mismatches against its profile; None when they must be read from the
        stored inventory first (not known for this inventory and profile)."""
        profile = node.assignment.profile
        if not profile:
            return []
        known = self.mismatches.get(node.id)
        if known is not None and known[:2] == (node.inventory_hash, profile):
            return known[2]
        if inv is None:
            return None
        try:
            exp = self.profiles.get(profile).expected_hardware
        except UnknownProfile:
            found: list[str] = []
        else:
            found = [m.reason for m in hardware_check.expected_hardware(exp, inv)]
        self.mismatches[node.id] = (node.inventory_hash, profile, found)
        return found

    async def _drift(self, node_id: str, count: int) -> None:
        if self.drift is None:
            # one read, however many nodes beat before it returns: a fleet's first beats
            # after a start each made their own, and on SQLite those queued one behind
            # another (51 reads, 1.1 s, at 10,000 nodes: issue 20)
            async with self._drift_read:
                if self.drift is None:
                    self.drift = await self.store.run(drifted_nodes, self.store)
        if self.drift.get(node_id, 0) == count:
            return
        if await self.store.run(record_drift, self.store, node_id, count):
            log.info("node %s: tuning drift %s", node_id, count or "cleared")
        if count:
            self.drift[node_id] = count
        else:
            self.drift.pop(node_id, None)

    def repeat(self, node: ipb.Node, req: ipb.HeartbeatRequest) -> bool:
        """A beat that repeats the node's last, which on_heartbeat judged (state alone,
        heartbeat.py, so its drift count and devices are stored already): its streak steps
        on when the verdict is nothing, as on_heartbeat would; False, with nothing changed,
        when on_heartbeat must judge it (the verdict moves the node)."""
        found = self._mismatches(node, None)
        if found is None:  # known since that beat (same inventory and profile): never
            return False
        streak = self.streaks.get(node.id)
        if health.at_rest(node.state, req, found, self.policy):  # evaluate's answer, cheaply
            self.streaks[node.id] = health.Streak(0, streak.good + 1 if streak else 1)
            return True
        streak = streak or health.Streak()
        verdict, after = health.evaluate(
            node.state, node.state_reason, health.signals(req), found, self.policy, streak
        )
        if verdict.quarantine or verdict.release:
            return False
        self.streaks[node.id] = after
        return True

    async def on_heartbeat(
        self, node: ipb.Node, req: ipb.HeartbeatRequest, inv: pb.HardwareInventory | None
    ) -> ipb.Node | None:
        """Apply the policy to one heartbeat; the node's new record when it moved."""
        if req.devices_set and self.devices.get(node.id) != req.devices_ok:
            await self.store.run(kube_state.set_devices, self.store, node.id, req.devices_ok)
            self.devices[node.id] = req.devices_ok
        await self._drift(node.id, req.drift_count)
        found = self._mismatches(node, inv)
        if found is None:
            full = await self.store.run(nodes.get_node, self.store, node.id, 0, 0.0)
            found = self._mismatches(node, full.inventory) or []
        streak = self.streaks.get(node.id, health.Streak())
        verdict, self.streaks[node.id] = health.evaluate(
            node.state, node.state_reason, health.signals(req), found, self.policy, streak
        )
        moved: Any = None
        if verdict.quarantine:
            moved = await self.store.run(
                nodes.quarantine, self.store, node.id, ACTOR, verdict.quarantine
            )
            log.warning("node %s quarantined: %s", node.id, verdict.quarantine)
        elif verdict.release:
            moved = await self.store.run(nodes.release, self.store, node.id, ACTOR, verdict.release)
            log.info("node %s released: %s", node.id, verdict.release)
        return moved if isinstance(moved, ipb.Node) else None
