"""What every command shares: exit codes (a contract), the one-line error type, and how a
subcommand names the handler main() calls."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# 2 (usage) is argparse's own exit status
EXIT_OK, EXIT_ERROR, EXIT_PROBLEM = 0, 1, 3

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An error whose message is already the one line the user should read."""


def add_command(sub: Any, name: str, func: Handler, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand bound to its own handler, so no command dispatches on its action's name
    a second time. `help` only when given: argparse lists a subcommand passed `help=None`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser
