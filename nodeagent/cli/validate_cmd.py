"""`nodeagent validate`: acceptance tests on this node (exit 3 when a check fails).

Runs in this process, sharing the lock and the last report with the agent through the
state directory, so a run started here refuses one started over the API and the other way
round. Progress goes to stderr as each check ends; the report to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, CliError, add_output

LEVELS = ("quick", "standard", "long")
CHECK_NAMES = (
    "gpu-state",
    "dcgm-diag",
    "nccl-allreduce",
    "rdma-bandwidth",
    "nvme-health",
    "nvme-read",
    "rdma-link",
    "memory-edac",
)


def _state_dir(args: argparse.Namespace) -> str:
    if args.state_dir:
        return str(args.state_dir)
    from nodeagent.agent import config as aconfig

    try:
        return aconfig.load(args.config).state_dir
    except aconfig.ConfigError as exc:
        raise CliError(str(exc)) from None


def _table(report: Any) -> None:
    from nodeagent.acceptance.model import FAIL, VERDICT_NAMES
    from nodeagent.cli import render

    rows = [
        [c.name, VERDICT_NAMES[c.verdict], f"{c.duration_seconds:.2f}s", c.reason or "-"]
        for c in report.checks
    ]
    print(render.table(rows, ["CHECK", "RESULT", "TIME", "DETAIL"]))
    failing = [(c.name, m) for c in report.checks for m in c.measurements if m.verdict == FAIL]
    if failing:
        print()
        rows = [
            [name, m.subject, m.metric, f"{m.value:g} {m.unit}".strip(), m.threshold]
            for name, m in failing
        ]
        print(render.table(rows, ["CHECK", "SUBJECT", "METRIC", "VALUE", "THRESHOLD"]))


def _cmd_validate(args: argparse.Namespace) -> int:
    from nodeagent.acceptance import runner, store
    from nodeagent.api.v1 import validate_pb2 as vpb
    from nodeagent.cli import render
    from nodeagent.hardware.discover import discover
    from nodeagent.host import open_root
    from nodeagent.tuning import profiles

    def progress(event: vpb.ValidationEvent) -> None:
        if args.output == "table" and event.HasField("check"):
            from nodeagent.acceptance.model import VERDICT_NAMES

            c = event.check
            print(f"{c.name}: {VERDICT_NAMES[c.verdict]}", file=sys.stderr)

    state_dir = _state_dir(args)
    with open_root(args.root) as root:
        inv = discover(root)
        try:
            profile = profiles.resolve(args.profile, inv, profiles.profile_dirs(args.profiles_dir))
        except profiles.NoProfile as exc:
            if args.profile:
                raise CliError(str(exc)) from None
            profile = None  # no profile: defaults, and nothing is required
        opts = runner.Options(level=args.level or "", only=args.only or [], progress=progress)
        try:
            report = runner.run(root, inv, profile, state_dir, opts)
        except store.Busy as exc:
            raise CliError(str(exc)) from None
    if args.output == "json":
        sys.stdout.write(render.message(report, "json"))
    else:
        _table(report)
        verdict = "passed" if report.outcome == vpb.RUN_PASSED else f"FAILED ({report.reason})"
        print(f"\nacceptance {report.level}: {verdict}", file=sys.stderr)
    return EXIT_OK if report.outcome == vpb.RUN_PASSED else EXIT_PROBLEM


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="acceptance tests: prove the hardware performs")
    p.add_argument(
        "--level",
        choices=LEVELS,
        help="quick (sysfs, NVML), standard (+ DCGM, NCCL, ib_write_bw, fio), long "
        "(default: the level the profile requires)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=CHECK_NAMES,
        metavar="CHECK",
        help=f"run only this check (repeatable): {', '.join(CHECK_NAMES)}",
    )
    add_output(p, ("table", "json"))
    p.add_argument("--root", help="a root directory or snapshot instead of /")
    p.add_argument("--profile", help="profile name or file (default: by selector)")
    p.add_argument("--profiles-dir", help="look here first for profiles")
    p.add_argument(
        "--state-dir",
        help="where the lock and the last report live (default: the agent's state_dir)",
    )
    p.add_argument("--config", help="agent.toml, for its state_dir")
    p.set_defaults(func=_cmd_validate)
