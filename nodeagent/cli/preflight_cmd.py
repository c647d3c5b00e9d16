"""`nodeagent preflight`: can this node join a Kubespray-built cluster? (exit 3 if not)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, CliError, add_output

STATUS = {1: "pass", 2: "WARN", 3: "FAIL", 4: "skip"}


def _fleet(args: argparse.Namespace) -> Any:
    """The inventory lookup for hostname uniqueness, from the agent's config and identity;
    None when the node is not enrolled (or --no-fleet)."""
    from nodeagent.agent import config as aconfig
    from nodeagent.agent.preflight_net import fleet_lookup

    if args.no_fleet:
        return None
    try:
        cfg = aconfig.load(args.config)
    except aconfig.ConfigError as exc:
        raise CliError(str(exc)) from None
    identity = Path(cfg.state_dir) / "identity"
    if not cfg.inventory.address or not (identity / "node.crt").exists():
        return None
    return fleet_lookup(cfg.inventory.address, identity)


def _configured_gpu_driver(args: argparse.Namespace) -> str:
    """The agent's `[tuning] gpu_driver`, else host (the profile's is the agent's to add:
    preflight does not discover and select a profile)."""
    from nodeagent.agent import config as aconfig

    try:
        return aconfig.load(args.config).tuning.gpu_driver or "host"
    except aconfig.ConfigError as exc:
        raise CliError(str(exc)) from None


def _cmd_preflight(args: argparse.Namespace) -> int:
    from nodeagent.agent import preflight
    from nodeagent.cli import render
    from nodeagent.host import open_root

    registries = list(args.registry or [])
    registries += [r for r in os.environ.get("NODEAGENT_REGISTRIES", "").split(",") if r]
    opts = preflight.Options(
        min_free_gib=args.min_free_gib,
        ports=args.port or (10250, 10256),
        registries=registries,
        fleet=_fleet(args),
        gpu_driver=args.gpu_driver or _configured_gpu_driver(args),
    )
    with open_root(args.root) as root:
        report = preflight.run(root, opts)
    if args.output != "table":
        sys.stdout.write(render.message(report, args.output))
    else:
        rows = [[c.name, STATUS.get(c.status, "?"), c.message] for c in report.checks]
        print(render.table(rows, ["CHECK", "STATUS", "FOUND"]))
        fixes = [c for c in report.checks if c.remedy]
        if fixes:
            print()
            for c in fixes:
                print(f"{c.name}: {c.remedy}")
        verdict = "ready to join" if report.ok else "NOT ready to join"
        print(f"\n{report.hostname or '(no hostname)'}: {verdict}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_PROBLEM


def register(sub: Any) -> None:
    p = sub.add_parser("preflight", help="check that this node can join a Kubespray cluster")
    p.add_argument("--root", help="a root directory or snapshot instead of /")
    add_output(p)
    p.add_argument(
        "--registry",
        action="append",
        help="HOST:PORT the cluster pulls images from (repeatable; also "
        "NODEAGENT_REGISTRIES=a:443,b:5000)",
    )
    p.add_argument(
        "--port",
        action="append",
        type=int,
        help="a port that must be free (default 10250 and 10256)",
    )
    p.add_argument(
        "--min-free-gib",
        type=float,
        default=20.0,
        help="free space under /var/lib below which the check fails",
    )
    p.add_argument("--config", help="agent.toml, for the inventory's hostname check")
    p.add_argument("--no-fleet", action="store_true", help="skip the fleet hostname check")
    p.add_argument(
        "--gpu-driver",
        choices=("host", "operator"),
        help="who owns the NVIDIA driver (default: agent.toml's [tuning] gpu_driver, else "
        "host); operator checks that no host NVIDIA module is loaded and nouveau is blacklisted",
    )
    p.set_defaults(func=_cmd_preflight)
