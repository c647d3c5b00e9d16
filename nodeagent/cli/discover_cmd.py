"""`nodeagent discover` and `nodeagent snapshot capture`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from nodeagent.cli.common import EXIT_OK, OUTPUT_FORMATS, add_output


def _cmd_discover(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.hardware.discover import discover
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
        print(
            f"warning: collectors with errors: {', '.join(failed)} (see 'collectors')",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_snapshot_capture(args: argparse.Namespace) -> int:
    from nodeagent.hardware.snapshot import capture
    from nodeagent.host import open_root

    with open_root(args.root) as root:
        result = capture(root, args.file)
    print(
        f"wrote {result.path}: {result.members} entries, {result.bytes_written} bytes"
        f"{', probes: ' + ', '.join(result.probes) if result.probes else ''}"
    )
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("discover", help="print the hardware inventory")
    p.add_argument("--root", help="a directory laid out like / or a snapshot archive")
    add_output(p, [*OUTPUT_FORMATS, "topo"])
    p.set_defaults(func=_cmd_discover)

    snap = sub.add_parser("snapshot", help="capture what discovery reads, for support cases")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    p = snap_sub.add_parser("capture", help="write a snapshot archive (tar.gz)")
    p.add_argument("-f", "--file", required=True, help="archive to write, e.g. node.tar.gz")
    p.add_argument("--root", help="capture from this root instead of the live machine")
    p.set_defaults(func=_cmd_snapshot_capture)
