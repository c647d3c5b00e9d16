"""`nodeagent admin ...`: the whole admin command tree, and the handlers of its nodes,
tokens, certificates and fleet exports (Kubespray clusters, addresses and join jobs are
kubespray_cmd).

The tree is in one place so its help reads in one order and each leaf names its handler;
the handlers reach the service only through AdminClient.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from nodeagent.api.v1 import fleet_pb2
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.cli import admin_validate, dashboard_cmd, kubespray_cmd, render
from nodeagent.cli.admin_client import AdminClient, add_connection_flags
from nodeagent.cli.common import EXIT_OK, CliError, add_command, add_output

NODE_HEADERS = [
    "ID",
    "HOSTNAME",
    "STATE",
    "POOL",
    "CLUSTER",
    "PROFILE",
    "GPUS",
    "REACHABLE",
    "REASON",
]
TOKEN_HEADERS = ["ID", "EXPIRES", "USES", "STATE", "POOL", "PROFILE", "DESCRIPTION"]
HOST_HELP = "NAME[=IP][,access_ip=IP][,ansible_host=HOST] (repeatable)"
NODE_HELP = "node id, a unique prefix of it, or hostname"
# States whose reason is the admin's or the service's own word on why the node is there.
REASONED_STATES = (ipb.FAILED, ipb.QUARANTINED, ipb.MAINTENANCE)

AdminHandler = Callable[[AdminClient, argparse.Namespace], int]


def _reachable(node: Any) -> str:
    """'-' when the reply carries no liveness (a changed node comes back without it): a
    node that just answered its heartbeat is not 'NO'."""
    if not node.HasField("last_seen"):
        return "-"
    return "yes" if node.reachable else "NO"


def _reason(node: Any) -> str:
    """Why the node is where it is: the state's reason for a failed, quarantined or held
    node, else what blocks it (its first failing preflight check)."""
    if node.state in REASONED_STATES and node.state_reason:
        return str(node.state_reason)
    return str(node.blocking[0]) if node.blocking else "-"


def _node_rows(nodes: Any) -> list[list[str]]:
    return [
        [
            n.id,
            n.hostname,
            ipb.NodeState.Name(n.state),
            n.assignment.pool or "-",
            n.assignment.cluster or "-",
            n.assignment.profile or "-",
            f"{n.gpu_count}x {n.gpu_model}" if n.gpu_count else "-",
            _reachable(n),
            _reason(n),
        ]
        for n in nodes
    ]


def _emit_nodes(client: AdminClient, msg: Any, nodes: Any) -> int:
    """Node rows, the REASON column cut to the terminal's width."""
    if client.output != "table":
        return client.emit(msg, [], [])
    width = shutil.get_terminal_size((160, 24)).columns
    print(render.table(_node_rows(nodes), NODE_HEADERS, width=width))
    return EXIT_OK


def _render_node(node: Any) -> str:
    a = node.assignment
    seen = (
        f"last seen {render.timestamp(node.last_seen)}"
        if node.HasField("last_seen")
        else "never seen"
    )
    lines = [
        f"node      {node.id}",
        f"hostname  {node.hostname}",
        f"state     {ipb.NodeState.Name(node.state)}  {node.state_reason}".rstrip(),
        f"reachable {_reachable(node)} ({seen}, phase {node.reported_phase or '-'})",
        f"assigned  pool={a.pool or '-'} role={a.role or '-'} cluster={a.cluster or '-'} "
        f"profile={a.profile or '-'}",
        f"hardware  {node.gpu_count}x {node.gpu_model or '-'}, "
        f"{len(node.inventory.rdma_devices)} RDMA, {len(node.inventory.nvme_controllers)} "
        f"NVMe, hash {node.inventory_hash[:12] or '-'}",
    ]
    if node.HasField("acceptance"):  # the latest acceptance report the agent sent
        lines.append(admin_validate.summary(node.acceptance))
    if node.blocking:  # the checks that keep it where it is, as its agent last said
        lines += ["blocked by:", *(f"  - {render.clip(b, 400)}" for b in node.blocking)]
    return "\n".join(lines) + "\n"


def _event_states(event: Any) -> tuple[str, str]:
    """FROM and TO of an event in the log: a node's first event is its registration and
    its last may be its deletion, which no state names."""
    unspecified = ipb.NODE_STATE_UNSPECIFIED
    before = (
        "registered" if event.from_state == unspecified else ipb.NodeState.Name(event.from_state)
    )
    after = "deleted" if event.to_state == unspecified else ipb.NodeState.Name(event.to_state)
    return before, after


