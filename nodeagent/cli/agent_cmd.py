"""`nodeagent serve` (the daemon) and `nodeagent agent ...` (admin client on the node)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_ERROR, EXIT_OK, CliError, add_output

DEFAULT_SOCKET = "/run/nodeagent/agent.sock"


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from nodeagent.agent import config, daemon, logs

    try:
        cfg = config.load(args.config, required=args.config is not None)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None
    logs.setup(cfg.log_format, cfg.log_level)
    agent = daemon.Agent(cfg, args.config)
    try:
        asyncio.run(agent.run())
    except daemon.StartupError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _channel(socket_path: str) -> Any:
    import grpc

    return grpc.insecure_channel(f"unix:{socket_path}")


def _call(socket_path: str, method: str, request: Any, timeout: float) -> Any:
    import grpc

    from nodeagent.api.v1 import agent_pb2_grpc

    with _channel(socket_path) as channel:
        stub = agent_pb2_grpc.NodeAgentStub(channel)
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise CliError(
                    f"no agent answers on {socket_path} (is nodeagent.service running?)"
                ) from None
            raise CliError(f"{method}: {code.name}: {exc.details()}") from None


def _cmd_status(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import agent_pb2
    from nodeagent.cli import render

    status = _call(args.socket, "GetStatus", agent_pb2.GetStatusRequest(), args.timeout)
    if args.output != "table":
        sys.stdout.write(render.message(status, args.output))
        return EXIT_OK
    print(
        f"phase      {status.phase}\nversion    {status.version}\n"
        f"uptime     {status.uptime_seconds:.0f}s\nroot       {status.root}\n"
        f"discovery  {render.timestamp(status.last_discovery)} "
        f"({status.last_discovery_seconds * 1000:.1f} ms)\n"
        f"hardware   {status.inventory_hash[:16]}\nevents     {status.events_emitted} "
        f"({status.watchers} watchers)"
    )
    node = f" (node {status.node_id})" if status.node_id else ""
    print(f"inventory  {status.inventory_state or 'not-configured'}{node}")
    if status.last_error:
        print(f"error      {status.last_error}")
    rows = [
        [
            c.name,
            "ok" if c.success else "FAILED",
            f"{c.duration_seconds * 1000:.2f}",
            "; ".join(c.errors),
        ]
        for c in status.collectors
    ]
    print(render.table(rows, ["COLLECTOR", "RESULT", "MS", "ERRORS"]))
    return EXIT_OK


def _cmd_inventory(args: argparse.Namespace) -> int:
    from nodeagent.api.v1 import agent_pb2
    from nodeagent.cli import render

    resp = _call(
        args.socket,
        "GetInventory",
        agent_pb2.GetInventoryRequest(refresh=args.refresh),
        args.timeout,
    )
    if args.output != "table":
        sys.stdout.write(render.message(resp.inventory, args.output))
    else:
        sys.stdout.write(render.inventory_table(resp.inventory))
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    import grpc

    from nodeagent.api.v1 import agent_pb2, agent_pb2_grpc
    from nodeagent.cli import render

    with _channel(args.socket) as channel:
        stub = agent_pb2_grpc.NodeAgentStub(channel)
        try:
            for event in stub.WatchEvents(agent_pb2.WatchEventsRequest(kinds=args.kind or [])):
                if args.output != "table":
                    sys.stdout.write(render.stream_item(event, args.output))
                    sys.stdout.flush()
                else:
                    when = time.strftime("%H:%M:%S", time.localtime(event.time.seconds))
                    count = f" (x{event.count})" if event.count > 1 else ""
                    print(
                        f"{when}  {event.kind:<10} {event.device:<14} {event.message}{count}",
                        flush=True,
                    )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise CliError(f"no agent answers on {args.socket}") from None
            raise CliError(f"WatchEvents: {exc.code().name}: {exc.details()}") from None
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_ERROR


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from nodeagent.agent import bootstrap

    opts = bootstrap.BootstrapOptions(
        inventory=args.inventory,
        token=_token(args),
        ca_hash=args.ca_hash,
        bootstrap_address=args.bootstrap_address or "",
        config_dir=args.config_dir,
        state_dir=args.state_dir,
        root=args.root,
        tuning=args.tuning,
        reboot=args.reboot,
        commands=args.commands or "",
    )
    try:
        # flushed per line: cloud-init's log is a pipe, and a first boot's tuning takes minutes
        bootstrap.run(opts, log=lambda line: print(line, flush=True))
    except bootstrap.BootstrapError as exc:
        raise CliError(f"bootstrap: {exc}") from None
    print("bootstrap complete: nodeagent.service takes over")
    return EXIT_OK


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            return str(Path(args.token_file).read_text().strip())
        except OSError as exc:
            raise CliError(f"--token-file: {exc}") from None
    if not args.token:
        raise CliError("give --token or --token-file")
    return str(args.token)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bootstrap", help="first boot: configure, discover, enrol, tune (idempotent)"
    )
    p.add_argument("--inventory", required=True, help="inventory host:port (mTLS port)")
    p.add_argument("--bootstrap-address", help="enrolment host:port (default: inventory port + 1)")
    p.add_argument("--token", help="bootstrap token (prefer --token-file: argv is visible)")
    p.add_argument("--token-file")
    p.add_argument("--ca-hash", required=True, help="sha256:... pin of the inventory CA")
    p.add_argument("--config-dir", default="/etc/nodeagent")
    p.add_argument("--state-dir", default="/var/lib/nodeagent")
    p.add_argument("--root", default="/")
    p.add_argument("--tuning", choices=["apply", "check", "skip"], default="apply")
    p.add_argument("--reboot", choices=["never", "auto"], default="never")
    p.add_argument(
        "--commands", help="tune apply's command stand-ins, for a --root that is not / (tests)"
    )
    p.set_defaults(func=_cmd_bootstrap)

    p = sub.add_parser("serve", help="run the node agent daemon")
    p.add_argument("--config", help="agent.toml (default /etc/nodeagent/agent.toml if present)")
    p.set_defaults(func=_cmd_serve)

    agent = sub.add_parser("agent", help="talk to the local agent over its socket")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    actions = (
        ("status", _cmd_status, "phase, uptime, last discovery"),
        ("inventory", _cmd_inventory, "the cached inventory"),
        ("watch", _cmd_watch, "stream hardware and health events"),
    )
    for name, func, text in actions:
        p = agent_sub.add_parser(name, help=text)
        p.add_argument("--socket", default=DEFAULT_SOCKET)
        add_output(p)
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(func=func)
        if name == "inventory":
            p.add_argument("--refresh", action="store_true", help="run a new discovery first")
        if name == "watch":
            p.add_argument("--kind", action="append", help="only this event kind (repeatable)")
