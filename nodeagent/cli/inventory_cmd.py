"""`nodeagent inventory ...` (run the service, issue admin certificates) and
`nodeagent admin ...` (the admin client over mTLS)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, CliError


def _service_config(path: str | None) -> Any:
    from nodeagent.inventory import config

    try:
        return config.load(path)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from nodeagent.agent import logs
    from nodeagent.inventory.service import InventoryService

    cfg = _service_config(args.config)
    logs.setup(cfg.log_format, cfg.log_level)

    async def run() -> None:
        service = InventoryService(cfg)
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"serving on {cfg.listen} (mTLS) and {cfg.bootstrap_address} (enrolment); "
            f"CA pin {service.ca.pin}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await service.stop()

    asyncio.run(run())
    return EXIT_OK


def _ca(args: argparse.Namespace) -> Any:
    from nodeagent.inventory import pki

    cfg = _service_config(args.config)
    cert, key = cfg.ca_paths
    try:
        return pki.CertificateAuthority.load_or_create(cert, key, create=False)
    except (pki.PkiError, OSError) as exc:
        raise CliError(f"{exc} (run this where the inventory keeps its CA)") from None


def _cmd_issue_admin_cert(args: argparse.Namespace) -> int:
    from nodeagent import tlsutil

    ca = _ca(args)
    cert, key = ca.issue_client(args.name, args.role, days=args.days)
    out = Path(args.output)
    tlsutil.write_private(out / "admin.key", key)
    (out / "admin.crt").write_bytes(cert)
    (out / "ca.crt").write_bytes(ca.pem)
    print(f"wrote {out}/admin.crt, admin.key (0600), ca.crt for {args.role} {args.name!r}")
    return EXIT_OK


def _cmd_ca_hash(args: argparse.Namespace) -> int:
    print(_ca(args).pin)
    return EXIT_OK


# --- admin client -------------------------------------------------------------------------


def _admin_stub(args: argparse.Namespace) -> tuple[Any, Any]:
    from nodeagent.api import channels
    from nodeagent.api.v1 import inventory_pb2_grpc

    paths = {}
    for name in ("cert", "key", "ca"):
        value = getattr(args, name)
        if not value:
            raise CliError(f"--{name} is required (or NODEAGENT_ADMIN_{name.upper()})")
        try:
            paths[name] = Path(value).read_bytes()
        except OSError as exc:
            raise CliError(f"--{name}: {exc}") from None
    channel = channels.secure_channel(args.inventory, paths["ca"], paths["cert"], paths["key"])
    return channel, inventory_pb2_grpc.InventoryServiceStub(channel)


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    import grpc

    channel, stub = _admin_stub(args)
    with channel:
        try:
            return getattr(stub, method)(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            raise CliError(f"{method}: {exc.code().name}: {exc.details()}") from None


def _emit(args: argparse.Namespace, msg: Any, rows: list[list[str]], headers: list[str]) -> None:
    from nodeagent.cli import render

    if args.output == "json":
        print(render.to_json(msg))
    elif args.output == "yaml":
        sys.stdout.write(render.to_yaml(msg))
    else:
        print(render.table(rows, headers))


def _node_rows(nodes: Any) -> list[list[str]]:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    return [
        [
            n.id,
            n.hostname,
            ipb.NodeState.Name(n.state),
            n.assignment.pool or "-",
            n.assignment.cluster or "-",
            n.assignment.profile or "-",
            f"{n.gpu_count}x {n.gpu_model}" if n.gpu_count else "-",
            "yes" if n.reachable else "NO",
        ]
        for n in nodes
    ]


NODE_HEADERS = ["ID", "HOSTNAME", "STATE", "POOL", "CLUSTER", "PROFILE", "GPUS", "REACHABLE"]


def _cmd_nodes(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    action = args.nodes_command
    if action == "list":
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
        resp = _call(args, "ListNodes", request)
        _emit(args, resp, _node_rows(resp.nodes), NODE_HEADERS)
        return EXIT_OK
    if action == "show":
        node = _call(args, "GetNode", ipb.GetNodeRequest(node_id=args.node, events=args.events))
        rows = [
            [
                e.time.ToJsonString(),
                e.actor,
                ipb.NodeState.Name(e.from_state),
                ipb.NodeState.Name(e.to_state),
                e.reason,
            ]
            for e in node.events
        ]
        if args.output == "table":
            print(_render_node(node))
        _emit(args, node, rows, ["TIME", "ACTOR", "FROM", "TO", "REASON"])
        return EXIT_OK
    if action == "update":
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
        node = _call(
            args,
            "UpdateAssignment",
            ipb.UpdateAssignmentRequest(node_id=args.node, assignment=a, fields=fields),
        )
    elif action == "delete":
        _call(args, "DeleteNode", ipb.NodeActionRequest(node_id=args.node, reason=args.reason))
        print(f"deleted {args.node}")
        return EXIT_OK
    else:
        method = {"hold": "HoldNode", "release": "ReleaseNode", "retire": "RetireNode"}[action]
        node = _call(args, method, ipb.NodeActionRequest(node_id=args.node, reason=args.reason))
    _emit(args, node, _node_rows([node]), NODE_HEADERS)
    return EXIT_OK


def _render_node(node: Any) -> str:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    a = node.assignment
    return (
        f"node      {node.id}\nhostname  {node.hostname}\n"
        f"state     {ipb.NodeState.Name(node.state)}  {node.state_reason}\n"
        f"reachable {'yes' if node.reachable else 'NO'} (last seen "
        f"{node.last_seen.ToJsonString()}, phase {node.reported_phase or '-'})\n"
        f"assigned  pool={a.pool or '-'} role={a.role or '-'} cluster={a.cluster or '-'} "
        f"profile={a.profile or '-'}\n"
        f"hardware  {node.gpu_count}x {node.gpu_model or '-'}, "
        f"{len(node.inventory.rdma_devices)} RDMA, {len(node.inventory.nvme_controllers)} "
        f"NVMe, hash {node.inventory_hash[:12] or '-'}\n"
    )


def _fleet_call(args: argparse.Namespace, method: str, request: Any) -> Any:
    import grpc

    from nodeagent.api.v1 import fleet_pb2_grpc

    channel, _ = _admin_stub(args)
    with channel:
        try:
            return getattr(fleet_pb2_grpc.FleetServiceStub(channel), method)(
                request, timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise CliError(f"{method}: {exc.code().name}: {exc.details()}") from None


def _cmd_export_topology(args: argparse.Namespace) -> int:
    """`admin export kueue-topology|slurm-topology|fabric`: the fleet grouped by fabric."""
    from nodeagent.api.v1 import fleet_pb2

    fmt = {"kueue-topology": "kueue", "slurm-topology": "slurm", "fabric": "json"}[
        args.export_command
    ]
    resp = _fleet_call(
        args,
        "ExportTopology",
        fleet_pb2.ExportTopologyRequest(
            format=fmt, cluster=args.cluster or "", domain=args.domain or ""
        ),
    )
    sys.stdout.write(resp.text if resp.text.endswith("\n") else resp.text + "\n")
    return EXIT_OK


def _cmd_node_labels(args: argparse.Namespace) -> int:
    import json

    from nodeagent.api.v1 import fleet_pb2

    resp = _fleet_call(
        args,
        "GetNodeLabels",
        fleet_pb2.GetNodeLabelsRequest(node_id=args.node, domain=args.domain or ""),
    )
    if args.output == "table":
        width = max((len(k) for k in resp.labels), default=0)
        for key in sorted(resp.labels):
            print(f"{key.ljust(width)}  {resp.labels[key]}")
    else:
        print(json.dumps(dict(sorted(resp.labels.items())), indent=2))
    return EXIT_OK


def register_topology_exports(ex_sub: Any) -> None:
    """The fleet topology formats of `nodeagent admin export`."""
    for name, text in (
        ("kueue-topology", "a Kueue Topology over the tier labels"),
        ("slurm-topology", "Slurm topology.conf from the fleet grouping"),
        ("fabric", "the fleet grouping itself (JSON)"),
    ):
        p = ex_sub.add_parser(name, help=text)
        p.add_argument("--cluster", help="only nodes assigned to this cluster")
        p.add_argument("--domain", help="label domain (default nodeagent.io)")
        p.set_defaults(func=_cmd_export_topology)


def _cmd_tokens(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    def rows(tokens: Any) -> list[list[str]]:
        return [
            [
                t.id,
                t.expires_at.ToJsonString(),
                f"{t.uses}/{t.max_uses}",
                "yes" if t.revoked else "no",
                t.preset.pool or "-",
                t.preset.profile or "-",
                t.description,
            ]
            for t in tokens
        ]

    headers = ["ID", "EXPIRES", "USES", "REVOKED", "POOL", "PROFILE", "DESCRIPTION"]
    if args.tokens_command == "create":
        preset = ipb.Assignment(
            pool=args.pool or "", profile=args.profile or "", cluster=args.cluster or ""
        )
        resp = _call(
            args,
            "CreateToken",
            ipb.CreateTokenRequest(
                ttl_seconds=args.ttl,
                max_uses=args.max_uses,
                preset=preset,
                description=args.description or "",
            ),
        )
        if args.output == "table":
            print(resp.secret)  # shown once: the service keeps only its hash
            print(
                f"(token {resp.token.id}: {resp.token.max_uses} use(s), expires "
                f"{resp.token.expires_at.ToJsonString()})",
                file=sys.stderr,
            )
        else:
            _emit(args, resp, [], [])
        return EXIT_OK
    if args.tokens_command == "list":
        resp = _call(args, "ListTokens", ipb.ListTokensRequest())
        _emit(args, resp, rows(resp.tokens), headers)
        return EXIT_OK
    token = _call(args, "RevokeToken", ipb.RevokeTokenRequest(id=args.id))
    _emit(args, token, rows([token]), headers)
    return EXIT_OK


def register(sub: Any) -> None:
    inv = sub.add_parser("inventory", help="the central inventory service")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    p = inv_sub.add_parser("serve", help="run the inventory service")
    p.add_argument("--config", help="inventory.toml")
    p.set_defaults(func=_cmd_serve)
    p = inv_sub.add_parser("issue-admin-cert", help="make an admin client certificate")
    p.add_argument("--config", help="inventory.toml (to find the CA)")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=float, default=365)
    p.add_argument("-o", "--output", required=True, help="directory for admin.crt/admin.key")
    p.set_defaults(func=_cmd_issue_admin_cert)
    p = inv_sub.add_parser("ca-hash", help="print the CA pin agents bootstrap with")
    p.add_argument("--config")
    p.set_defaults(func=_cmd_ca_hash)

    admin = sub.add_parser("admin", help="administer the fleet through the inventory service")
    env = os.environ.get
    admin.add_argument("--inventory", default=env("NODEAGENT_INVENTORY", "localhost:7444"))
    admin.add_argument("--cert", default=env("NODEAGENT_ADMIN_CERT"))
    admin.add_argument("--key", default=env("NODEAGENT_ADMIN_KEY"))
    admin.add_argument("--ca", default=env("NODEAGENT_ADMIN_CA"))
    admin.add_argument("--timeout", type=float, default=30)
    admin.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="OBJECT")

    nodes = admin_sub.add_parser("nodes", help="list, show and change nodes")
    nodes_sub = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    p = nodes_sub.add_parser("list")
    for flag in ("--state", "--pool", "--gpu-model", "--cluster"):
        p.add_argument(flag)
    p.add_argument("--limit", type=int, default=1000)
    p = nodes_sub.add_parser("show")
    p.add_argument("node")
    p.add_argument("--events", type=int, default=50)
    p = nodes_sub.add_parser("update")
    p.add_argument("node")
    for flag in ("--pool", "--role", "--cluster", "--profile"):
        p.add_argument(flag)
    p.add_argument("--label", action="append", help="key=value (repeatable)")
    p.add_argument("--taint", action="append", help="key=value:Effect (repeatable)")
    for action in ("hold", "release", "retire", "delete"):
        p = nodes_sub.add_parser(action)
        p.add_argument("node")
        p.add_argument("--reason", default="")
    nodes.set_defaults(func=_cmd_nodes)
    p = nodes_sub.add_parser("labels", help="the node's labels, as its agent publishes them")
    p.add_argument("node")
    p.add_argument("--domain")
    p.set_defaults(func=_cmd_node_labels)

    toks = admin_sub.add_parser("tokens", help="bootstrap tokens")
    toks_sub = toks.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    p = toks_sub.add_parser("create")
    p.add_argument("--ttl", type=int, default=86400, help="seconds (default one day)")
    p.add_argument("--max-uses", type=int, default=1)
    for flag in ("--pool", "--profile", "--cluster", "--description"):
        p.add_argument(flag)
    toks_sub.add_parser("list")
    p = toks_sub.add_parser("revoke")
    p.add_argument("id")
    toks.set_defaults(func=_cmd_tokens)

    from nodeagent.cli import kubespray_cmd  # clusters, export kubespray, join

    kubespray_cmd.register_admin(admin_sub)
