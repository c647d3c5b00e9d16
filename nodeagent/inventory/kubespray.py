"""The Kubespray inventory of a cluster, built from the database, and its validation.

Pure functions: the cluster spec and node rows in, the inventory (the structure of
Kubespray's `hosts.yaml`) and a list of problems out. Validation covers what
Kubespray's own `validate_inventory` role checks (non-empty control plane, odd etcd
count) and what it misses until a run is half done (node names, which preinstall only
checks after fact gathering, and overlapping pod and service subnets, which it does
not check at all; Kubespray's roles/validate_inventory and kubernetes/preinstall).

A node's name is the host name it reports, so it is never trusted as an address: a node
with neither an address its agent reported (netlink) nor one set by an admin is left
out, as is a node whose name breaks the rules or is taken by another host. What is left
out is one problem line per node, and the other nodes still make an inventory; only the
cluster's own problems block it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from nodeagent import label_syntax as syntax
from nodeagent import names
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.labels.config import taint_problem

GROUPS = ("kube_control_plane", "etcd", "kube_node")
# Names Ansible or Kubespray use for groups: a host by one of these names is ambiguous in --limit.
RESERVED_NAMES = frozenset(
    {*GROUPS, "all", "ungrouped", "k8s_cluster", "calico_rr", "bastion", "localhost"}
)
# Kubespray's defaults (roles/kubespray_defaults) when the cluster's group vars do not say.
DEFAULT_SUBNETS = {"kube_service_addresses": "10.233.0.0/18", "kube_pods_subnet": "10.233.64.0/18"}
IPV6_SUBNETS = {
    "kube_service_addresses_ipv6": "fd85:ee78:d8a6:8607::1000/116",
    "kube_pods_subnet_ipv6": "fd85:ee78:d8a6:8607::1:0000/112",
}
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANSIBLE_HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?")
NO_ADDRESS = (
    "no address reported by its agent or set by an admin (nodeagent admin node-address): "
    "its host name is its own choice, never where Ansible connects"
)


@dataclass(frozen=True)
class NodeEntry:
    """A nodeagent node as it goes into the inventory."""

    node_id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[str] = ()
    ansible_host: str = ""
    ip: str = ""
    access_ip: str = ""
    # why the addresses the agent reported give none to use ("" when they do, or none came)
    address_problem: str = ""


def node_name_problem(name: str) -> str:
    """Why `name` cannot be a Kubernetes node name in Kubespray ('' when it can): the host
    name rules (Kubespray's "Stop if bad hostname" checks the same), and no group name."""
    problem = names.hostname_problem(name)
    if not problem and name in RESERVED_NAMES:
        problem = f"host name {names.shown(name)} is an Ansible or Kubespray group name"
    return problem


def address_problem(value: str, what: str) -> str:
    if not value:
        return ""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{what} {value[:80]!r} is not an IP address"
    return ""


def ansible_host_problem(value: str) -> str:
    if not value:
        return ""
    if len(value) > 253 or not _ANSIBLE_HOST.fullmatch(value):
        return f"ansible_host {value[:80]!r} is neither an address nor a host name"
    return ""


def host_problems(name: str, ansible_host: str, ip: str, access_ip: str) -> list[str]:
    found = [
        node_name_problem(name),
        ansible_host_problem(ansible_host),
        address_problem(ip, "ip"),
        address_problem(access_ip, "access_ip"),
    ]
    return [p for p in found if p]


@functools.lru_cache(maxsize=65536)
def _label_problems(key: str, value: str) -> tuple[str, ...]:
    return tuple(syntax.problems({key: value}))


def labels_problems(labels: Mapping[str, str], taints: Iterable[str]) -> list[str]:
    """Label pairs repeat across a fleet (same hardware, same values): checked once each."""
    found = [p for key, value in labels.items() for p in _label_problems(key, value)]
    return found + [p for p in map(taint_problem, taints) if p]


def subnet_problems(group_vars: Mapping[str, Any]) -> list[str]:
    """Pod and service networks must be networks, distinct and disjoint (Kubespray only
    rejects pods inside services, not services inside pods or a partial overlap)."""
    out = []
    pairs = [DEFAULT_SUBNETS]
    if group_vars.get("ipv6_stack") or group_vars.get("enable_dual_stack_networks"):
        pairs.append(IPV6_SUBNETS)
    for defaults in pairs:
        nets = {}
        for var, default in defaults.items():
            text = str(group_vars.get(var, default))
            try:
                nets[var] = ipaddress.ip_network(text, strict=False)
            except ValueError:
                out.append(f"{var} {text[:80]!r} is not a network")
        if len(nets) == 2:
            (a_var, a), (b_var, b) = nets.items()
            if a == b:
                out.append(f"{a_var} and {b_var} are the same network {a}")
            elif a.version == b.version and a.overlaps(b):
                out.append(f"{a_var} {a} and {b_var} {b} overlap")
    return out


def group_vars_problems(group_vars: Mapping[str, Any]) -> list[str]:
    bad = [k for k in group_vars if not _VAR_NAME.fullmatch(k)]
    return [f"group variable name {k[:80]!r} is not an Ansible variable name" for k in bad]


def cluster_problems(cluster: ipb.Cluster) -> list[str]:
    """What is wrong with the cluster's own hosts and settings."""
    out = []
    if not cluster.control_plane:
        out.append("kube_control_plane is empty: give the cluster's control-plane hosts")
    if not cluster.etcd or len(cluster.etcd) % 2 == 0:
        out.append(f"etcd has {len(cluster.etcd)} hosts: Kubespray needs an odd number")
    for group, hosts in (("kube_control_plane", cluster.control_plane), ("etcd", cluster.etcd)):
        for h in hosts:
            out += [
                f"{group}: {p}" for p in host_problems(h.name, h.ansible_host, h.ip, h.access_ip)
            ]
    existing: dict[str, tuple[str, str, str]] = {}
    for h in [*cluster.control_plane, *cluster.etcd]:
        addr = (h.ansible_host, h.ip, h.access_ip)
        if existing.setdefault(h.name, addr) != addr:
            out.append(f"host {h.name!r} is listed twice with different addresses")
    group_vars = json_format.MessageToDict(cluster.group_vars)
    out += group_vars_problems(group_vars)
    out += subnet_problems(group_vars)
    return out


def node_problems(node: NodeEntry) -> list[str]:
    """What keeps one node out of the inventory (the node alone, not beside the others)."""
    where = node.name if not node_name_problem(node.name) else f"node {node.node_id}"
    found = host_problems(node.name, node.ansible_host, node.ip, node.access_ip)
    if not (node.ansible_host or node.ip):
        found.append(
            f"{node.address_problem}; {NO_ADDRESS}" if node.address_problem else NO_ADDRESS
        )
    found += labels_problems(node.labels, node.taints)
    return [f"{where}: {p}" for p in found]


def usable_nodes(
    cluster: ipb.Cluster, nodes: Sequence[NodeEntry]
) -> tuple[list[NodeEntry], list[str]]:
    """(the nodes fit for the inventory, one problem line per node left out).

    Nodes that share a name are all left out: which is the real one cannot be told, and
    the first would otherwise take the other's place under its name.
    """
    taken = {h.name for h in [*cluster.control_plane, *cluster.etcd]}
    count = Counter(n.name for n in nodes)
    ok: list[NodeEntry] = []
    left_out: list[str] = []
    for n in nodes:
        found = node_problems(n)
        if not found and n.name in taken:
            found = [f"{n.name}: node {n.node_id} has the name of a control-plane or etcd host"]
        if not found and count[n.name] > 1:
            found = [f"{n.name}: node {n.node_id} shares this name with another node"]
        if found:
            left_out.append("; ".join(found))
        else:
            ok.append(n)
    return ok, left_out


def _host_vars(ansible_host: str, ip: str, access_ip: str, name: str = "") -> dict[str, Any]:
    """`name` is the address of last resort, for a cluster host only: an admin chose it.
    A node's name is its own choice, and a node without an address is never built."""
    out: dict[str, Any] = {"ansible_host": ansible_host or ip or name}
    if ip:
        out["ip"] = ip
    if access_ip or ip:
        out["access_ip"] = access_ip or ip
    return out


def build(cluster: ipb.Cluster, nodes: Sequence[NodeEntry]) -> tuple[dict[str, Any], list[str]]:
    """(hosts.yaml structure, problems). Nodes are workers (kube_node); the cluster's own
    hosts are its control plane and etcd. Nodes with a problem are left out, each named
    in the problems. Problems empty: Kubespray may be run with it."""
    ok, left_out = usable_nodes(cluster, nodes)
    problems = cluster_problems(cluster) + left_out
    hosts: dict[str, dict[str, Any]] = {}
    for h in [*cluster.control_plane, *cluster.etcd]:
        hosts.setdefault(h.name, _host_vars(h.ansible_host, h.ip, h.access_ip, h.name))
    workers: dict[str, None] = {}
    for n in ok:
        entry = _host_vars(n.ansible_host, n.ip, n.access_ip)
        entry["node_labels"] = dict(sorted(n.labels.items()))
        entry["node_taints"] = list(n.taints)
        hosts[n.name] = entry
        workers[n.name] = None
    all_vars: dict[str, Any] = json_format.MessageToDict(cluster.group_vars)
    if cluster.ssh_user:
        all_vars["ansible_user"] = cluster.ssh_user
    if cluster.ssh_key_path:
        all_vars["ansible_ssh_private_key_file"] = cluster.ssh_key_path
    children: dict[str, Any] = {
        "kube_control_plane": {"hosts": {h.name: {} for h in cluster.control_plane}},
        "etcd": {"hosts": {h.name: {} for h in cluster.etcd}},
        "kube_node": {"hosts": {name: {} for name in workers}},
        "k8s_cluster": {"children": {"kube_control_plane": {}, "kube_node": {}}},
    }
    inventory = {"all": {"vars": all_vars, "hosts": hosts, "children": children}}
    return inventory, problems


def to_script_list(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """The same inventory in Ansible's dynamic-inventory `--list` format (with `_meta`, so
    Ansible does not call `--host` once per host)."""
    top = inventory["all"]
    out: dict[str, Any] = {"_meta": {"hostvars": top["hosts"]}}
    out["all"] = {"children": ["ungrouped", *top["children"]], "vars": top["vars"]}
    for group, body in top["children"].items():
        entry: dict[str, Any] = {}
        if "hosts" in body:
            entry["hosts"] = list(body["hosts"])
        if "children" in body:
            entry["children"] = list(body["children"])
        out[group] = entry
    return out


def to_yaml(inventory: Mapping[str, Any]) -> str:
    """hosts.yaml text: block style for the groups, one line per host with its variables
    in flow style. JSON is YAML, so each host's line is `json.dumps` (quoted names too,
    so a host called `true` or `1` stays a string): ten thousand hosts in well under a
    second, where a full YAML emitter takes seconds."""
    top = inventory["all"]
    out = [
        "# Kubespray inventory written by nodeagent (admin export kubespray); do not edit.",
        "all:",
        f"  vars: {json.dumps(top['vars'], sort_keys=True)}",
        "  hosts:",
    ]
    out += [f"    {json.dumps(name)}: {json.dumps(hv)}" for name, hv in top["hosts"].items()]
    out.append("  children:")
    for group, body in top["children"].items():
        out.append(f"    {group}:")
        for kind in ("hosts", "children"):
            if kind in body:
                out.append(f"      {kind}:")
                out += [f"        {json.dumps(name)}: {{}}" for name in body[kind]]
    return "\n".join(out) + "\n"
