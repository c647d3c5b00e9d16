"""The handlers of `nodeagent admin clusters|node-address|export kubespray|join ...`:
Kubespray clusters, their inventory, and join jobs, through the inventory service (the
tree that binds them to their subcommands is admin_cmd)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.cli import render
from nodeagent.cli.admin_client import AdminClient
from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, CliError


def _host(spec: str) -> Any:
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

    c = ipb.Cluster(name=args.name)
    fields = []
    for flag, name in (
        ("kubespray_dir", "kubespray_dir"),
        ("ssh_user", "ssh_user"),
        ("ssh_key", "ssh_key_path"),
        ("batch_size", "batch_size"),
        ("auto_join", "auto_join"),
        ("gpu_driver", "gpu_driver"),
        ("node_network", "node_network"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(c, name, os.path.abspath(value) if name.endswith(("_dir", "_path")) else value)
            fields.append(name)
    if args.ansible_venv is not None:
        c.ansible_venv = os.path.abspath(args.ansible_venv) if args.ansible_venv else ""
        fields.append("ansible_venv")
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
            c.kubespray_release or "-",
            _ansible_column(c),
            c.api_server if c.kubeconfig_set else "-",  # where the reconciler asks
        ]
        for c in clusters
    ]


def _ansible_column(c: Any) -> str:
    """The ansible-core range the release declares, and what the cluster's environment has
    (or UNUSABLE: the pip error is in `clusters show`)."""
    wanted = (
        f">={c.ansible_min_version},<{c.ansible_max_version}"
        if c.ansible_min_version
        else "no declared range"
    )
    if c.ansible_env_error:
        return f"{wanted}; UNUSABLE"
    return f"{wanted}; core {c.ansible_core_version or 'at first join'}"


CLUSTER_HEADERS = [
    "NAME",
    "KUBESPRAY",
    "CONTROL PLANE",
    "ETCD",
    "BATCH",
    "AUTO-JOIN",
    "TAINTS",
    "RELEASE",
    "ANSIBLE",
    "API SERVER",
]


def clusters_list(client: AdminClient, args: argparse.Namespace) -> int:
    resp = client.call("ListClusters", ipb.ListClustersRequest())
    return client.emit(resp, _cluster_rows(resp.clusters), CLUSTER_HEADERS)


def clusters_show(client: AdminClient, args: argparse.Namespace) -> int:
    """As a table, the whole cluster in YAML: its settings do not fit a row."""
    c = client.call("GetCluster", ipb.GetClusterRequest(name=args.name))
    if client.output == "table":
        sys.stdout.write(render.to_yaml(c))
        return EXIT_OK
    return client.emit(c, _cluster_rows([c]), CLUSTER_HEADERS)


def clusters_set_kubeconfig(client: AdminClient, args: argparse.Namespace) -> int:
    """The cluster's kubeconfig, from a file: the service keeps it and never shows it."""
    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    c = client.call("SetKubeconfig", ipb.SetKubeconfigRequest(cluster=args.name, kubeconfig=text))
    return client.emit(c, _cluster_rows([c]), CLUSTER_HEADERS)


def clusters_create(client: AdminClient, args: argparse.Namespace) -> int:
    c, _ = _cluster_from_args(args)
    c = client.call("CreateCluster", c)
    return client.emit(c, _cluster_rows([c]), CLUSTER_HEADERS)


def clusters_update(client: AdminClient, args: argparse.Namespace) -> int:
    current = client.call("GetCluster", ipb.GetClusterRequest(name=args.name))
    c, fields = _cluster_from_args(args, current)
    if not fields:
        raise CliError("nothing to update: give at least one setting")
    c = client.call("UpdateCluster", ipb.UpdateClusterRequest(cluster=c, fields=fields))
    return client.emit(c, _cluster_rows([c]), CLUSTER_HEADERS)


def node_address(client: AdminClient, args: argparse.Namespace) -> int:
    addr = ipb.NodeAddress(
        node_id=args.node,
        ip=args.ip or "",
        access_ip=args.access_ip or "",
        ansible_host=args.ansible_host or "",
    )
    addr = client.call("SetNodeAddress", addr)
    row = [addr.node_id, addr.ansible_host or "-", addr.ip or "-", addr.access_ip or "-"]
    return client.emit(addr, [row], ["NODE", "ANSIBLE_HOST", "IP", "ACCESS_IP"])


def export_gpu_operator(client: AdminClient, args: argparse.Namespace) -> int:
    """The kernel-module ConfigMap and Helm values the GPU Operator needs for the cluster."""
    resp = client.call("ExportGpuOperator", ipb.ExportGpuOperatorRequest(cluster=args.cluster))
    sys.stdout.write(resp.yaml)
    if not resp.nodes:
        print(
            f"nodeagent: no node is assigned to cluster {args.cluster} "
            f"(nodeagent admin nodes update NODE --cluster {args.cluster})",
            file=sys.stderr,
        )
    return EXIT_OK


def _write_atomic(path: Path, text: str, mode: int) -> None:
    from nodeagent.fsutil import write_atomic

    write_atomic(path, text, mode=mode)


