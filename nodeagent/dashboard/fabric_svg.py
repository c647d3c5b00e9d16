"""The fleet's fabric as an SVG drawn on the server: fabric → tier-2 → tier-1 → tier-0
groups → nodes, each node coloured by its lifecycle state and outlined when its rails are
degraded.

The picture is grouped so that its size follows the number of groups, not of nodes: a
tier-0 group shows its nodes one box each only while it is small (or is the one asked
for), else one bar of state counts with a link to that group alone. Ten thousand nodes
are a few dozen groups, never ten thousand boxes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeagent.dashboard.markup import STATE_COLOURS, UNKNOWN_COLOUR, esc, href, node_href

# A tier-0 group with more nodes than this is drawn as counts (unless it is the focus).
MAX_GROUP_BOXES = 48
# Boxes in the whole picture; beyond it, further groups are drawn as counts too.
MAX_BOXES = 1024
# Columns (tier-0 groups) drawn; the rest are one "more groups" column.
MAX_COLUMNS = 200
UNPLACED = "no fabric report"
COL, GAP, BOX, PITCH, PER_ROW = 156, 12, 13, 17, 8
LEVELS = ("fabric", "tier-2", "tier-1", "tier-0")
TOP = 34
LEVEL_Y = {level: TOP + i * 54 for i, level in enumerate(LEVELS)}
NODES_Y = TOP + 4 * 54


@dataclass(frozen=True)
class Member:
    """One node as the picture needs it."""

    name: str
    node_id: str
    state: str
    degraded: bool
    reasons: tuple[str, ...] = ()


@dataclass
class Column:
    path: tuple[str, str, str, str]  # fabric, tier-2, tier-1, tier-0
    members: list[Member] = field(default_factory=list)


def columns(topology: Any, nodes: Mapping[str, tuple[str, str]]) -> list[Column]:
    """Tier-0 groups with their members, in fabric order. `nodes`: hostname -> (id, state)
    for every node the inventory lists; nodes without a fabric report are one group."""
    grouped: dict[tuple[str, str, str, str], list[Member]] = defaultdict(list)
    placed: set[str] = set()
    if topology is not None:
        for name, tiers in topology.nodes.items():
            node_id, state = nodes.get(name, ("", "UNKNOWN"))
            path = (tiers.fabric, tiers.tier_2, tiers.tier_1, tiers.tier_0)
            grouped[path].append(
                Member(name, node_id, state, tiers.degraded, tuple(tiers.degraded_reasons))
            )
            placed.add(name)
    for name, (node_id, state) in nodes.items():
        if name not in placed:
            grouped[(UNPLACED, "-", "-", "-")].append(Member(name, node_id, state, False))
    return [
        Column(path, sorted(members, key=lambda m: m.name))
        for path, members in sorted(grouped.items(), key=lambda kv: (kv[0][0] == UNPLACED, kv[0]))
    ]


def _box(x: float, y: float, w: float, label: str, sub: str, level: str) -> str:
    return (
        f'<g class="group {esc(level)}"><title>{esc(level)} {esc(label)}</title>'
        f'<rect x="{x:.0f}" y="{y}" width="{w:.0f}" height="38" rx="4" fill="#f8fafc" '
        f'stroke="#64748b"/><text x="{x + 6:.0f}" y="{y + 15}" font-size="11" fill="#0f172a">'
        f"{esc(_short(label, int(w / 6.5)))}</text>"
        f'<text x="{x + 6:.0f}" y="{y + 30}" font-size="10" fill="#475569">{esc(sub)}</text></g>'
    )


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _node_boxes(x: float, column: Column) -> tuple[str, int]:
    out = []
    for i, m in enumerate(column.members):
        bx, by = x + (i % PER_ROW) * PITCH, NODES_Y + (i // PER_ROW) * PITCH
        colour = STATE_COLOURS.get(m.state, UNKNOWN_COLOUR)
        stroke = ' stroke="#7f1d1d" stroke-width="2.5"' if m.degraded else ""
        title = f"{m.name} {m.state}" + (" degraded: " + "; ".join(m.reasons) if m.degraded else "")
        rect = (
            f'<rect class="node{" degraded" if m.degraded else ""}" data-state="{esc(m.state)}" '
            f'x="{bx:.0f}" y="{by}" width="{BOX}" height="{BOX}" fill="{colour}"{stroke}>'
            f"<title>{esc(title)}</title></rect>"
        )
        out.append(f'<a href="{node_href(m.node_id)}">{rect}</a>' if m.node_id else rect)
    return "".join(out), NODES_Y + ((len(column.members) + PER_ROW - 1) // PER_ROW) * PITCH


def _counts(x: float, column: Column) -> tuple[str, int]:
    """One bar of state counts, a line per state, and a link to the group drawn whole."""
    counts = Counter(m.state for m in column.members)
    total = len(column.members)
    width, out, at = COL - GAP, [], x
    for state, n in sorted(counts.items()):
        w = width * n / total
        colour = STATE_COLOURS.get(state, UNKNOWN_COLOUR)
        out.append(
            f'<rect class="share" x="{at:.1f}" y="{NODES_Y}" width="{w:.1f}" height="12" '
            f'fill="{colour}"><title>{esc(state)}: {n}</title></rect>'
        )
        at += w
    y = NODES_Y + 26
    for state, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(
            f'<text x="{x:.0f}" y="{y}" font-size="10" fill="#0f172a">{esc(state)} {n}</text>'
        )
        y += 13
    degraded = sum(m.degraded for m in column.members)
    if degraded:
        out.append(
            f'<text class="degraded-count" x="{x:.0f}" y="{y}" font-size="10" fill="#b91c1c">'
            f"degraded rails: {degraded}</text>"
        )
        y += 13
    if column.path[3] != "-" and column.path[0] != UNPLACED:
        link = href("/fabric", group=column.path[3])
        out.append(
            f'<a href="{link}"><text x="{x:.0f}" y="{y}" font-size="10" fill="#1d4ed8">'
            "show each node</text></a>"
        )
    return "".join(out), y + 4


def render(
    topology: Any, nodes: Mapping[str, tuple[str, str]], *, focus: str = ""
) -> tuple[str, int]:
    """The SVG document and how many node boxes it draws. `focus`: a tier-0 group to draw
    alone, node by node whatever its size."""
    cols = columns(topology, nodes)
    if focus:
        cols = [c for c in cols if c.path[3] == focus]
    hidden = cols[MAX_COLUMNS:]
    cols = cols[:MAX_COLUMNS]
    parts: list[str] = []
    boxes, bottom = 0, NODES_Y + 20
    for i, column in enumerate(cols):
        x = GAP + i * COL
        n = len(column.members)
        parts.append(_box(x, LEVEL_Y["tier-0"], COL - GAP, column.path[3], f"{n} nodes", "tier-0"))
        whole = focus or (n <= MAX_GROUP_BOXES and boxes + n <= MAX_BOXES)
        drawn, low = _node_boxes(x, column) if whole else _counts(x, column)
        boxes += n if whole else 0
        parts.append(drawn)
        bottom = max(bottom, low)
    # the levels above span their children: consecutive columns sharing a path prefix
    for depth, level in ((3, "tier-1"), (2, "tier-2"), (1, "fabric")):
        start = 0
        while start < len(cols):
            end = start
            key = cols[start].path[:depth]
            while end + 1 < len(cols) and cols[end + 1].path[:depth] == key:
                end += 1
            n = sum(len(c.members) for c in cols[start : end + 1])
            x0, x1 = GAP + start * COL, GAP + (end + 1) * COL - GAP
            parts.append(_box(x0, LEVEL_Y[level], x1 - x0, key[-1], f"{n} nodes", level))
            for c in range(start, end + 1):  # a line down to each child's box
                cx = GAP + c * COL + (COL - GAP) / 2
                parts.append(
                    f'<line x1="{(x0 + x1) / 2:.0f}" y1="{LEVEL_Y[level] + 38}" x2="{cx:.0f}" '
                    f'y2="{LEVEL_Y[level] + 54}" stroke="#94a3b8"/>'
                )
            start = end + 1
    width = max(GAP + len(cols) * COL + 10, 1040)
    legend = _legend()
    if hidden:
        more = sum(len(c.members) for c in hidden)
        legend += (
            f'<text x="{GAP}" y="{bottom + 14}" font-size="11" fill="#0f172a">'
            f"and {len(hidden)} more tier-0 groups ({more} nodes) not drawn</text>"
        )
        bottom += 20
    height = bottom + 10
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fabric" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="fabric topology" font-family="sans-serif">'
        + legend
        + "".join(parts)
        + "</svg>"
    )
    return svg, boxes


def _legend() -> str:
    out, x = [], GAP
    for state, colour in STATE_COLOURS.items():
        out.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 13}" y="15" font-size="10" fill="#0f172a">{esc(state)}</text>'
        )
        x += 22 + len(state) * 7
    out.append(
        f'<rect x="{x}" y="6" width="10" height="10" fill="#ffffff" stroke="#7f1d1d" '
        f'stroke-width="2.5"/><text x="{x + 13}" y="15" font-size="10" fill="#0f172a">'
        "degraded rails</text>"
    )
    return "".join(out)
