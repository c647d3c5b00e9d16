"""What the NVIDIA GPU Operator needs from us for a cluster's nodes, as Kubernetes YAML.

With the Operator owning the driver (gpu_driver = operator), the module parameters our
profiles would write to modprobe.d must reach its driver container instead: a ConfigMap of
`<module>.conf` files (one `key=value` a line) named by the Helm value
`driver.kernelModuleConfig.name` (ClusterPolicy `spec.driver.kernelModuleConfig.name`).
The RUN:AI/OSMO-on-Kubespray reference sets `uvm_disable_hmm=1` this way on RTX PRO 6000
Blackwell Server Edition nodes (CUDA's HMM validation fails on them).

`documents` is a pure function of the cluster and its nodes' GPUs, so the rules are tested
without a service; `export` reads the nodes. Nothing a node reports (hostnames, model
strings) is written into the text: only counts and our own constants, so the YAML needs no
escaping.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.clusters import load_cluster
from nodeagent.inventory.store import Store
from nodeagent.tuning import gpu_driver

NAMESPACE = "gpu-operator"
CONFIGMAP = "kernel-module-params"
# GPU model glob -> (module, parameter, value, why); the Operator's file is `<module>.conf`
MODULE_PARAMS = (
    (
        "NVIDIA RTX PRO 6000*",
        "nvidia-uvm",
        "uvm_disable_hmm",
        "1",
        "RTX PRO 6000 Blackwell: CUDA validation fails with HMM",
    ),
)
# The driver the reference tested with GPU Operator v25.3.4, for the GPUs it covers; other
# GPUs are left to the chart's default rather than pinned to a version nobody tested there.
REFERENCE_DRIVER = "580.82.07"
REFERENCE_GPUS = ("NVIDIA RTX PRO 6000*", "NVIDIA B200*")


@dataclass(frozen=True)
class NodeGpus:
    gpu_models: tuple[str, ...]
    rdma: bool  # RDMA adapters: nvidia-peermem belongs in the driver container


def _matches(model: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(model.lower(), pattern.lower())


def module_params(nodes: Sequence[NodeGpus]) -> dict[str, dict[str, str]]:
    """`<module>.conf` -> {param: value}, for the parameters any node's GPUs need."""
    out: dict[str, dict[str, str]] = {}
    for pattern, module, param, value, _why in MODULE_PARAMS:
        if any(_matches(m, pattern) for n in nodes for m in n.gpu_models):
            out.setdefault(f"{module}.conf", {})[param] = value
    return out


def _reasons(nodes: Sequence[NodeGpus]) -> list[str]:
    lines = []
    for pattern, module, param, value, why in MODULE_PARAMS:
        count = sum(any(_matches(m, pattern) for m in n.gpu_models) for n in nodes)
        if count:
            lines.append(f"# {module} {param}={value} for {count} node(s): {why}")
    return lines


def values(mode: str, nodes: Sequence[NodeGpus], params: bool) -> dict[str, Any]:
    """The Helm values (ClusterPolicy spec) that point the Operator at our settings."""
    if mode != gpu_driver.OPERATOR:
        # the hosts carry the driver: the Operator must not install a second one
        return {"driver": {"enabled": False}}
    driver: dict[str, Any] = {"enabled": True}
    gpu_nodes = [n for n in nodes if n.gpu_models]
    if gpu_nodes and all(
        any(_matches(m, p) for p in REFERENCE_GPUS) for n in gpu_nodes for m in n.gpu_models
    ):
        driver["version"] = REFERENCE_DRIVER
    if params:
        driver["kernelModuleConfig"] = {"name": CONFIGMAP}
    if any(n.rdma for n in gpu_nodes):
        # nvidia-peermem from the driver container, over the inbox RDMA stack (the
        # reference runs the Network Operator without OFED)
        driver["rdma"] = {"enabled": True, "useHostMofed": False}
    return {"driver": driver}


def documents(cluster: str, mode: str, nodes: Sequence[NodeGpus]) -> str:
    """Multi-document YAML: the kernel-module ConfigMap (when any parameter is needed and
    the Operator owns the driver), then the Helm values."""
    params = module_params(nodes) if mode == gpu_driver.OPERATOR else {}
    gpus = sum(bool(n.gpu_models) for n in nodes)
    head = [
        f"# GPU Operator settings for cluster {cluster}: gpu_driver {mode}, "
        f"{len(nodes)} node(s), {gpus} with NVIDIA GPUs",
    ]
    docs = []
    if params:
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
            "data": {
                name: "".join(f"{k}={v}\n" for k, v in sorted(p.items()))
                for name, p in sorted(params.items())
            },
        }
        docs.append("\n".join([*head, *_reasons(nodes), _dump(configmap)]))
        head = []
    note = "# Helm values for nvidia/gpu-operator (ClusterPolicy spec.driver)"
    if mode != gpu_driver.OPERATOR:
        note += ": the hosts carry the driver (gpu_driver host)"
    docs.append("\n".join([*head, note, _dump(values(mode, nodes, bool(params)))]))
    return "---\n".join(docs)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def node_gpus(inventory_json: str) -> NodeGpus:
    inv = json_format.Parse(
        inventory_json or "{}", pb.HardwareInventory(), ignore_unknown_fields=True
    )
    return NodeGpus(tuple(g.model for g in inv.gpus), bool(inv.rdma_devices))


def export(store: Store, name: str) -> tuple[str, int]:
    """(YAML, node count) for the nodes assigned to cluster `name` that are not retired."""
    with store.tx() as cur:
        cluster = load_cluster(store, cur, name)
        cur.execute(
            store.q("SELECT inventory FROM nodes WHERE cluster = ? AND state <> ? ORDER BY id"),
            (name, ipb.NodeState.RETIRED),
        )
        nodes = [node_gpus(row[0]) for row in cur.fetchall()]
    mode = gpu_driver.effective(cluster.gpu_driver)
    return documents(cluster.name, mode, nodes), len(nodes)