def _nodes_list(client: AdminClient, args: argparse.Namespace) -> int:
    try:
        request = ipb.ListNodesRequest(
            state=args.state.upper() if args.state else None,
            pool=args.pool or "",
            gpu_model=args.gpu_model or "",
            cluster=args.cluster or "",
            page_size=args.limit,
        )
    except ValueError:
        raise CliError(f"unknown state {args.state!r}") from None
    resp = client.call("ListNodes", request)
    return _emit_nodes(client, resp, resp.nodes)


def _nodes_show(client: AdminClient, args: argparse.Namespace) -> int:
    node = client.call("GetNode", ipb.GetNodeRequest(node_id=args.node, events=args.events))
    rows = [[render.timestamp(e.time), e.actor, *_event_states(e), e.reason] for e in node.events]
    if client.output == "table":
        print(_render_node(node))
    return client.emit(node, rows, ["TIME", "ACTOR", "FROM", "TO", "REASON"])


def _nodes_update(client: AdminClient, args: argparse.Namespace) -> int:
    a = ipb.Assignment(
        pool=args.pool or "",
        role=args.role or "",
        cluster=args.cluster or "",
        profile=args.profile or "",
    )
    fields = [f for f in ("pool", "role", "cluster", "profile") if getattr(args, f) is not None]
    for item in args.label or []:
        key, _, value = item.partition("=")
        a.labels[key] = value
    if args.label is not None:
        fields.append("labels")
    if args.taint is not None:
        a.taints.extend(args.taint)
        fields.append("taints")
    if not fields:
        raise CliError(
            "nothing to update: give --pool, --role, --cluster, --profile, --label or --taint"
        )
    node = client.call(
        "UpdateAssignment",
        ipb.UpdateAssignmentRequest(node_id=args.node, assignment=a, fields=fields),
    )
    return _emit_nodes(client, node, [node])


def _nodes_change_state(method: str, client: AdminClient, args: argparse.Namespace) -> int:
    """hold, release, retire: one request shape, the RPC named by the subcommand."""
    node = client.call(method, ipb.NodeActionRequest(node_id=args.node, reason=args.reason))
    return _emit_nodes(client, node, [node])


def _nodes_delete(client: AdminClient, args: argparse.Namespace) -> int:
    client.call("DeleteNode", ipb.NodeActionRequest(node_id=args.node, reason=args.reason))
    print(f"deleted {args.node}")
    return EXIT_OK


def _nodes_labels(client: AdminClient, args: argparse.Namespace) -> int:
    resp = client.call_fleet(
        "GetNodeLabels",
        fleet_pb2.GetNodeLabelsRequest(node_id=args.node, domain=args.domain or ""),
    )
    labels = dict(sorted(resp.labels.items()))
    if client.output == "table":
        print(render.table([[k, v] for k, v in labels.items()], ["KEY", "VALUE"]))
    else:  # the flat map, as `nodeagent labels -o json|yaml` prints it on the node
        sys.stdout.write(render.dump(labels, client.output))
    return EXIT_OK


def _export_topology(fmt: str, client: AdminClient, args: argparse.Namespace) -> int:
    """`admin export kueue-topology|slurm-topology|fabric`: the fleet grouped by fabric."""
    resp = client.call_fleet(
        "ExportTopology",
        fleet_pb2.ExportTopologyRequest(
            format=fmt, cluster=args.cluster or "", domain=args.domain or ""
        ),
    )
    sys.stdout.write(resp.text if resp.text.endswith("\n") else resp.text + "\n")
    return EXIT_OK


def _token_state(token: Any) -> str:
    """Whether the token can still enrol a machine, and if not, the first reason."""
    if token.revoked:
        return "revoked"
    if render.expired(token.expires_at):
        return "expired"
    if token.max_uses and token.uses >= token.max_uses:
        return "used up"
    return "valid"


def _token_rows(tokens: Any) -> list[list[str]]:
    return [
        [
            t.id,
            render.timestamp(t.expires_at),
            f"{t.uses}/{t.max_uses}",
            _token_state(t),
            t.preset.pool or "-",
            t.preset.profile or "-",
            t.description,
        ]
        for t in tokens
    ]


