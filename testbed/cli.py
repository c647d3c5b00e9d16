"""The `nodeagent` command line run as an operator runs it: a subprocess of this Python."""

from __future__ import annotations

import os
import subprocess
import sys


def nodeagent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `nodeagent ARGS` with `env` added to this environment; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "nodeagent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
