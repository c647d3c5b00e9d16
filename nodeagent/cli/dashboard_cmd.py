"""`nodeagent admin dashboard`: the web dashboard on the admin's own machine, reading the
inventory with the admin's certificate as every other admin command does.

Only the flags and the checks that must come before anything is bound live here; the
dashboard itself is `nodeagent.dashboard`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeagent.cli.admin_client import CREDENTIALS, AdminClient
from nodeagent.cli.common import EXIT_OK, CliError

DEFAULT_LISTEN = "127.0.0.1:8080"


def register(admin_sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """`command` is admin_cmd's leaf maker (passed in: this module must not import it)."""
    p = command(
        admin_sub,
        "dashboard",
        run,
        output=False,
        help="serve a read-only web dashboard of the fleet on this machine",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve it (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback address: whoever reaches it reads the fleet as you",
    )
    # how often the whole node list and the topology are read again (the tests shorten it)
    p.add_argument("--refresh", type=float, default=15.0, help=argparse.SUPPRESS)


def run(client: AdminClient, args: argparse.Namespace) -> int:
    from nodeagent.dashboard import server
    from nodeagent.dashboard.source import Credentials, Source

    try:
        host, port = server.split_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.allow_remote:
        problem = server.loopback_problem(host)
        if problem:
            raise CliError(
                f"refusing to serve the dashboard on {args.listen}: {problem}. It reads the "
                "fleet with your certificate, so anyone who reaches it could too; give "
                "--allow-remote to serve it beyond this machine"
            )
    paths = {}
    for name in CREDENTIALS:
        value = getattr(client, name)
        if not value:
            raise CliError(f"--{name} is required (or NODEAGENT_ADMIN_{name.upper()})")
        if not Path(value).is_file():
            raise CliError(f"--{name}: no such file: {value}")
        paths[name] = Path(value)
    creds = Credentials(client.address, paths["cert"], paths["key"], paths["ca"], client.timeout)
    source = Source(creds, refresh_seconds=args.refresh, topology_seconds=max(args.refresh, 2.0))

    def ready(url: str) -> None:
        status = source.status()
        print(
            f"dashboard: {url} (inventory {client.address} as {status.subject or '?'}; "
            "Ctrl-C stops it)",
            flush=True,
        )

    try:
        server.serve(source, host, port, check_host=not args.allow_remote, ready=ready)
    except OSError as exc:
        raise CliError(f"cannot serve the dashboard on {args.listen}: {exc.strerror}") from None
    return EXIT_OK