def _tokens_create(client: AdminClient, args: argparse.Namespace) -> int:
    # On the wire 0 means "not given" (one day, one use): an explicit 0 or a negative
    # number here is a mistake, refused in one line before anything is sent.
    for flag, value, what in (
        ("--ttl", args.ttl, "a number of seconds"),
        ("--max-uses", args.max_uses, "a number of uses"),
    ):
        if not 0 < value < 2**32:
            raise CliError(f"{flag} must be {what} from 1 to {2**32 - 1}, got {value}")
    request = ipb.CreateTokenRequest(
        ttl_seconds=args.ttl,
        max_uses=args.max_uses,
        description=args.description or "",
        reenrol_node=args.reenrol or "",
    )
    if args.pool or args.profile or args.cluster:
        request.preset.CopyFrom(
            ipb.Assignment(
                pool=args.pool or "", profile=args.profile or "", cluster=args.cluster or ""
            )
        )
    resp = client.call("CreateToken", request)
    if client.output == "table":
        print(resp.secret)  # shown once: the service keeps only its hash
        print(
            f"(token {resp.token.id}: {resp.token.max_uses} use(s), expires "
            f"{resp.token.expires_at.ToJsonString()})",
            file=sys.stderr,
        )
    else:
        client.emit(resp, [], [])
    return EXIT_OK


def _tokens_list(client: AdminClient, args: argparse.Namespace) -> int:
    resp = client.call("ListTokens", ipb.ListTokensRequest())
    return client.emit(resp, _token_rows(resp.tokens), TOKEN_HEADERS)


def _tokens_revoke(client: AdminClient, args: argparse.Namespace) -> int:
    token = client.call("RevokeToken", ipb.RevokeTokenRequest(id=args.id))
    return client.emit(token, _token_rows([token]), TOKEN_HEADERS)


CERT_HEADERS = ["SERIAL", "ROLE", "SUBJECT", "NOT AFTER", "REVOKED"]


def _cert_rows(certs: Any) -> list[list[str]]:
    return [
        [
            c.serial,
            c.role or "-",
            c.subject or "-",
            render.timestamp(c.not_after) + (" (expired)" if render.expired(c.not_after) else ""),
            f"{render.timestamp(c.revoked_at)} by {c.revoked_by}" if c.revoked else "no",
        ]
        for c in certs
    ]


def _certs_list(client: AdminClient, args: argparse.Namespace) -> int:
    request = ipb.ListCertificatesRequest(
        node_id=args.node or "", role=args.role or "", include_expired=args.all
    )
    resp = client.call("ListCertificates", request)
    return client.emit(resp, _cert_rows(resp.certificates), CERT_HEADERS)


def _certs_revoke(client: AdminClient, args: argparse.Namespace) -> int:
    request = ipb.RevokeCertificateRequest(serial=args.serial, reason=args.reason)
    cert = client.call("RevokeCertificate", request)
    return client.emit(cert, _cert_rows([cert]), CERT_HEADERS)


# --- the tree -----------------------------------------------------------------------------


def _command(
    sub: Any,
    name: str,
    handler: AdminHandler,
    *,
    nodes: tuple[str, ...] = (),
    output: bool = True,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """An admin subcommand; its handler gets the connection the command line names, and
    the arguments named in `nodes` (a NODE or a list of them) as node ids: a node is named
    by its id, a unique id prefix or its hostname. `-o` on the leaf as well as on `admin`
    (`output=False` for a command that prints one fixed format)."""

    def run(args: argparse.Namespace) -> int:
        client = AdminClient.from_args(args)
        for attr in nodes:
            value = getattr(args, attr)
            if isinstance(value, list):
                setattr(args, attr, client.resolve_nodes(value))
            elif value is not None:
                setattr(args, attr, client.resolve_nodes([value])[0])
        return handler(client, args)

    p = add_command(sub, name, run, **kwargs)
    if output:
        add_output(p, inherit=True)
    return p


def _job_command(
    j_sub: Any, name: str, handler: AdminHandler, **kwargs: Any
) -> argparse.ArgumentParser:
    """A job subcommand, with how long to wait for an inventory that restarts while a job
    is followed (hidden: the tests shorten it)."""
    p = _command(j_sub, name, handler, **kwargs)
    p.add_argument("--reconnect", type=float, default=300, help=argparse.SUPPRESS)
    return p


def register(sub: Any) -> None:
    admin = sub.add_parser("admin", help="administer the fleet through the inventory service")
    add_connection_flags(admin)
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="OBJECT")
    _register_nodes(admin_sub)
    _register_tokens(admin_sub)
    _register_certs(admin_sub)
    _register_clusters(admin_sub)
    p = _command(
        admin_sub,
        "node-address",
        kubespray_cmd.node_address,
        nodes=("node",),
        help="where Ansible reaches a node",
    )
    p.add_argument("node", help=NODE_HELP)
    p.add_argument("--ip", help="the node's address (Kubespray `ip`, kubelet --node-ip)")
    p.add_argument("--access-ip", help="the address others use (default: --ip)")
    p.add_argument("--ansible-host", help="SSH target (default: --ip)")
    _register_exports(admin_sub)
    _register_join(admin_sub)
    dashboard_cmd.register(admin_sub, _command)


