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

COMMAND_MODULES = (
    "nodeagent.cli.discover_cmd",
    "nodeagent.cli.agent_cmd",
    "nodeagent.cli.labels_cmd",
    "nodeagent.cli.inventory_cmd",
    "nodeagent.cli.tune_cmd",
    "nodeagent.cli.preflight_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodeagent", description="Provisioning agent for bare-metal GPU servers."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        print(f"nodeagent: error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
