"""`nodeagent admin clusters|node-address|export kubespray|join ...`: Kubespray clusters,
their inventory, and join jobs, through the inventory service."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, CliError
from nodeagent.cli.inventory_cmd import _admin_stub, _call, _emit

HOST_HELP = "NAME[=IP][,access_ip=IP][,ansible_host=HOST] (repeatable)"


def _host(spec: str) -> Any:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    first, *rest = spec.split(",")
    name, _, ip = first.partition("=")
    host = ipb.KubesprayHost(name=name, ip=ip)
    for item in rest:
        key, _, value = item.partition("=")
        if key not in ("access_ip", "ansible_host"):
            raise CliError(f"host {spec!r}: unknown field {key!r} (access_ip, ansible_host)")
        setattr(host, key, value)
    return host


def _cluster_from_args(args: argparse.Namespace, current: Any = None) -> tuple[Any, list[str]]:
    """The Cluster message and the fields the command line gave (over `current`, the
    cluster as it is, for an update)."""
    import yaml
    from google.protobuf import json_format

    from nodeagent.api.v1 import inventory_pb2 as ipb

    c = ipb.Cluster(name=args.name)
    fields = []
    for flag, name in (
        ("kubespray_dir", "kubespray_dir"),
        ("ssh_user", "ssh_user"),
        ("ssh_key", "ssh_key_path"),
        ("batch_size", "batch_size"),
        ("auto_join", "auto_join"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(c, name, os.path.abspath(value) if name.endswith(("_dir", "_path")) else value)
            fields.append(name)
    for group in ("control_plane", "etcd"):
        hosts = getattr(args, group)
        if hosts is not None:
            getattr(c, group).extend(_host(h) for h in hosts)
            fields.append(group)
    if args.group_vars:
        try:
            data = yaml.safe_load(Path(args.group_vars).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"--group-vars {args.group_vars}: {exc}") from None
        if not isinstance(data, dict):
            raise CliError(f"--group-vars {args.group_vars}: not a mapping of variables")
        json_format.ParseDict(json.loads(json.dumps(data, default=str)), c.group_vars)
        fields.append("group_vars")
    policy_flags = (args.domain, args.families, args.label, args.taint)
    if any(v is not None for v in policy_flags):
        p = c.label_policy
        if current is not None:  # update: change only what was given
            p.CopyFrom(current.label_policy)
        if args.domain:
            p.domain = args.domain
        if args.families:
            del p.families[:]
            p.families.extend(f.strip() for f in args.families.split(",") if f.strip())
        if args.label is not None:
            p.labels.clear()
        for item in args.label or []:
            key, _, value = item.partition("=")
            p.labels[key] = value
        if args.taint is not None:
            del p.taints[:]
            p.taints.extend(t for t in args.taint if t and t != "none")
        fields.append("label_policy")
    return c, fields


def _cluster_rows(clusters: Any) -> list[list[str]]:
    return [
        [
            c.name,
            c.kubespray_dir or "-",
            ",".join(h.name for h in c.control_plane) or "-",
            str(len(c.etcd)),
            str(c.batch_size),
            "yes" if c.auto_join else "no",
            ",".join(c.label_policy.taints) or "-",
        ]
        for c in clusters
    ]


CLUSTER_HEADERS = ["NAME", "KUBESPRAY", "CONTROL PLANE", "ETCD", "BATCH", "AUTO-JOIN", "TAINTS"]


def _cmd_clusters(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    action = args.clusters_command
    if action == "list":
        resp = _call(args, "ListClusters", ipb.ListClustersRequest())
        _emit(args, resp, _cluster_rows(resp.clusters), CLUSTER_HEADERS)
        return EXIT_OK
    if action == "show":
        c = _call(args, "GetCluster", ipb.GetClusterRequest(name=args.name))
    elif action == "create":
        c, _ = _cluster_from_args(args)
        c = _call(args, "CreateCluster", c)
    else:
        current = _call(args, "GetCluster", ipb.GetClusterRequest(name=args.name))
        c, fields = _cluster_from_args(args, current)
        if not fields:
            raise CliError("nothing to update: give at least one setting")
        c = _call(args, "UpdateCluster", ipb.UpdateClusterRequest(cluster=c, fields=fields))
    if args.output == "table" and action == "show":
        from nodeagent.cli import render

        sys.stdout.write(render.to_yaml(c))
        return EXIT_OK
    _emit(args, c, _cluster_rows([c]), CLUSTER_HEADERS)
    return EXIT_OK


def _cmd_node_address(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    addr = ipb.NodeAddress(
        node_id=args.node,
        ip=args.ip or "",
        access_ip=args.access_ip or "",
        ansible_host=args.ansible_host or "",
    )
    addr = _call(args, "SetNodeAddress", addr)
    row = [addr.node_id, addr.ansible_host or "-", addr.ip or "-", addr.access_ip or "-"]
    _emit(args, addr, [row], ["NODE", "ANSIBLE_HOST", "IP", "ACCESS_IP"])
    return EXIT_OK


def _write_atomic(path: Path, text: str, mode: int) -> None:
    from nodeagent.fsutil import write_atomic

    write_atomic(path, text, mode=mode)


def _cmd_export(args: argparse.Namespace) -> int:
    import grpc

    from nodeagent.cli.dynamic_inventory import fetch, script
    from nodeagent.inventory.kubespray import to_yaml

    channel, stub = _admin_stub(args)
    try:
        with channel:
            inventory, count, warnings = fetch(stub, args.cluster, args.timeout)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            print(f"nodeagent: {exc.details()}", file=sys.stderr)
            print("nodeagent: nothing written", file=sys.stderr)
            return EXIT_PROBLEM
        raise CliError(f"ExportKubespray: {exc.code().name}: {exc.details()}") from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.file == "-":
        sys.stdout.write(to_yaml(inventory))
    else:
        _write_atomic(Path(args.file), to_yaml(inventory), 0o644)
        print(f"wrote {args.file}: {count} node(s) in kube_node", file=sys.stderr)
    if args.script:
        defaults = {
            "inventory": args.inventory,
            **{name: os.path.abspath(getattr(args, name)) for name in ("cert", "key", "ca")},
        }
        _write_atomic(Path(args.script), script(args.cluster, defaults), 0o755)
        print(f"wrote {args.script} (ansible-playbook -i {args.script})", file=sys.stderr)
    return EXIT_OK


# --- join jobs ----------------------------------------------------------------------------

NODE_STATE = {0: "-", 1: "pending", 2: "running", 3: "JOINED", 4: "FAILED", 5: "cancelled"}


def _job_rows(jobs: Any) -> list[list[str]]:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    rows = []
    for j in jobs:
        joined = sum(n.state == ipb.JOB_NODE_JOINED for n in j.nodes)
        failed = sum(n.state == ipb.JOB_NODE_FAILED for n in j.nodes)
        rows.append(
            [
                j.id,
                j.cluster,
                ipb.JobState.Name(j.state).removeprefix("JOB_"),
                f"{j.current_batch}/{j.batches}",
                f"{joined}/{len(j.nodes)}",
                str(failed),
                j.created_at.ToJsonString(),
                j.message or "-",
            ]
        )
    return rows


JOB_HEADERS = ["ID", "CLUSTER", "STATE", "BATCH", "JOINED", "FAILED", "CREATED", "MESSAGE"]


def _print_nodes(job: Any) -> None:
    from nodeagent.cli import render

    rows = [
        [
            n.hostname,
            n.node_id,
            str(n.batch),
            NODE_STATE.get(n.state, "?"),
            n.failed_task or "-",
            (n.message or "-")[:120],
        ]
        for n in job.nodes
    ]
    print(render.table(rows, ["HOST", "NODE", "BATCH", "RESULT", "FAILED TASK", "MESSAGE"]))


def _render_event(ev: Any) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(ev.time.seconds))
    if ev.kind == "task":
        return f"{when}    {ev.message}"
    if ev.kind in ("node-joined", "node-failed"):
        result = "JOINED" if ev.kind == "node-joined" else f"FAILED  {ev.message}"
        return f"{when}  batch {ev.batch}: {ev.hostname} {result}"
    if ev.kind == "host-failed":
        return f"{when}    {ev.hostname or '?'}: {ev.message}"
    return f"{when}  {ev.kind}: {ev.message}"


def _watch(args: argparse.Namespace, job_id: str) -> int:
    """Follow the job's events until it ends; reconnects (with the last sequence) when the
    service restarts. Exit 0 when every node joined, 3 otherwise."""
    import grpc

    from nodeagent.api.v1 import inventory_pb2 as ipb

    seq, deadline = 0, 0.0
    while True:
        channel, stub = _admin_stub(args)
        try:
            with channel:
                for ev in stub.WatchJob(ipb.WatchJobRequest(id=job_id, after_sequence=seq)):
                    seq, deadline = ev.sequence, 0.0
                    if args.output == "json":
                        from nodeagent.cli import render

                        print(render.to_json(ev).replace("\n", " "), flush=True)
                    else:
                        print(_render_event(ev), flush=True)
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise CliError(f"WatchJob: {exc.code().name}: {exc.details()}") from None
            deadline = deadline or time.monotonic() + args.reconnect
            if time.monotonic() > deadline:
                raise CliError(f"WatchJob: the inventory is unreachable: {exc.details()}") from None
            print("(inventory unavailable; reconnecting)", file=sys.stderr, flush=True)
            time.sleep(1)
    job = _call(args, "GetJob", ipb.GetJobRequest(id=job_id))
    if args.output == "table":
        _print_nodes(job)
    return EXIT_OK if job.state == ipb.JOB_SUCCEEDED else EXIT_PROBLEM


def _cmd_join(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import inventory_pb2 as ipb

    action = args.join_command
    if action == "list":
        resp = _call(args, "ListJobs", ipb.ListJobsRequest(cluster=args.cluster or ""))
        _emit(args, resp, _job_rows(resp.jobs), JOB_HEADERS)
        return EXIT_OK
    if action in ("watch", "show"):
        if action == "watch":
            return _watch(args, args.id)
        job = _call(args, "GetJob", ipb.GetJobRequest(id=args.id))
        _emit(args, job, _job_rows([job]), JOB_HEADERS)
        if args.output == "table":
            _print_nodes(job)
        return EXIT_OK
    if action == "start":
        req = ipb.StartJoinRequest(
            cluster=args.cluster, node_ids=args.node or [], batch_size=args.batch_size or 0
        )
        job = _call(args, "StartJoin", req)
    elif action == "cancel":
        job = _call(args, "CancelJob", ipb.JobActionRequest(id=args.id, reason=args.reason))
    else:
        job = _call(args, "RetryJob", ipb.JobActionRequest(id=args.id, reason=args.reason))
    if action == "cancel" or args.no_wait:
        _emit(args, job, _job_rows([job]), JOB_HEADERS)
        return EXIT_OK
    print(
        f"job {job.id}: {len(job.nodes)} node(s) of cluster {job.cluster}, batches of "
        f"{job.batch_size}",
        file=sys.stderr,
        flush=True,
    )
    return _watch(args, job.id)


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


def register_admin(admin_sub: Any) -> None:
    """Add the Kubespray objects to `nodeagent admin` (called by inventory_cmd)."""
    clusters = admin_sub.add_parser("clusters", help="Kubespray clusters nodes join")
    sub = clusters.add_subparsers(dest="clusters_command", required=True, metavar="ACTION")
    _cluster_flags(sub.add_parser("create"), create=True)
    _cluster_flags(sub.add_parser("update"), create=False)
    sub.add_parser("list")
    sub.add_parser("show").add_argument("name")
    clusters.set_defaults(func=_cmd_clusters)

    p = admin_sub.add_parser("node-address", help="where Ansible reaches a node")
    p.add_argument("node")
    p.add_argument("--ip", help="the node's address (Kubespray `ip`, kubelet --node-ip)")
    p.add_argument("--access-ip", help="the address others use (default: --ip)")
    p.add_argument("--ansible-host", help="SSH target (default: --ip)")
    p.set_defaults(func=_cmd_node_address)

    export = admin_sub.add_parser("export", help="export the inventory for other tools")
    ex_sub = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    from nodeagent.cli.inventory_cmd import register_topology_exports

    register_topology_exports(ex_sub)  # kueue-topology, slurm-topology, fabric
    p = ex_sub.add_parser("kubespray", help="hosts.yaml (and a dynamic inventory script)")
    p.add_argument("--cluster", required=True)
    p.add_argument("-o", "--file", required=True, help="hosts.yaml to write ('-': stdout)")
    p.add_argument("--script", help="also write an executable dynamic inventory here")
    p.set_defaults(func=_cmd_export)

    join = admin_sub.add_parser("join", help="join READY nodes to their Kubespray cluster")
    j_sub = join.add_subparsers(dest="join_command", required=True, metavar="ACTION")
    p = j_sub.add_parser("start", help="start a job and follow it")
    p.add_argument("--cluster", required=True)
    p.add_argument("--node", action="append", help="node id (default: every READY node)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-wait", action="store_true", help="print the job and return")
    p.add_argument("--reconnect", type=float, default=300, help=argparse.SUPPRESS)
    p = j_sub.add_parser("list")
    p.add_argument("--cluster")
    for action in ("show", "watch", "cancel", "retry"):
        p = j_sub.add_parser(action)
        p.add_argument("id")
        if action in ("cancel", "retry"):
            p.add_argument("--reason", default="")
        if action == "retry":
            p.add_argument("--no-wait", action="store_true")
        p.add_argument("--reconnect", type=float, default=300, help=argparse.SUPPRESS)
    join.set_defaults(func=_cmd_join)
