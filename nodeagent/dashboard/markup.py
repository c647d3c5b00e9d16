"""HTML building blocks with escaping built in: every value that reaches a page passes
through `esc`, so a hostname, a label or a hook's output a node controls shows as text and
never as markup. Callers join already-escaped pieces; nothing else concatenates raw input.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

# The colour of each lifecycle state, in the fabric picture and the state badges alike.
STATE_COLOURS = {
    "ENROLLED": "#9ca3af",
    "DISCOVERED": "#fbbf24",
    "TUNING": "#f59e0b",
    "REBOOT_REQUIRED": "#d97706",
    "READY": "#22c55e",
    "JOINING": "#60a5fa",
    "JOINED": "#2563eb",
    "QUARANTINED": "#f97316",
    "FAILED": "#dc2626",
    "MAINTENANCE": "#a855f7",
    "RETIRED": "#6b7280",
}
UNKNOWN_COLOUR = "#d1d5db"


def esc(value: object) -> str:
    """Text for HTML or SVG content and quoted attributes."""
    return html.escape(str(value), quote=True)


def href(path: str, **query: object) -> str:
    """A local link, escaped for an attribute; empty query values are left out."""
    params = {k: str(v) for k, v in query.items() if v not in ("", None)}
    return esc(path + ("?" + urlencode(params) if params else ""))


def node_href(node_id: str) -> str:
    return esc("/nodes/" + quote(node_id, safe=""))


def badge(state: str) -> str:
    known = state if state in STATE_COLOURS else "UNKNOWN"
    return f'<span class="badge st-{esc(known)}">{esc(state)}</span>'


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", empty: str = "none"
) -> str:
    """Rows of already-escaped cells (build them with esc)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{esc(empty)}</td></tr>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def pairs(items: Iterable[tuple[str, str]]) -> str:
    """A definition list of (label, already-escaped value)."""
    return (
        '<dl class="pairs">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"
    )


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
