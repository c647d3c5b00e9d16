"""What every command shares: exit codes (a contract), the one-line error type, how a
subcommand names the handler main() calls, and the one meaning of `-o`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

# 2 (usage) is argparse's own exit status
EXIT_OK, EXIT_ERROR, EXIT_PROBLEM = 0, 1, 3

# The formats every command that prints an object offers, with one meaning everywhere:
# a layout for people, the object as JSON (protobuf JSON, snake_case, for messages),
# the same object as YAML.
OUTPUT_FORMATS = ("table", "json", "yaml")

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An error whose message is already the one line the user should read."""


def add_command(sub: Any, name: str, func: Handler, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand bound to its own handler, so no command dispatches on its action's name
    a second time. `help` only when given: argparse lists a subcommand passed `help=None`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_output(
    parser: argparse.ArgumentParser,
    choices: Sequence[str] = OUTPUT_FORMATS,
    default: str = "table",
    *,
    inherit: bool = False,
) -> None:
    """`-o/--output FORMAT` (a contract): -o is always a format, never a file; files are
    `-f/--file`. `inherit` leaves the value a parent parser set (`admin -o json nodes
    list`) unless the leaf is given one: argparse copies a subparser's defaults over its
    parent's, so the leaf's default must be no value at all."""
    parser.add_argument(
        "-o",
        "--output",
        choices=list(choices),
        default=argparse.SUPPRESS if inherit else default,
        metavar="FORMAT",
        help=f"output format: {', '.join(choices)} (default {default})",
    )
