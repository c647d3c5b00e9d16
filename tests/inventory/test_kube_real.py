"""The Kubernetes calls against a REAL cluster, when one is given.

Set NODEAGENT_TEST_KUBECONFIG to a kubeconfig with rights on nodes and pods/eviction and
NODEAGENT_TEST_NODE to a worker the test may cordon, taint, uncordon and untaint (it is
left as found; it is never drained or deleted). Skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.inventory import kube

CONFIG = os.environ.get("NODEAGENT_TEST_KUBECONFIG", "")
NODE = os.environ.get("NODEAGENT_TEST_NODE", "")
pytestmark = pytest.mark.skipif(
    not (CONFIG and NODE),
    reason="no real cluster: set NODEAGENT_TEST_KUBECONFIG and NODEAGENT_TEST_NODE",
)
KEY = "nodeagent.io/quarantined"


def test_cordon_taint_and_undo_on_a_real_node(tmp_path: Path) -> None:
    client = kube.Kube(Path(CONFIG).read_text(), tmp_path / "k")
    node = client.get_node(NODE)
    status, _ = kube.condition(node, "Ready")
    assert status in ("True", "False", "Unknown")
    before = kube.taints(node)
    was = bool(node["spec"].get("unschedulable"))
    taint = {"key": KEY, "value": "test", "effect": "NoSchedule"}
    changed = client.patch_node(node, {"unschedulable": True, "taints": [*before, taint]})
    try:
        assert changed["spec"]["unschedulable"] is True and taint in kube.taints(changed)
        with pytest.raises(kube.KubeConflict):  # the old resourceVersion is refused
            client.patch_node(node, {"unschedulable": was})
    finally:
        fresh = client.get_node(NODE)
        client.patch_node(fresh, {"unschedulable": was, "taints": before})
    assert client.find_node("no-such-node-nodeagent", "") is None
