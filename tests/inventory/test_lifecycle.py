"""The one writer of node state: every edge of the table, refusals that write nothing, release.

Runs `lifecycle.transition` against a real store (SQLite and PostgreSQL), so what is
asserted is what a reader of the database sees: the state column, held_from and the
event log.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import lifecycle
from nodeagent.inventory.store import NotFound, Store

S = ipb.NodeState
LIVE = [s for s in S.values() if s != S.NODE_STATE_UNSPECIFIED]
# The transition table as docs/architecture.md draws it, written out here on purpose: a change to
# lifecycle.ALLOWED must be a change to this copy too (holding and retiring are separate).
EXPECTED = {
    S.ENROLLED: {S.DISCOVERED, S.FAILED, S.QUARANTINED},
    S.DISCOVERED: {S.TUNING, S.READY, S.QUARANTINED, S.FAILED, S.DISCOVERED},
    S.TUNING: {S.REBOOT_REQUIRED, S.READY, S.FAILED, S.QUARANTINED},
    S.REBOOT_REQUIRED: {S.TUNING, S.READY, S.FAILED},
    S.READY: {S.JOINING, S.TUNING, S.QUARANTINED, S.FAILED},
    S.JOINING: {S.JOINED, S.FAILED},
    S.JOINED: {S.QUARANTINED, S.FAILED},
    S.QUARANTINED: {S.DISCOVERED, S.FAILED},
    S.FAILED: {S.DISCOVERED, S.TUNING, S.READY},
    S.MAINTENANCE: set(),
    S.RETIRED: set(),
}
HOLDABLE = set(LIVE) - {S.MAINTENANCE, S.RETIRED}
PHASES = {
    "DISCOVERED": S.DISCOVERED,
    "TUNING": S.TUNING,
    "REBOOT_REQUIRED": S.REBOOT_REQUIRED,
    "READY": S.READY,
    "JOINED": S.JOINED,
    "FAILED": S.FAILED,
}


def test_the_table_is_the_designed_one() -> None:
    assert {k: set(v) for k, v in lifecycle.ALLOWED.items()} == EXPECTED
    assert lifecycle.HOLDABLE == HOLDABLE
    assert lifecycle.AGENT_PHASES == PHASES


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    st = Store.open(database)
    st.migrate_sync()
    yield st
    st.close()


def _node(store: Store, node_id: str, state: int, held_from: int = 0) -> None:
    with store.tx() as cur:
        cur.execute(
            store.q(
                "INSERT INTO nodes (id, identity_key, dmi_key, hw_ids, hostname, state, held_from, "
                "state_reason, pool, role, cluster, profile, labels, taints, gpu_model, "
                "gpu_count, inventory, inventory_hash, cert_not_after, created_at, updated_at) "
                "VALUES (?, ?, '', '[]', 'h', ?, ?, '', '', '', '', '', '{}', '[]', '', 0, '', "
                "'', 0, 0, 0)"
            ),
            (node_id, node_id, state, held_from),
        )


def _row(store: Store, node_id: str) -> tuple[int, int, str]:
    with store.tx() as cur:
        cur.execute(
            store.q("SELECT state, held_from, state_reason FROM nodes WHERE id = ?"), (node_id,)
        )
        state, held, reason = cur.fetchone()
    return state, held, reason


def _events(store: Store, node_id: str) -> list[tuple[str, int, int, str]]:
    return [(r[3], r[4], r[5], r[6]) for r in store.node_events(node_id, 100)]


def test_every_pair_of_states_is_allowed_exactly_when_the_table_says(store: Store) -> None:
    ids = itertools.count()
    for current, target in itertools.product(LIVE, LIVE):
        if current == S.MAINTENANCE and target != S.RETIRED:
            continue  # leaving a hold is a release: tested below
        node_id = f"n{next(ids)}"
        _node(store, node_id, current)
        expected = (
            current in HOLDABLE
            if target == S.MAINTENANCE
            else current != S.RETIRED
            if target == S.RETIRED
            else target in EXPECTED[current]
        )
        try:
            with store.tx() as cur:
                left = lifecycle.transition(store, cur, node_id, target, "admin:t", "why")
        except lifecycle.TransitionError:
            assert not expected, f"{S.Name(current)} -> {S.Name(target)} refused"
            assert _row(store, node_id)[0] == current
            assert _events(store, node_id) == []
            continue
        assert expected, f"{S.Name(current)} -> {S.Name(target)} must be refused"
        assert left == current
        state, held, reason = _row(store, node_id)
        assert (state, reason) == (target, "why")
        # a hold and a quarantine remember where they came from (release goes back there)
        assert held == (current if target in (S.MAINTENANCE, S.QUARANTINED) else 0)
        assert _events(store, node_id) == [("admin:t", current, target, "why")]


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.JOINED, S.READY),
        (S.DISCOVERED, S.JOINED),
        (S.ENROLLED, S.READY),
        (S.JOINING, S.READY),
        (S.RETIRED, S.DISCOVERED),
        (S.RETIRED, S.RETIRED),
    ],
)
def test_illegal_edges_are_refused_with_their_names(
    store: Store, current: int, target: int
) -> None:
    _node(store, "x", current)
    with pytest.raises(lifecycle.TransitionError, match=S.Name(current)), store.tx() as cur:
        lifecycle.transition(store, cur, "x", target, "admin:t", "no")
    assert _row(store, "x")[0] == current


def test_a_held_node_moves_only_by_release_and_only_back(store: Store) -> None:
    _node(store, "h", S.READY)
    with store.tx() as cur:
        lifecycle.transition(store, cur, "h", S.MAINTENANCE, "admin:a", "hold")
    assert _row(store, "h")[:2] == (S.MAINTENANCE, S.READY)
    for target in (S.READY, S.JOINING, S.DISCOVERED):  # not a release: refused
        with pytest.raises(lifecycle.TransitionError), store.tx() as cur:
            lifecycle.transition(store, cur, "h", target, "system:join/j", "x")
    with store.tx() as cur:
        assert lifecycle.release_target(store, cur, "h") == S.READY
        with pytest.raises(lifecycle.TransitionError, match="back to READY"):
            lifecycle.transition(store, cur, "h", S.DISCOVERED, "admin:a", "x", release=True)
        lifecycle.transition(store, cur, "h", S.READY, "admin:a", "done", release=True)
    assert _row(store, "h") == (S.READY, 0, "done")
    assert [e[1:3] for e in _events(store, "h")] == [
        (S.READY, S.MAINTENANCE),
        (S.MAINTENANCE, S.READY),
    ]
    with pytest.raises(lifecycle.TransitionError, match="not held"), store.tx() as cur:
        lifecycle.release_target(store, cur, "h")


def test_unchanged_ok_writes_nothing_and_missing_nodes_are_not_found(store: Store) -> None:
    _node(store, "j", S.JOINING)
    with store.tx() as cur:
        assert (
            lifecycle.transition(
                store, cur, "j", S.JOINING, "system:join/j", "again", unchanged_ok=True
            )
            == S.JOINING
        )
    assert _events(store, "j") == []
    with pytest.raises(NotFound), store.tx() as cur:
        lifecycle.transition(store, cur, "gone", S.READY, "admin:a", "x")


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_an_agent_phase_moves_only_along_allowed_edges(phase: str) -> None:
    target = PHASES[phase]
    for current in LIVE:
        got = lifecycle.from_agent_phase(current, phase)
        if current in (S.MAINTENANCE, S.RETIRED) or current == target:
            assert got is None
        elif current == S.QUARANTINED:  # only a release ends a quarantine; FAILED is news
            assert got == (S.FAILED if target == S.FAILED else None)
        else:
            assert got == (target if target in EXPECTED[current] else None)
    # an agent cannot quarantine, hold, retire or enrol itself, nor name a state it made up
    for asked in ("QUARANTINED", "MAINTENANCE", "RETIRED", "ENROLLED", "JOINING", "bogus", ""):
        assert all(lifecycle.from_agent_phase(current, asked) is None for current in LIVE)


def test_the_refusals_say_what_is_wrong() -> None:
    cases = [
        (S.RETIRED, S.MAINTENANCE, "cannot hold a node that is RETIRED"),
        (S.MAINTENANCE, S.MAINTENANCE, "cannot hold a node that is MAINTENANCE"),
        (S.RETIRED, S.RETIRED, "node is already RETIRED"),
        (S.JOINED, S.READY, "illegal transition JOINED -> READY"),
        (S.NODE_STATE_UNSPECIFIED, S.READY, "illegal transition NODE_STATE_UNSPECIFIED -> READY"),
    ]
    for current, target, message in cases:
        with pytest.raises(lifecycle.TransitionError) as err:
            lifecycle.check(current, target)
        assert str(err.value) == message
    # a state outside the table moves nowhere, and an agent cannot move it either
    assert lifecycle.from_agent_phase(S.NODE_STATE_UNSPECIFIED, "READY") is None


def test_long_reasons_are_cut_and_missing_nodes_named(store: Store) -> None:
    _node(store, "r", S.DISCOVERED)
    with store.tx() as cur:
        lifecycle.transition(store, cur, "r", S.READY, "admin:a", "x" * 1500)
    assert _row(store, "r")[2] == "x" * 1000
    with pytest.raises(NotFound, match="gone"), store.tx() as cur:
        lifecycle.transition(store, cur, "gone", S.READY, "admin:a", "x")
    with pytest.raises(NotFound, match="gone"), store.tx() as cur:
        lifecycle.release_target(store, cur, "gone")
    _node(store, "h", S.MAINTENANCE, held_from=S.JOINED)
    with store.tx() as cur:
        assert lifecycle.release_target(store, cur, "h") == S.JOINED
    _node(store, "h0", S.MAINTENANCE, held_from=0)
    with store.tx() as cur:
        assert lifecycle.release_target(store, cur, "h0") == S.DISCOVERED
    with (
        pytest.raises(lifecycle.TransitionError, match="node is READY, not held"),
        store.tx() as cur,
    ):
        lifecycle.release_target(store, cur, "r")


@pytest.mark.parametrize(
    ("before", "back"), [(S.JOINED, S.JOINED), (S.READY, S.DISCOVERED), (S.TUNING, S.DISCOVERED)]
)
def test_release_of_a_quarantined_node_goes_back_to_joined_or_discovered(
    store: Store, before: int, back: int
) -> None:
    _node(store, "q", before)
    with store.tx() as cur:
        lifecycle.transition(store, cur, "q", S.QUARANTINED, "system:health", "xid: XID 79")
    assert _row(store, "q") == (S.QUARANTINED, before, "xid: XID 79")
    with store.tx() as cur:
        assert lifecycle.release_target(store, cur, "q") == back
        with pytest.raises(lifecycle.TransitionError, match="goes back to"):
            lifecycle.transition(
                store,
                cur,
                "q",
                S.FAILED if back != S.FAILED else S.READY,
                "admin:a",
                "r",
                release=True,
            )
    with store.tx() as cur:
        lifecycle.transition(store, cur, "q", back, "admin:a", "released", release=True)
    assert _row(store, "q") == (back, 0, "released")
