"""A reconciler round reads a node_kube row, talks to the API server, then records what it
did: whatever lands between the read and the record (the agent's device report, the node
quarantined, a new kubeconfig) must leave the row due, never settled and forgotten.

CI found the first on PostgreSQL with two replicas: the agent's "devices usable" report
arrived while a replica worked on the JOINED node's old row, the round settled the row, and
the validating taint never came off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import kube_state, lifecycle
from nodeagent.inventory.store import Store
from tests.inventory.conftest import ServiceThread, enrol

S = ipb.NodeState
OWNER = "replica-test"
CLUSTER = "prod"
KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n"
    "  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: x\n"
    "current-context: x\nusers:\n- name: u\n  user:\n    token: t0k3n\n"
)


def _row(
    database: str, factory: Callable[..., ServiceThread], inv: pb.HardwareInventory
) -> tuple[Store, kube_state.Row]:
    """A node with a node_kube row, claimed by OWNER; the service's own reconciler idles."""
    svc = factory(database, kube_reconcile_seconds=3600.0)
    admin = svc.admin()
    admin.CreateCluster(ipb.Cluster(name=CLUSTER, batch_size=1))
    node = enrol(svc, admin, inv)
    store: Store = svc.svc.store
    with store.tx() as cur:
        kube_state.joined(store, cur, node.id, CLUSTER, "gpu-00001")
    assert kube_state.claim(store, node.id, OWNER, 60.0)
    return store, kube_state.load(store, node.id)


def _due(store: Store, node_id: str) -> bool:
    return node_id in {r.node_id for r in kube_state.due(store, time.time() + 1)}


def test_a_settled_round_with_nothing_in_between_settles(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    store, row = _row(database, service_factory, dgx_inventory)
    assert _due(store, row.node_id), "a fresh row is due"
    assert kube_state.record(store, row, OWNER, {}, settled=True)
    assert not _due(store, row.node_id), "nothing moved: the row rests"


def test_a_device_report_during_the_round_keeps_the_row_due(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    store, row = _row(database, service_factory, dgx_inventory)
    assert not row.devices_ok
    kube_state.set_devices(store, row.node_id, True)  # lands after the round read the row
    assert kube_state.record(store, row, OWNER, {}, settled=True)
    assert _due(store, row.node_id), "the report must be reconciled"
    again = kube_state.load(store, row.node_id)
    assert again.devices_ok and again.touched == row.touched + 1
    assert kube_state.record(store, again, OWNER, {}, settled=True)
    assert not _due(store, row.node_id), "reconciled with the report read: settled"


def test_a_state_change_during_the_round_keeps_the_row_due(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    store, row = _row(database, service_factory, dgx_inventory)
    with store.tx() as cur:  # the node moves after the round read it
        lifecycle.transition(store, cur, row.node_id, S.QUARANTINED, "test", "bad GPU")
    assert kube_state.record(store, row, OWNER, {}, settled=True)
    assert _due(store, row.node_id), "settled for the state read, not the state now"


def test_a_new_kubeconfig_during_the_round_keeps_the_row_due(
    database: str,
    service_factory: Callable[..., ServiceThread],
    dgx_inventory: pb.HardwareInventory,
) -> None:
    store, row = _row(database, service_factory, dgx_inventory)
    kube_state.set_kubeconfig(store, CLUSTER, KUBECONFIG, "test")  # lands mid-round
    assert kube_state.record(store, row, OWNER, {}, settled=True)
    assert _due(store, row.node_id), "the new credentials must be tried"
