"""Host names: the rule for a name a node chooses before it reaches an export.

A node picks its own host name, and that name is written into Slurm's topology.conf,
the Kubespray inventory and Kubernetes node names. In each of those formats a space, a
newline, ',', '=', ':' or '#' means something, so a node's name is taken only as a
lower-case RFC 1123 name (DNS labels of [a-z0-9-], each at most 63 characters, 253 in
all). That is what Kubernetes requires of a node name, and it is a plain token in every
file we write, so one check serves them all and no exporter has to escape a name.
"""

from __future__ import annotations

import re

MAX_NAME = 253
MAX_LABEL = 63
SHOWN = 80
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def shown(text: str) -> str:
    """`text` fit for an error message: quoted, control characters escaped, bounded."""
    return repr(text[:SHOWN]) + ("..." if len(text) > SHOWN else "")


def hostname_problem(name: str) -> str:
    """Which rule `name` breaks as a host name ('' when it keeps them all)."""
    if not name:
        return "host name is empty"
    if len(name) > MAX_NAME:
        return f"host name {shown(name)} is longer than {MAX_NAME} characters"
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return (
            f"host name {shown(name)} is not a lower-case RFC 1123 name "
            "(dot-separated labels of a-z, 0-9 and '-', starting and ending alphanumeric)"
        )
    if any(len(label) > MAX_LABEL for label in labels):
        return f"host name {shown(name)} has a label longer than {MAX_LABEL} characters"
    return ""


def is_hostname(name: str) -> bool:
    return not hostname_problem(name)


def check_hostname(name: str, what: str) -> str:
    """`name` when it is a host name; else ValueError (INVALID_ARGUMENT) naming the rule."""
    problem = hostname_problem(name)
    if problem:
        raise ValueError(f"{what}: {problem}")
    return name