def _register_nodes(admin_sub: Any) -> None:
    nodes = admin_sub.add_parser("nodes", help="list, show and change nodes")
    nodes_sub = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    p = _command(nodes_sub, "list", _nodes_list)
    for flag in ("--state", "--pool", "--gpu-model", "--cluster"):
        p.add_argument(flag)
    p.add_argument("--limit", type=int, default=1000)
    p = _command(nodes_sub, "show", _nodes_show, nodes=("node",))
    p.add_argument("node", help=NODE_HELP)
    p.add_argument("--events", type=int, default=50)
    p = _command(nodes_sub, "update", _nodes_update, nodes=("node",))
    p.add_argument("node", help=NODE_HELP)
    for flag in ("--pool", "--role", "--cluster", "--profile"):
        p.add_argument(flag)
    p.add_argument("--label", action="append", help="key=value (repeatable)")
    p.add_argument("--taint", action="append", help="key=value:Effect (repeatable)")
    for action, func in (
        ("hold", partial(_nodes_change_state, "HoldNode")),
        ("release", partial(_nodes_change_state, "ReleaseNode")),
        ("quarantine", partial(_nodes_change_state, "QuarantineNode")),
        ("retire", partial(_nodes_change_state, "RetireNode")),
        ("delete", _nodes_delete),
    ):
        p = _command(nodes_sub, action, func, nodes=("node",))
        p.add_argument("node", help=NODE_HELP)
        p.add_argument("--reason", default="")
    p = _command(
        nodes_sub,
        "labels",
        _nodes_labels,
        nodes=("node",),
        help="the node's labels, as its agent publishes them",
    )
    p.add_argument("node", help=NODE_HELP)
    p.add_argument("--domain")
    admin_validate.register(nodes_sub, _command, NODE_HELP)


def _register_tokens(admin_sub: Any) -> None:
    toks = admin_sub.add_parser("tokens", help="bootstrap tokens")
    toks_sub = toks.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    p = _command(toks_sub, "create", _tokens_create, nodes=("reenrol",))
    p.add_argument("--ttl", type=int, default=86400, help="seconds, 1 or more (default one day)")
    p.add_argument("--max-uses", type=int, default=1, help="1 or more (default 1)")
    for flag in ("--pool", "--profile", "--cluster", "--description"):
        p.add_argument(flag)
    p.add_argument(
        "--reenrol",
        metavar="NODE",
        help="a single-use token with which only NODE's machine may enrol again (reinstall)",
    )
    _command(toks_sub, "list", _tokens_list)
    _command(toks_sub, "revoke", _tokens_revoke).add_argument("id")


def _register_certs(admin_sub: Any) -> None:
    certs = admin_sub.add_parser("certs", help="issued certificates and revocation")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    p = _command(certs_sub, "list", _certs_list, nodes=("node",))
    p.add_argument("--node", help=f"only this node's ({NODE_HELP})")
    p.add_argument("--role", choices=("node", "viewer", "operator", "admin"))
    p.add_argument("--all", action="store_true", help="expired ones too")
    p = _command(certs_sub, "revoke", _certs_revoke)
    p.add_argument("serial", help="hex, as `admin certs list` shows it")
    p.add_argument("--reason", default="")


