"""What every command shares: exit codes (a contract) and the one-line error type."""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PROBLEM = 0, 1, 2, 3


class CliError(Exception):
    """An error whose message is already the one line the user should read."""
