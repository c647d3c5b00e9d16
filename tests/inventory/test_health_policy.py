"""The health policy (issue 16): health.evaluate rule by rule, then through a live inventory
whose enrolled nodes send the heartbeats an agent would (hardware that no longer matches
the profile, rails that flap, conditions that clear), and the Kubernetes side's bad input:
an API server that cannot be reached, a kubeconfig without rights, a Node registered under
another name. Kubernetes is testbed/kubeapi.py's double, reached over real joins (SSH
hosts in network namespaces, the Kubespray stand-in).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import health, health_watch, nodes
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.metrics import FleetGauges, InventoryCollector
from nodeagent.inventory.stats import ServiceStats
from nodeagent.inventory.store import Store
from testbed.kubeapi import KubeApiDouble
from testbed.variants import variant
from testbed.wait import wait_for
from tests.inventory import sshhosts
from tests.inventory.conftest import Client, EnrolledNode, ServiceThread, enrol
from tests.inventory.test_join import finished
from tests.inventory.test_node_life import QUICK, make_cluster

S = ipb.NodeState
NAME = "gpu-00001"
JOINED = health.S.JOINED
RAILS = "rails: 1 rail(s) down, 0 degraded (more than 0) for 3 heartbeats"
VALIDATING = {"key": "nodeagent.io/validating", "value": "true", "effect": "NoSchedule"}

# --- health.evaluate ------------------------------------------------------------------------


def judge(
    sig: health.Signals,
    mismatches: list[str] | None = None,
    state: int = JOINED,
    reason: str = "",
    policy: health.Policy | None = None,
    streak: health.Streak | None = None,
) -> tuple[health.Verdict, health.Streak]:
    return health.evaluate(
        state, reason, sig, mismatches or [], policy or health.Policy(), streak or health.Streak()
    )


def test_fatal_xids_and_row_remap_failures_quarantine_at_once() -> None:
    v, after = judge(health.Signals(xids=[("3", 79, 1)]))
    assert v == health.Verdict(quarantine="xid: XID 79 (GPU has fallen off the bus) on GPU 3")
    assert after == health.Streak(bad=0, good=0)
    v, _ = judge(health.Signals(xids=[("1", 48, 2), ("5", 13, 4)], row_remap_failure=True))
    assert v.quarantine == "xid: XID 48 (double-bit ECC error) on GPU 1; row remapping failed"
    v, _ = judge(health.Signals(row_remap_failure=True))
    assert v == health.Verdict(quarantine="xid: row remapping failed")
    # every class of the catalogue is fatal by default, named
    for code, name in health.XID_NAMES.items():
        v, _ = judge(health.Signals(xids=[("0", code, 1)]))
        assert v.quarantine == f"xid: XID {code} ({name}) on GPU 0"
    assert health.FATAL_XIDS == (48, 63, 64, 74, 79, 94, 95, 119, 120)


def test_xids_the_policy_does_not_name_or_that_did_not_happen_are_clean() -> None:
    v, after = judge(health.Signals(xids=[("0", 13, 9), ("2", 79, 0)]), streak=health.Streak(0, 4))
    assert v == health.Verdict() and after == health.Streak(bad=0, good=5)
    policy = health.Policy(fatal_xids=(31,))
    v, _ = judge(health.Signals(xids=[("7", 31, 1), ("0", 79, 1)]), policy=policy)
    assert v.quarantine == "xid: XID 31 (fatal) on GPU 7"


def test_a_hardware_mismatch_quarantines_at_once_and_comes_first() -> None:
    sig = health.Signals(xids=[("3", 79, 1)], rails_down=2)
    v, after = judge(sig, ["7 of 8 GPUs", "9 of 10 NVMe"])
    assert v == health.Verdict(quarantine="hardware: 7 of 8 GPUs; 9 of 10 NVMe")
    assert after == health.Streak(bad=1, good=0)
    off = health.Policy(hardware_mismatch=False)
    v, after = judge(health.Signals(), ["7 of 8 GPUs"], policy=off)
    assert v == health.Verdict() and after == health.Streak(bad=0, good=1)


def test_rails_quarantine_after_a_streak_above_the_limit() -> None:
    sig, streak = health.Signals(rails_down=1), health.Streak()
    for n in (1, 2):
        v, streak = judge(sig, streak=streak)
        assert v == health.Verdict() and streak == health.Streak(bad=n, good=0)
    v, streak = judge(sig, streak=streak)
    assert v == health.Verdict(quarantine=RAILS) and streak == health.Streak(bad=3, good=0)
    # a limit: down and degraded add up, and only more than the limit is bad
    policy = health.Policy(rails_limit=2, quarantine_after=1)
    v, after = judge(health.Signals(rails_down=1, rails_degraded=1), policy=policy)
    assert v == health.Verdict() and after == health.Streak(bad=0, good=1)
    v, _ = judge(health.Signals(rails_down=2, rails_degraded=1), policy=policy)
    assert v.quarantine == "rails: 2 rail(s) down, 1 degraded (more than 2) for 1 heartbeats"


def test_one_good_heartbeat_restarts_the_rails_count() -> None:
    streak = health.Streak()
    for sig in ([health.Signals(rails_degraded=1)] * 2 + [health.Signals()]) * 5:
        v, streak = judge(sig, streak=streak)
        assert v == health.Verdict()
    assert streak == health.Streak(bad=0, good=1)


@pytest.mark.parametrize("state", [S.JOINING, S.FAILED, S.MAINTENANCE, S.RETIRED, S.QUARANTINED])
def test_only_serving_states_are_quarantined(state: int) -> None:
    v, after = judge(health.Signals(xids=[("0", 79, 1)]), ["7 of 8 GPUs"], state=state)
    assert v == health.Verdict() and after == health.Streak(bad=0, good=0)
    assert health.QUARANTINABLE == (S.DISCOVERED, S.TUNING, S.READY, S.JOINED)


def test_release_after_n_clear_heartbeats_for_the_kinds_the_policy_allows() -> None:
    policy = health.Policy(release_after=3)
    streak = health.Streak()
    for n in (1, 2):
        v, streak = judge(
            health.Signals(), state=S.QUARANTINED, reason=RAILS, policy=policy, streak=streak
        )
        assert v == health.Verdict() and streak.good == n
    v, streak = judge(
        health.Signals(), state=S.QUARANTINED, reason=RAILS, policy=policy, streak=streak
    )
    assert v == health.Verdict(release=f"clear for 3 heartbeats: {RAILS}")
    # xid and manual quarantines stay by default, however long the node is clear
    for reason in ("xid: row remapping failed", "manual: fan", "hardware: 7 of 8 GPUs", "x"):
        v, _ = judge(
            health.Signals(),
            state=S.QUARANTINED,
            reason=reason,
            policy=policy,
            streak=health.Streak(good=100),
        )
        assert v == health.Verdict()
    allow = health.Policy(release_after=1, auto_release=("xid",))
    v, _ = judge(health.Signals(), state=S.QUARANTINED, reason="xid: x", policy=allow)
    assert v == health.Verdict(release="clear for 1 heartbeats: xid: x")
    # a node that is not clear resets the count
    v, after = judge(
        health.Signals(rails_down=1),
        state=S.QUARANTINED,
        reason=RAILS,
        policy=policy,
        streak=health.Streak(bad=0, good=2),
    )
    assert v == health.Verdict() and after == health.Streak(bad=1, good=0)
    v, after = judge(
        health.Signals(),
        ["7 of 8 GPUs"],
        state=S.QUARANTINED,
        reason=RAILS,
        policy=policy,
        streak=health.Streak(good=2),
    )
    assert v == health.Verdict() and after == health.Streak(bad=0, good=0)


def test_kinds_slugs_signals_and_the_configured_policy() -> None:
    assert [health.kind_of(r) for r in ("hardware: a", " xid :b", "rails: c", "manual: d")] == [
        "hardware",
        "xid",
        "rails",
        "manual",
    ]
    assert health.kind_of("GPU reseated") == "" and health.kind_of("other: x") == ""
    assert health.slug("xid: XID 79 (GPU has fallen off the bus) on GPU 3") == (
        "xid-xid-79-gpu-has-fallen-off-the-bus-on-gpu-3"
    )
    long = health.slug("hardware: " + "rail mlx5_10/1 at 200 Gb/s; " * 5)
    assert long == "hardware-rail-mlx5-10-1-at-200-gb-s-rail-mlx5-10-1-at-200-gb-s"
    assert len(long) <= 63 and health.slug("!!") == "quarantined"
    req = ipb.HeartbeatRequest(
        xids=[ipb.XidCount(gpu="2", code=94, count=3)],
        row_remap_failure=True,
        rails_down=1,
        rails_degraded=2,
    )
    assert health.signals(req) == health.Signals([("2", 94, 3)], True, 1, 2)
    cfg = InventoryConfig(
        health_fatal_xids=[79],
        health_rails_limit=1,
        health_quarantine_after=4,
        health_release_after=5,
        health_auto_release=["rails", "xid"],
        health_hardware_mismatch=False,
    )
    assert health_watch.policy(cfg) == health.Policy((79,), 1, 4, 5, ("rails", "xid"), False)
    assert health_watch.policy(InventoryConfig()) == health.Policy()


def test_at_rest_is_exactly_where_evaluate_finds_nothing_whatever_the_streak() -> None:
    """The repeat path's shortcut: wherever at_rest holds, evaluate says nothing and counts
    one more clean beat, for any streak; each thing that can move a node turns it off."""
    quiet = ipb.HeartbeatRequest()
    beats = {
        "quiet": quiet,
        "xid": ipb.HeartbeatRequest(xids=[ipb.XidCount(gpu="0", code=79, count=1)]),
        "remap": ipb.HeartbeatRequest(row_remap_failure=True),
        "rail down": ipb.HeartbeatRequest(rails_down=1),
        "rail degraded": ipb.HeartbeatRequest(rails_degraded=1),
    }
    policies = [health.Policy(), health.Policy(rails_limit=1, hardware_mismatch=False)]
    rest = 0
    for state in (S.DISCOVERED, S.READY, JOINED, S.QUARANTINED, S.RETIRED):
        for name, req in beats.items():
            for found in ([], ["rail mlx5_0 missing"]):
                for policy in policies:
                    if not health.at_rest(state, req, found, policy):
                        continue
                    rest += 1
                    for streak in (health.Streak(), health.Streak(2, 9), health.Streak(0, 40)):
                        got = health.evaluate(
                            state, RAILS, health.signals(req), found, policy, streak
                        )
                        assert got == (health.Verdict(), health.Streak(0, streak.good + 1)), (
                            state,
                            name,
                            found,
                            policy,
                        )
    # in each state but QUARANTINED: the quiet beat with no mismatch under either policy;
    # under the second, with the mismatch it ignores, and each rail beat (within its limit)
    assert rest == 4 * (1 + 6)
    assert health.at_rest(JOINED, quiet, [], health.Policy())
    assert not health.at_rest(S.QUARANTINED, quiet, [], health.Policy())
    assert not health.at_rest(JOINED, beats["xid"], [], health.Policy(fatal_xids=()))
    assert not health.at_rest(JOINED, beats["remap"], [], health.Policy())
    assert not health.at_rest(JOINED, beats["rail down"], [], health.Policy())
    assert not health.at_rest(JOINED, beats["rail degraded"], [], health.Policy())
    assert not health.at_rest(JOINED, quiet, ["gone"], health.Policy())


# --- through a live inventory ---------------------------------------------------------------


def node_state(admin: Client, node_id: str) -> tuple[int, str]:
    n = admin.GetNode(ipb.GetNodeRequest(node_id=node_id))
    return int(n.state), n.state_reason


def events(admin: Client, node_id: str) -> list[ipb.NodeEvent]:
    return list(admin.GetNode(ipb.GetNodeRequest(node_id=node_id, events=500)).events)


def ready_node(
    svc: ServiceThread, admin: Client, inv: pb.HardwareInventory, profile: str = "hgx-h100"
) -> EnrolledNode:
    node = enrol(svc, admin, inv)
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(profile=profile), fields=["profile"]
        )
    )
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    assert node_state(admin, node.id) == (S.READY, "agent reports READY")
    return node


def broken(inv: pb.HardwareInventory, what: str) -> pb.HardwareInventory:
    out = pb.HardwareInventory()
    out.CopyFrom(inv)
    if what == "gpu":
        del out.gpus[7]
    elif what == "rail":
        out.rdma_devices[0].ports[0].rate_gbps = 200
    else:
        del out.nvme_controllers[9]
    return out


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("gpu", "hardware: 7 of 8 GPUs; 7 of 8 compute rails"),
        ("rail", "hardware: rail mlx5_0/1 at 200 Gb/s"),
        ("nvme", "hardware: 9 of 10 NVMe"),
    ],
)
def test_a_hardware_mismatch_against_the_profile_quarantines_the_node(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
    what: str,
    reason: str,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    good = variant(dgx_inventory, 1)
    node = ready_node(svc, admin, good)
    beat = node.client.Heartbeat
    for _ in range(3):  # the inventory matches the profile: nothing happens
        assert beat(ipb.HeartbeatRequest(node_id=node.id, phase="READY")).state == S.READY
    # the agent's next discovery finds the hardware changed and sends it
    resp = beat(
        ipb.HeartbeatRequest(
            node_id=node.id, phase="READY", inventory=broken(good, what), inventory_hash="h2"
        )
    )
    assert resp.state == S.QUARANTINED
    assert node_state(admin, node.id) == (S.QUARANTINED, reason)
    moved = [e for e in events(admin, node.id) if e.to_state == S.QUARANTINED]
    assert [(e.from_state, e.actor, e.reason) for e in moved] == [
        (S.READY, "system:health", reason)
    ]
    # fixed hardware does not end a hardware quarantine by default: an admin releases
    for _ in range(12):
        beat(
            ipb.HeartbeatRequest(
                node_id=node.id, phase="READY", inventory=good, inventory_hash="h3"
            )
        )
    assert node_state(admin, node.id) == (S.QUARANTINED, reason)
    released = admin.ReleaseNode(ipb.NodeActionRequest(node_id=node.id, reason="GPU reseated"))
    # back to DISCOVERED, for the agent to report READY again once its checks pass
    assert (released.state, released.state_reason) == (S.DISCOVERED, "GPU reseated")
    assert beat(ipb.HeartbeatRequest(node_id=node.id, phase="READY")).state == S.READY


def test_auto_release_after_n_clear_heartbeats_where_the_policy_allows_it(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(database, health_release_after=4, health_auto_release=["rails"])
    admin = svc.admin()
    rails = ready_node(svc, admin, variant(dgx_inventory, 1))
    xid = ready_node(svc, admin, variant(dgx_inventory, 2))

    def beat(node: EnrolledNode, **kw: Any) -> int:
        req = ipb.HeartbeatRequest(node_id=node.id, phase="READY", **kw)
        return int(node.client.Heartbeat(req).state)

    assert [beat(rails, rails_down=1) for _ in range(3)] == [S.READY, S.READY, S.QUARANTINED]
    assert node_state(admin, rails.id) == (S.QUARANTINED, RAILS)
    assert beat(xid, row_remap_failure=True) == S.QUARANTINED
    # three clear heartbeats, a bad one, then four clear: released on the fourth
    assert [beat(rails) for _ in range(3)] == [S.QUARANTINED] * 3
    assert beat(rails, rails_degraded=1) == S.QUARANTINED
    assert [beat(rails) for _ in range(4)] == [S.QUARANTINED] * 3 + [S.DISCOVERED]
    assert node_state(admin, rails.id) == (S.DISCOVERED, f"clear for 4 heartbeats: {RAILS}")
    last = events(admin, rails.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == (
        S.QUARANTINED,
        S.DISCOVERED,
        "system:health",
    )
    assert beat(rails) == S.READY  # the agent's phase, legal again
    # an XID quarantine is not the policy's to end
    assert [beat(xid) for _ in range(12)] == [S.QUARANTINED] * 12
    assert node_state(admin, xid.id) == (S.QUARANTINED, "xid: row remapping failed")


def test_no_auto_release_where_the_policy_does_not_allow_it(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(
        f"sqlite:///{scratch / 'inv.db'}", health_release_after=2, health_auto_release=[]
    )
    admin = svc.admin()
    node = ready_node(svc, admin, variant(dgx_inventory, 1))
    req = ipb.HeartbeatRequest(node_id=node.id, phase="READY", rails_down=1)
    for _ in range(3):
        node.client.Heartbeat(req)
    clear = ipb.HeartbeatRequest(node_id=node.id, phase="READY")
    assert [node.client.Heartbeat(clear).state for _ in range(10)] == [S.QUARANTINED] * 10
    assert node_state(admin, node.id) == (S.QUARANTINED, RAILS)


def test_drift_is_an_event_when_it_starts_and_stops_and_a_gauge(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(pool="train"), fields=["pool"]
        )
    )

    def beat(drift: int) -> None:
        node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="", drift_count=drift))

    def drift_events() -> list[tuple[int, int, str, str]]:
        return [
            (e.from_state, e.to_state, e.actor, e.reason)
            for e in events(admin, node.id)
            if "drift" in e.reason
        ]

    def gauge() -> dict[tuple[str, ...], float]:
        fleet = FleetGauges(svc.svc.store, lambda: 0.0, 60)
        svc._do(fleet.refresh())
        collector = InventoryCollector("v", ServiceStats(), fleet, 0.0, 0.0)
        family = next(
            m for m in collector.collect() if m.name == "nodeagent_inventory_nodes_drifted"
        )
        return {tuple(s.labels.values()): s.value for s in family.samples}

    for count in (0, 0, 3, 4, 4):
        beat(count)
    d = S.DISCOVERED
    started = (d, d, "system:health", "tuning drift: 3 setting(s) differ from the profile")
    assert drift_events() == [started]
    assert gauge() == {("train", ""): 1.0}
    for count in (0, 0):
        beat(count)
    cleared = (d, d, "system:health", "tuning drift cleared: the node matches its profile again")
    assert drift_events() == [started, cleared]
    assert gauge() == {}
    beat(1)
    assert len(drift_events()) == 3 and gauge() == {("train", ""): 1.0}
    # another replica (or this one restarted) reads the count from the database, and
    # writes an event only where drifting starts or stops
    store = svc.svc.store

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return svc._do(store.run(fn, store, *args))

    assert run(health_watch.drifted_nodes) == {node.id: 1}
    assert run(health_watch.record_drift, node.id, 1) is False
    assert run(health_watch.record_drift, node.id, 5) is False  # still drifting
    assert run(health_watch.drifted_nodes) == {node.id: 5}
    assert run(health_watch.record_drift, node.id, 0) is True
    assert len(drift_events()) == 4 and run(health_watch.drifted_nodes) == {}
    assert run(health_watch.record_drift, "no-such-node", 3) is False


def test_a_fleets_first_heartbeats_read_the_drift_counts_once(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    """After a start, every node's first beat needs the drift counts; read once, not once
    per node queued on the database (on SQLite, 51 reads in a row held 10,000 nodes' first
    beats for a second)."""
    svc = service_factory(database)
    store = svc.svc.store
    node = enrol(svc, svc.admin(), variant(dgx_inventory, 1))
    svc._do(store.run(health_watch.record_drift, store, node.id, 2))
    watch = health_watch.HealthWatch(store, svc.config, svc.svc.profiles)
    cached = svc._do(store.run(nodes.get_node, store, node.id, 0, 0.0))
    reads: list[str] = []
    real = store.run

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        reads.append(getattr(fn, "__name__", ""))
        return await real(fn, *args)

    async def first_beats() -> list[Any]:
        beats = [
            watch.on_heartbeat(cached, ipb.HeartbeatRequest(node_id=node.id, drift_count=2), None)
            for _ in range(20)
        ]
        return await asyncio.gather(*beats)

    store.run = counted  # type: ignore[method-assign]
    try:
        assert svc._do(first_beats()) == [None] * 20
    finally:
        store.run = real  # type: ignore[method-assign]
    assert reads == ["drifted_nodes"], "one read, and the count it found needs no write"
    assert watch.drift == {node.id: 2}


def test_the_drift_read_walks_an_index_not_the_fleet(scratch: Path) -> None:
    """SQLite reads a row's columns in order: a scan for drift_count (added after the
    inventory) reads every node's inventory, 328 MB at 10,000 nodes."""
    store = Store.open(f"sqlite:///{scratch / 'plan.db'}")
    try:
        with store.tx() as cur:
            cur.execute(f"EXPLAIN QUERY PLAN {health_watch.DRIFTED_SQL}")
            plan = " ".join(str(row[-1]) for row in cur.fetchall())
    finally:
        store.close()
    assert "USING INDEX nodes_drifting" in plan, plan


