"""The `nodeagent` command line.

Exit codes (contract): 0 ok, 1 error, 2 usage, 3 ran fine but found a problem.
Errors are one line on stderr; `--debug` adds the traceback. Heavy modules are
imported inside the command that needs them so `nodeagent discover` starts fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PROBLEM = 0, 1, 2, 3


class CliError(Exception):
    """An error whose message is already the one line the user should read."""


def _cmd_discover(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.hardware.inventory import discover
    from nodeagent.host import open_root

    with open_root(args.root) as root:
        inv = discover(root)
    formatters: dict[str, Callable[..., str]] = {
        "json": render.to_json,
        "yaml": render.to_yaml,
        "table": render.inventory_table,
        "topo": render.topo_matrix,
    }
    text = formatters[args.output](inv)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    failed = [c.name for c in inv.collectors if not c.success]
    if failed and args.output != "table":
        print(f"warning: collectors with errors: {', '.join(failed)} (see 'collectors')",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _cmd_snapshot_capture(args: argparse.Namespace) -> int:
    from nodeagent.hardware.snapshot import capture
    from nodeagent.host import open_root

    with open_root(args.root) as root:
        result = capture(root, args.output)
    print(f"wrote {result.path}: {result.members} entries, {result.bytes_written} bytes"
          f"{', probes: ' + ', '.join(result.probes) if result.probes else ''}")  # fmt: skip
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodeagent", description="Provisioning agent for bare-metal GPU servers."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("discover", help="print the hardware inventory")
    p.add_argument("--root", help="a directory laid out like / or a snapshot archive")
    p.add_argument("-o", "--output", choices=["json", "yaml", "table", "topo"], default="table")
    p.set_defaults(func=_cmd_discover)

    snap = sub.add_parser("snapshot", help="capture what discovery reads, for support cases")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    p = snap_sub.add_parser("capture", help="write a snapshot archive (tar.gz)")
    p.add_argument("-o", "--output", required=True, help="archive to write, e.g. node.tar.gz")
    p.add_argument("--root", help="capture from this root instead of the live machine")
    p.set_defaults(func=_cmd_snapshot_capture)
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