def export_kubespray(client: AdminClient, args: argparse.Namespace) -> int:
    import grpc

    from nodeagent.cli.ansible_inventory import fetch, script
    from nodeagent.inventory.kubespray import to_yaml

    try:
        with client.inventory_stub() as stub:
            inventory, count, warnings = fetch(stub, args.cluster, client.timeout)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            print(f"nodeagent: {exc.details()}", file=sys.stderr)
            print("nodeagent: nothing written", file=sys.stderr)
            return EXIT_PROBLEM
        raise CliError(f"ExportKubespray: {exc.code().name}: {exc.details()}") from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = json.dumps(inventory, indent=2) + "\n" if client.output == "json" else to_yaml(inventory)
    if args.file == "-":
        sys.stdout.write(text)
    else:
        _write_atomic(Path(args.file), text, 0o644)
        print(f"wrote {args.file}: {count} node(s) in kube_node", file=sys.stderr)
    if not count:
        print(f"nodeagent: {_why_empty(client, args.cluster, warnings)}", file=sys.stderr)
    if args.script:
        defaults = {
            "inventory": client.address,
            **{name: os.path.abspath(getattr(client, name)) for name in ("cert", "key", "ca")},
        }
        _write_atomic(Path(args.script), script(args.cluster, defaults), 0o755)
        print(f"wrote {args.script} (ansible-playbook -i {args.script})", file=sys.stderr)
    return EXIT_OK


def _why_empty(client: AdminClient, cluster: str, warnings: list[str]) -> str:
    """Why an export holds no node: every candidate was left out (the warnings say which
    and why), or none is assigned, or none of those assigned is in an exported state."""
    if warnings:
        return (
            f"no node exported: {len(warnings)} node(s) of cluster {cluster} left out "
            "(the warnings above say why)"
        )
    nodes = client.list_nodes(cluster=cluster)
    if not nodes:
        return (
            f"no node exported: no node is assigned to cluster {cluster} "
            f"(nodeagent admin nodes update NODE --cluster {cluster})"
        )
    states = sorted({ipb.NodeState.Name(n.state) for n in nodes})
    return (
        f"no node exported: {len(nodes)} node(s) assigned to cluster {cluster}, none READY, "
        f"JOINING or JOINED (they are {', '.join(states)}; nodeagent admin nodes list "
        f"--cluster {cluster} shows why)"
    )


# --- join jobs ----------------------------------------------------------------------------

NODE_STATE = {0: "-", 1: "pending", 2: "running", 3: "JOINED", 4: "FAILED", 5: "cancelled"}


def _job_rows(jobs: Any) -> list[list[str]]:
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
                render.timestamp(j.created_at),
                j.ansible_core_version or "-",
                j.message or "-",
            ]
        )
    return rows


JOB_HEADERS = [
    "ID",
    "CLUSTER",
    "STATE",
    "BATCH",
    "JOINED",
    "FAILED",
    "CREATED",
    "ANSIBLE-CORE",
    "MESSAGE",
]


def _print_nodes(job: Any) -> None:
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


def _watch(client: AdminClient, job_id: str, reconnect: float) -> int:
    """Follow the job's events until it ends; reconnects (with the last sequence) when the
    service restarts. Exit 0 when every node joined, 3 otherwise."""
    import grpc

    seq, deadline = 0, 0.0
    while True:
        try:
            with client.inventory_stub() as stub:
                for ev in stub.WatchJob(ipb.WatchJobRequest(id=job_id, after_sequence=seq)):
                    seq, deadline = ev.sequence, 0.0
                    if client.output == "table":
                        print(_render_event(ev), flush=True)
                    else:
                        sys.stdout.write(render.stream_item(ev, client.output))
                        sys.stdout.flush()
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise CliError(f"WatchJob: {exc.code().name}: {exc.details()}") from None
            deadline = deadline or time.monotonic() + reconnect
            if time.monotonic() > deadline:
                raise CliError(f"WatchJob: the inventory is unreachable: {exc.details()}") from None
            print("(inventory unavailable; reconnecting)", file=sys.stderr, flush=True)
            time.sleep(1)
    job = client.call("GetJob", ipb.GetJobRequest(id=job_id))
    if client.output == "table":
        _print_nodes(job)
    return EXIT_OK if job.state == ipb.JOB_SUCCEEDED else EXIT_PROBLEM


def join_list(client: AdminClient, args: argparse.Namespace) -> int:
    resp = client.call("ListJobs", ipb.ListJobsRequest(cluster=args.cluster or ""))
    return client.emit(resp, _job_rows(resp.jobs), JOB_HEADERS)


def join_show(client: AdminClient, args: argparse.Namespace) -> int:
    job = client.call("GetJob", ipb.GetJobRequest(id=args.id))
    client.emit(job, _job_rows([job]), JOB_HEADERS)
    if client.output == "table":
        _print_nodes(job)
    return EXIT_OK


def join_watch(client: AdminClient, args: argparse.Namespace) -> int:
    return _watch(client, args.id, args.reconnect)


def join_cancel(client: AdminClient, args: argparse.Namespace) -> int:
    job = client.call("CancelJob", ipb.JobActionRequest(id=args.id, reason=args.reason))
    return client.emit(job, _job_rows([job]), JOB_HEADERS)


def join_start(client: AdminClient, args: argparse.Namespace) -> int:
    req = ipb.StartJoinRequest(
        cluster=args.cluster, node_ids=args.node or [], batch_size=args.batch_size or 0
    )
    return _follow(client, args, client.call("StartJoin", req))


def join_retry(client: AdminClient, args: argparse.Namespace) -> int:
    req = ipb.JobActionRequest(id=args.id, reason=args.reason)
    return _follow(client, args, client.call("RetryJob", req))


def _follow(client: AdminClient, args: argparse.Namespace, job: Any) -> int:
    """A job just started: watch it to the end, unless --no-wait."""
    if args.no_wait:
        return client.emit(job, _job_rows([job]), JOB_HEADERS)
    print(
        f"job {job.id}: {len(job.nodes)} node(s) of cluster {job.cluster}, batches of "
        f"{job.batch_size}",
        file=sys.stderr,
        flush=True,
    )
    return _watch(client, job.id, args.reconnect)