def test_the_new_rpcs_by_role_and_a_kubeconfig_never_shown(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}")
    admin = svc.admin()
    node = enrol(svc, admin, variant(dgx_inventory, 1))
    viewer, operator = svc.admin("viewer", "vic"), svc.admin("operator", "olga")
    for call in (
        lambda: viewer.QuarantineNode(ipb.NodeActionRequest(node_id=node.id, reason="x")),
        lambda: node.client.QuarantineNode(ipb.NodeActionRequest(node_id=node.id, reason="x")),
        lambda: operator.SetKubeconfig(ipb.SetKubeconfigRequest(cluster="c", kubeconfig="x")),
        lambda: node.client.ExportGpuOperator(ipb.ExportGpuOperatorRequest(cluster="c")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        operator.QuarantineNode(ipb.NodeActionRequest(node_id=node.id, reason="  "))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "a quarantine needs a reason (--reason TEXT)"
    moved = operator.QuarantineNode(ipb.NodeActionRequest(node_id=node.id, reason="fan noise"))
    assert (moved.state, moved.state_reason) == (S.QUARANTINED, "manual: fan noise")
    with pytest.raises(grpc.RpcError) as err:
        admin.SetKubeconfig(ipb.SetKubeconfigRequest(cluster="c", kubeconfig="x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "kubeconfig is not a mapping"
    good = (
        "clusters: [{name: k, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "contexts: [{name: k, context: {cluster: k, user: u}}]\ncurrent-context: k\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    with pytest.raises(grpc.RpcError) as err:
        admin.SetKubeconfig(ipb.SetKubeconfigRequest(cluster="c", kubeconfig=good))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# --- Kubernetes: flapping and bad input, over real joins ------------------------------------


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshhosts.SshHosts]:
    why = sshhosts.available()
    if why:
        pytest.fail(f"health policy tests: {why}")
    h = sshhosts.SshHosts(tmp_path_factory.mktemp("ssh"), ["cp1", NAME]).start()
    yield h
    h.close()


@pytest.fixture
def kubeapi() -> Iterator[KubeApiDouble]:
    double = KubeApiDouble().start()
    yield double
    double.close()


def join(
    svc: ServiceThread,
    hosts: sshhosts.SshHosts,
    scratch: Path,
    kubeconfig: str,
    inv: pb.HardwareInventory,
) -> tuple[Client, EnrolledNode]:
    """A node enrolled, READY and joined by a real job whose Kubespray stand-in leaves
    `kubeconfig` as admin.conf (the cluster's kubeconfig from then on)."""
    hosts.reset()
    admin = svc.admin()
    conf = scratch / "admin.conf"
    conf.write_text(kubeconfig)
    make_cluster(admin, hosts, scratch, conf)
    node = enrol(svc, admin, inv)
    node.client.Heartbeat(ipb.HeartbeatRequest(node_id=node.id, phase="READY"))
    admin.UpdateAssignment(
        ipb.UpdateAssignmentRequest(
            node_id=node.id, assignment=ipb.Assignment(cluster="prod"), fields=["cluster"]
        )
    )
    admin.SetNodeAddress(ipb.NodeAddress(node_id=node.id, ip=hosts.addresses[NAME]))
    job = admin.StartJoin(ipb.StartJoinRequest(cluster="prod"))
    done = finished(admin, job.id)
    assert done.state == ipb.JOB_SUCCEEDED, [n.message for n in done.nodes]
    return admin, node


def kube_events(admin: Client, node_id: str) -> list[str]:
    return [
        e.reason
        for e in events(admin, node_id)
        if e.actor == "system:kube-reconciler" and e.reason.startswith("Kubernetes: ")
    ]


def test_health_flapping_every_interval_makes_no_cordon_storm(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}", **QUICK)
    kubeapi.add_node(NAME, ip=hosts.addresses[NAME], ready=True)
    admin, node = join(svc, hosts, scratch, kubeapi.kubeconfig(), variant(dgx_inventory, 1))
    wait_for(lambda: node_state(admin, node.id)[0] == S.JOINED, 20, "JOINED")
    # the cluster list says where the reconciler asks, as GetCluster does, never the token
    listed = admin.ListClusters(ipb.ListClustersRequest()).clusters
    assert [(c.name, c.kubeconfig_set, c.api_server) for c in listed] == [
        ("prod", True, kubeapi.url)
    ]
    assert listed[0].kubeconfig_source.startswith("kubespray artifacts/admin.conf of job ")
    assert kubeapi.token not in str(listed)

    def beat(bad: bool) -> int:
        req = ipb.HeartbeatRequest(node_id=node.id, phase="JOINED", rails_down=int(bad))
        return int(node.client.Heartbeat(req).state)

    def patches() -> list[Any]:
        return [body["spec"] for _, _, body in kubeapi.writes("PATCH")]

    beat(False)
    assert [beat(i % 2 == 0) for i in range(30)] == [S.JOINED] * 30  # bad every other beat
    time.sleep(1.0)  # five reconciler rounds: nothing to do
    assert patches() == [] and kubeapi.nodes[NAME]["spec"].get("unschedulable") is None
    # bad long enough: one cordon; then flapping again never releases (not clear for 10)
    assert [beat(True) for _ in range(3)] == [S.JOINED, S.JOINED, S.QUARANTINED]
    slug = "rails-1-rail-s-down-0-degraded-more-than-0-for-3-heartbeats"
    quarantined = {"key": "nodeagent.io/quarantined", "value": slug, "effect": "NoSchedule"}
    cordon = {"unschedulable": True, "taints": [VALIDATING, quarantined]}
    wait_for(lambda: patches() == [cordon], 20, "one cordon and taint")
    assert [beat(i % 3 == 0) for i in range(30)] == [S.QUARANTINED] * 30
    time.sleep(1.0)
    assert patches() == [cordon]
    assert node_state(admin, node.id) == (S.QUARANTINED, RAILS)
    cordoned = [r for r in (e.reason for e in events(admin, node.id)) if "cordoned" in r]
    assert cordoned == [
        f"Node {NAME}: cordoned; tainted nodeagent.io/quarantined={slug}:NoSchedule"
    ]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_api_server_backs_off_keeps_the_node_joining_then_fails_it(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    port = closed_port()
    kubeconfig = kubeapi.kubeconfig().replace(kubeapi.url, f"http://127.0.0.1:{port}")
    svc = service_factory(
        f"sqlite:///{scratch / 'inv.db'}",
        **{**QUICK, "kube_ready_timeout_seconds": 6.0, "kube_backoff_max_seconds": 1.0},
    )
    admin, node = join(svc, hosts, scratch, kubeconfig, variant(dgx_inventory, 1))
    wait_for(
        lambda: admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.attempts >= 3,
        10,
        "retries",
    )
    shown = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert shown.state == S.JOINING
    unreachable = f"API server http://127.0.0.1:{port} unreachable (get nodes {NAME}): "
    assert shown.kube.last_error.startswith(unreachable)
    assert kube_events(admin, node.id) == [f"Kubernetes: {shown.kube.last_error}"]  # one
    attempts = shown.kube.attempts
    time.sleep(1.5)  # backoff: 0.5 s, 1 s, then at most 1 s apart, not every 0.2 s round
    assert shown.kube.attempts < 8 and (
        admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.attempts <= attempts + 3
    )
    wait_for(lambda: node_state(admin, node.id)[0] == S.FAILED, 15, "FAILED after the deadline")
    _, reason = node_state(admin, node.id)
    assert reason.startswith("the Node could not be seen Ready within ")
    assert f"s: Kubernetes: {unreachable}" in reason
    assert len(kube_events(admin, node.id)) == 1
    # nothing lost: the join is on record, and a retried join finds the node READY
    jobs = admin.ListJobs(ipb.ListJobsRequest(cluster="prod")).jobs
    assert [n.state for n in jobs[0].nodes] == [ipb.JOB_NODE_JOINED]
    settled = admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.attempts
    time.sleep(1.0)
    assert admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.attempts == settled


def test_a_kubeconfig_without_rights_is_an_event_naming_verb_and_resource(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(
        f"sqlite:///{scratch / 'inv.db'}", **{**QUICK, "kube_backoff_max_seconds": 1.0}
    )
    kubeapi.add_node(NAME, ip=hosts.addresses[NAME], ready=True)
    kubeapi.forbidden = {("patch", "nodes")}
    admin, node = join(svc, hosts, scratch, kubeapi.kubeconfig(), variant(dgx_inventory, 1))
    wait_for(lambda: node_state(admin, node.id)[0] == S.JOINED, 20, "JOINED (get is allowed)")
    node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, phase="JOINED", devices_ok=True, devices_set=True)
    )
    refused = (
        f'Kubernetes: the API server refused to patch nodes {NAME}: nodes "{NAME}" is '
        'forbidden: User "system:serviceaccount:kube-system:nodeagent" cannot patch resource '
        '"nodes" in API group "" at the cluster scope'
    )
    wait_for(lambda: kube_events(admin, node.id) == [refused], 20, "the refusal's event")
    kube = admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube
    assert kube.last_error == refused.removeprefix("Kubernetes: ") and not kube.validated
    assert kubeapi.nodes[NAME]["spec"]["taints"] == [VALIDATING]
    # the right granted: the next retry validates the node, with no second refusal event
    kubeapi.forbidden = set()
    wait_for(lambda: kubeapi.nodes[NAME]["spec"]["taints"] == [], 20, "validated")
    assert kube_events(admin, node.id) == [refused]
    wait_for(
        lambda: admin.GetNode(ipb.GetNodeRequest(node_id=node.id)).kube.last_error == "",
        10,
        "the error cleared",
    )


def test_a_node_registered_under_another_name_is_found_by_system_uuid(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(f"sqlite:///{scratch / 'inv.db'}", **QUICK)
    inv = variant(dgx_inventory, 1)
    kubeapi.add_node("other-node", ip="10.0.8.99", system_uuid="4C4C4544-0000-1000-8000-0000FFFF")
    # the kubelet runs with --hostname-override and reports the DMI uuid in upper case
    kubeapi.add_node("node-7f3a", ip=hosts.addresses[NAME], system_uuid=inv.system.uuid.upper())
    kubeapi.set_ready("node-7f3a")
    admin, node = join(svc, hosts, scratch, kubeapi.kubeconfig(), inv)
    wait_for(lambda: node_state(admin, node.id)[0] == S.JOINED, 20, "JOINED")
    shown = admin.GetNode(ipb.GetNodeRequest(node_id=node.id))
    assert shown.kube.node_name == "node-7f3a"
    ready = [e.reason for e in shown.events if e.to_state == S.JOINED]
    assert ready == [
        "Node node-7f3a is Ready (registered as node-7f3a): KubeletReady: "
        "kubelet is posting ready status"
    ]
    node.client.Heartbeat(
        ipb.HeartbeatRequest(node_id=node.id, phase="JOINED", devices_ok=True, devices_set=True)
    )
    wait_for(lambda: kubeapi.nodes["node-7f3a"]["spec"]["taints"] == [], 20, "validated")
    assert [p for _, p, _ in kubeapi.writes("PATCH")] == ["/api/v1/nodes/node-7f3a"]
    assert kubeapi.nodes["other-node"]["spec"]["taints"] == [VALIDATING]


def test_no_node_by_name_or_system_uuid_fails_with_the_reason(
    service_factory: Callable[..., ServiceThread],
    scratch: Path,
    hosts: sshhosts.SshHosts,
    kubeapi: KubeApiDouble,
    dgx_inventory: pb.HardwareInventory,
) -> None:
    svc = service_factory(
        f"sqlite:///{scratch / 'inv.db'}", **{**QUICK, "kube_ready_timeout_seconds": 3.0}
    )
    inv = variant(dgx_inventory, 1)
    kubeapi.add_node("node-7f3a", ip="10.0.8.99", system_uuid="4c4c4544-0000-1000-8000-0000ffff")
    admin, node = join(svc, hosts, scratch, kubeapi.kubeconfig(), inv)
    assert node_state(admin, node.id)[0] == S.JOINING
    wait_for(lambda: node_state(admin, node.id)[0] == S.FAILED, 15, "FAILED after the deadline")
    _, reason = node_state(admin, node.id)
    want = (
        f"no Node named '{NAME}' (nor one with system UUID {inv.system.uuid}) registered "
        "with the API server within "
    )
    assert reason.startswith(want) and reason.endswith("s")
    assert [p for m, p, _ in kubeapi.requests if m != "GET"] == []
