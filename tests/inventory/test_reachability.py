"""The reachability sweep when a whole fleet crosses the deadline at once (an outage that
ends, a network that comes back): every node flipped, one event each with its own state,
in batches rather than two statements a node, and one log line each way."""

from __future__ import annotations

import logging
import time

import pytest

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import service
from nodeagent.inventory.store import EVENT_BATCH, Store

S = ipb.NodeState
FLEET = 2 * EVENT_BATCH + 7  # three batches, the last a short one


def _fleet(store: Store, seen: float) -> list[str]:
    ids = [f"node-{n:05d}" for n in range(FLEET)]
    with store.tx() as cur:
        for n, node_id in enumerate(ids):
            cur.execute(
                store.q(
                    "INSERT INTO nodes (id, identity_key, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, 0, 0)"
                ),
                (node_id, f"key-{n}", S.JOINED if n % 2 else S.READY),
            )
    store.write_liveness([(node_id, seen, "READY") for node_id in ids])
    return ids


def _events(store: Store) -> list[tuple[str, int, int, str, str]]:
    with store.tx() as cur:
        cur.execute(
            "SELECT node_id, from_state, to_state, actor, reason FROM node_events ORDER BY seq"
        )
        return [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]


def test_a_whole_fleet_goes_and_comes_back(database: str) -> None:
    store = Store.open(database)
    try:
        now = time.time()
        ids = _fleet(store, now - 100)
        late = {i: (S.JOINED if n % 2 else S.READY) for n, i in enumerate(ids)}
        assert sorted(store.sweep_reachability(now - 50)) == [(i, False) for i in ids]
        gone = [(i, late[i], late[i], "system", "unreachable: missed heartbeats") for i in ids]
        assert sorted(_events(store)) == gone
        assert store.sweep_reachability(now - 50) == [], "flipped once"
        store.write_liveness([(i, now, "READY") for i in ids[:-1]])  # all but one come back
        back = store.sweep_reachability(now - 50)
        assert sorted(back) == [(i, True) for i in ids[:-1]]
        again = [(i, late[i], late[i], "system", "reachable again") for i in ids[:-1]]
        assert sorted(_events(store)[FLEET:]) == again
    finally:
        store.close()


def test_a_fleet_crossing_logs_one_line_each_way(caplog: pytest.LogCaptureFixture) -> None:
    many = [(f"n{k}", False) for k in range(service.LOGGED_NODES + 1)] + [("back", True)]
    with caplog.at_level(logging.INFO, logger=service.log.name):
        service.log_reachability(many)
    assert [r.getMessage() for r in caplog.records] == [
        f"{service.LOGGED_NODES + 1} nodes unreachable, among them n0, n1, n2, n3, n4",
        "node back reachable again",
    ]