def _cluster_flags(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("name")
    p.add_argument("--kubespray-dir", required=create, help="the Kubespray checkout")
    p.add_argument("--control-plane", action="append", help=HOST_HELP)
    p.add_argument("--etcd", action="append", help=HOST_HELP)
    p.add_argument("--ssh-user")
    p.add_argument("--ssh-key", help="private key file, on the inventory host")
    p.add_argument("--group-vars", help="YAML file of Kubespray variables (group all)")
    p.add_argument("--domain", help="label domain (default nodeagent.io)")
    p.add_argument("--families", help="label families for node_labels, e.g. own,gfd")
    p.add_argument("--label", action="append", help="key=value added to every node")
    p.add_argument(
        "--taint",
        action="append",
        help="key=value:Effect (repeatable; default <domain>/validating=true:"
        "NoSchedule; 'none' for no taint on update)",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--auto-join", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--node-network",
        metavar="CIDR",
        help="take each node's Kubespray address from what its agent reported inside this "
        "network (default: its default route's address; '' on update goes back to that)",
    )
    p.add_argument(
        "--gpu-driver",
        choices=("host", "operator"),
        help="who owns the nodes' NVIDIA driver unless a profile or node says otherwise "
        "(default host; operator: the GPU Operator, see `admin export gpu-operator`)",
    )
    p.add_argument(
        "--ansible-venv",
        metavar="PATH",
        help="an existing virtualenv to run this cluster's Kubespray with (default: one "
        "the inventory makes from the Kubespray tree's requirements.txt; '' on update "
        "goes back to that)",
    )


def _register_clusters(admin_sub: Any) -> None:
    clusters = admin_sub.add_parser("clusters", help="Kubespray clusters nodes join")
    sub = clusters.add_subparsers(dest="clusters_command", required=True, metavar="ACTION")
    _cluster_flags(_command(sub, "create", kubespray_cmd.clusters_create), create=True)
    _cluster_flags(_command(sub, "update", kubespray_cmd.clusters_update), create=False)
    _command(sub, "list", kubespray_cmd.clusters_list)
    _command(sub, "show", kubespray_cmd.clusters_show).add_argument("name")
    p = _command(
        sub,
        "set-kubeconfig",
        kubespray_cmd.clusters_set_kubeconfig,
        help="the cluster's kubeconfig (its admin.conf), kept by the service, never shown",
    )
    p.add_argument("name")
    p.add_argument("file")


def _register_exports(admin_sub: Any) -> None:
    export = admin_sub.add_parser("export", help="export the inventory for other tools")
    ex_sub = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    for name, fmt, text in (
        ("kueue-topology", "kueue", "a Kueue Topology over the tier labels"),
        ("slurm-topology", "slurm", "Slurm topology.conf from the fleet grouping"),
        ("fabric", "json", "the fleet grouping itself (JSON)"),
    ):
        p = _command(ex_sub, name, partial(_export_topology, fmt), output=False, help=text)
        p.add_argument("--cluster", help="only nodes assigned to this cluster")
        p.add_argument("--domain", help="label domain (default nodeagent.io)")
    p = _command(
        ex_sub,
        "kubespray",
        kubespray_cmd.export_kubespray,
        output=False,
        help="hosts.yaml (and a dynamic inventory script)",
    )
    p.add_argument("--cluster", required=True)
    # the inventory is a document, not a table: table (admin's default) prints it as YAML
    add_output(p, ["yaml", "json"], default="yaml", inherit=True)
    p.add_argument(
        "-f", "--file", default="-", help="file to write the inventory to (default stdout)"
    )
    p.add_argument("--script", help="also write an executable dynamic inventory here")
    p = _command(
        ex_sub,
        "gpu-operator",
        kubespray_cmd.export_gpu_operator,
        output=False,
        help="the GPU Operator's kernel-module ConfigMap and Helm values (YAML)",
    )
    p.add_argument("--cluster", required=True)


def _register_join(admin_sub: Any) -> None:
    join = admin_sub.add_parser("join", help="join READY nodes to their Kubespray cluster")
    j_sub = join.add_subparsers(dest="join_command", required=True, metavar="ACTION")
    p = _job_command(
        j_sub, "start", kubespray_cmd.join_start, nodes=("node",), help="start a job and follow it"
    )
    p.add_argument("--cluster", required=True)
    p.add_argument(
        "--node", action="append", help=f"{NODE_HELP} (repeatable; default: every READY node)"
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-wait", action="store_true", help="print the job and return")
    _command(j_sub, "list", kubespray_cmd.join_list).add_argument("--cluster")
    _job_command(j_sub, "show", kubespray_cmd.join_show).add_argument("id")
    _job_command(j_sub, "watch", kubespray_cmd.join_watch).add_argument("id")
    p = _job_command(j_sub, "cancel", kubespray_cmd.join_cancel)
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p = _job_command(j_sub, "retry", kubespray_cmd.join_retry)
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.add_argument("--no-wait", action="store_true")
