"""The `nodeagent` command line.

Exit codes (contract): 0 ok, 1 error, 2 usage, 3 ran fine but found a problem.
Errors are one line on stderr; `--debug` adds the traceback. Heavy modules are
imported inside the command that needs them so `nodeagent discover` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from nodeagent.cli.common import EXIT_ERROR, EXIT_OK, CliError

# module -> the top-level commands it registers
COMMAND_MODULES = {
    "nodeagent.cli.discover_cmd": ("discover", "snapshot"),
    "nodeagent.cli.agent_cmd": ("serve", "agent", "bootstrap"),
    "nodeagent.cli.labels_cmd": ("labels", "fabric"),
    "nodeagent.cli.inventory_cmd": ("inventory",),
    "nodeagent.cli.admin_cmd": ("admin",),
    "nodeagent.cli.tune_cmd": ("tune",),
    "nodeagent.cli.preflight_cmd": ("preflight",),
    "nodeagent.cli.validate_cmd": ("validate",),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given argv, only the module of the command asked for is imported.

    `nodeagent discover` must start fast (it is measured against lshw): the other
    command modules pull in labels, tuning and gRPC code it never uses. Help and
    unknown commands get every module.
    """
    parser = argparse.ArgumentParser(
        prog="nodeagent", description="Provisioning agent for bare-metal GPU servers."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    words = [a for a in (argv or []) if not a.startswith("-")]
    wanted = [m for m, cmds in COMMAND_MODULES.items() if words and words[0] in cmds]
    for name in wanted or COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except (CliError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nodeagent: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            f"nodeagent: error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
