"""The four pages (fleet, node, fabric, jobs), rendered on the server to HTML strings.

Each page is a function of what the inventory said, so a test or a benchmark can render one
without a server. The parts that change live sit inside `<div id="live">`: the page's script
fetches that part again (`X-Fragment`) when the event stream says something changed, so
there is one renderer for the first load and for every update. Fields the dashboard does
not know yet (the API grows) are shown as they come rather than dropped.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.dashboard.markup import badge, esc, href, node_href, pairs, size, table
from nodeagent.dashboard.source import Row, Status, utc

PAGE_SIZE = 100
# Shown first, with their reasons: the nodes an operator must look at.
ATTENTION = ("FAILED", "QUARANTINED")
ATTENTION_SHOWN = 25
SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "hostname": lambda r: r.hostname,
    "state": lambda r: r.state,
    "pool": lambda r: r.pool,
    "cluster": lambda r: r.cluster,
    "profile": lambda r: r.profile,
    "gpus": lambda r: (r.gpu_count, r.gpu_model),
    "seen": lambda r: r.last_seen,
    "reason": lambda r: r.reason,
}
COLUMNS = (
    ("hostname", "Hostname"),
    ("state", "State"),
    ("pool", "Pool"),
    ("cluster", "Cluster"),
    ("profile", "Profile"),
    ("gpus", "GPUs"),
    ("seen", "Last seen"),
    ("reason", "Reason"),
)
NODE_FIELDS = frozenset(f.name for f in ipb.Node.DESCRIPTOR.fields)
KNOWN_NODE_FIELDS = frozenset(
    {
        "id",
        "hostname",
        "state",
        "assignment",
        "gpu_model",
        "gpu_count",
        "reachable",
        "last_seen",
        "created_at",
        "inventory_hash",
        "inventory",
        "events",
        "reported_phase",
        "state_reason",
        "certificate_expires",
        "blocking",
    }
)
SHOWN_ID = ' id="shown"'
HERE = ' class="here"'
HEALTH = {0: "unknown", 1: "ok", 2: "DEGRADED", 3: "FAILED"}


@dataclass(frozen=True)
class Query:
    """The fleet table's view: filter, sort, page (all from the URL, so links work alone)."""

    text: str = ""
    state: str = ""
    pool: str = ""
    cluster: str = ""
    profile: str = ""
    sort: str = ""  # "" = attention first, then hostname
    desc: bool = False
    page: int = 1

    def link(self, **changes: Any) -> str:
        q = {**self.__dict__, **changes}
        return href(
            "/",
            q=q["text"],
            state=q["state"],
            pool=q["pool"],
            cluster=q["cluster"],
            profile=q["profile"],
            sort=q["sort"],
            dir="desc" if q["desc"] else "",
            page=q["page"] if q["page"] != 1 else "",
        )


def layout(title: str, page: str, live: str) -> str:
    nav = "".join(
        f'<a href="{path}"{HERE if name == page else ""}>{label}</a>'
        for path, name, label in (
            ("/", "fleet", "Fleet"),
            ("/fabric", "fabric", "Fabric"),
            ("/jobs", "jobs", "Jobs"),
        )
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · nodeagent</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        f'<body data-page="{esc(page)}"><header><span class="brand">nodeagent</span>'
        f'<nav>{nav}</nav><span id="conn" class="conn">live</span></header>'
        f'<div id="live">{live}</div></body></html>'
    )


def banner(status: Status) -> str:
    """What is wrong with the dashboard's own view, above every page."""
    out = []
    if status.cert_expired:
        out.append(
            '<div class="banner error" id="banner-cert">The admin certificate '
            f"({esc(status.subject)}) expired at {esc(utc(status.cert_expires))}: the inventory "
            "will refuse new connections and what is shown may be stale. Issue a new one "
            "(<code>nodeagent inventory issue-admin-cert</code>) and put it where this dashboard "
            "reads it: it is picked up on the next reconnect.</div>"
        )
    elif status.cert_expires and status.cert_expires - time.time() < 86400:
        out.append(
            '<div class="banner warn" id="banner-cert">The admin certificate expires at '
            f"{esc(utc(status.cert_expires))}.</div>"
        )
    if status.inventory_ok is False:
        out.append(
            '<div class="banner error" id="banner-inventory">The inventory is unreachable since '
            f"{esc(utc(status.since))} ({esc(status.error)}); showing the fleet as last read. "
            "This page recovers by itself when the inventory answers again.</div>"
        )
    elif status.inventory_ok is None:
        out.append('<div class="banner warn" id="banner-inventory">Connecting…</div>')
    return "".join(out)


# --- fleet ---------------------------------------------------------------------------------


def _matches(row: Row, q: Query) -> bool:
    if q.state and row.state != q.state:
        return False
    if q.pool and row.pool != q.pool:
        return False
    if q.cluster and row.cluster != q.cluster:
        return False
    if q.profile and row.profile != q.profile:
        return False
    if q.text:
        needle = q.text.casefold()
        hay = (row.hostname, row.id, row.state, row.pool, row.cluster, row.profile, row.reason)
        return any(needle in h.casefold() for h in hay)
    return True


def _attention_key(row: Row) -> tuple[int, str, str]:
    rank = ATTENTION.index(row.state) if row.state in ATTENTION else len(ATTENTION)
    return rank, row.hostname, row.id


def select(rows: Sequence[Row], q: Query) -> list[Row]:
    """The rows the table shows, in order (every page of them)."""
    found = [r for r in rows if _matches(r, q)]
    if q.sort in SORT_KEYS:
        key = SORT_KEYS[q.sort]
        found.sort(key=lambda r: (key(r), r.hostname, r.id), reverse=q.desc)
    else:
        found.sort(key=_attention_key)
    return found


def _counts(title: str, field: str, counts: Counter[str], q: Query) -> str:
    items = "".join(
        f'<li><a href="{q.link(**{field: value, "page": 1})}" data-live>'
        f"{esc(value or '-')}</a> <b>{n}</b></li>"
        for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return (
        f'<section class="counts" id="by-{esc(field)}"><h3>{esc(title)}</h3>'
        f"<ul>{items}</ul></section>"
    )


def fleet(rows: Sequence[Row], q: Query, status: Status) -> str:
    states = Counter(r.state for r in rows)
    summary = (
        '<div class="summary">'
        + _counts("By state", "state", states, q)
        + _counts("By pool", "pool", Counter(r.pool for r in rows), q)
        + _counts("By cluster", "cluster", Counter(r.cluster for r in rows), q)
        + _counts("By profile", "profile", Counter(r.profile for r in rows), q)
        + "</div>"
    )
    attention = sorted((r for r in rows if r.state in ATTENTION), key=_attention_key)
    attention_rows = [
        [
            f'<a href="{node_href(r.id)}">{esc(r.hostname or r.id)}</a>',
            badge(r.state),
            esc(r.reason),
        ]
        for r in attention[:ATTENTION_SHOWN]
    ]
    more = len(attention) - ATTENTION_SHOWN
    attention_html = (
        '<section id="attention"><h2>Needs attention</h2>'
        + table(["Node", "State", "Reason"], attention_rows, empty="no failed or quarantined nodes")
        + (f"<p>and {more} more: sort the table by state.</p>" if more > 0 else "")
        + "</section>"
    )
    found = select(rows, q)
    pages = max(1, (len(found) + PAGE_SIZE - 1) // PAGE_SIZE)
    page = min(max(q.page, 1), pages)
    shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    heads = []
    for key, label in COLUMNS:
        desc = q.sort == key and not q.desc
        arrow = (" ▼" if q.desc else " ▲") if q.sort == key else ""
        heads.append(
            f'<th><a href="{q.link(sort=key, desc=desc, page=1)}" data-live data-sort="{key}">'
            f"{esc(label)}{arrow}</a></th>"
        )
    body = "".join(
        f'<tr data-node="{esc(r.id)}" class="st-row-{esc(r.state)}">'
        f'<td><a href="{node_href(r.id)}">{esc(r.hostname or r.id)}</a></td>'
        f"<td>{badge(r.state)}</td><td>{esc(r.pool or '-')}</td><td>{esc(r.cluster or '-')}</td>"
        f"<td>{esc(r.profile or '-')}</td>"
        f"<td>{esc(f'{r.gpu_count}x {r.gpu_model}' if r.gpu_count else '-')}</td>"
        f"<td>{esc(utc(r.last_seen))}{'' if r.reachable is not False else ' <b>unreachable</b>'}"
        f"</td><td>{esc(r.reason or '-')}</td></tr>"
        for r in shown
    )
    if not body:
        body = f'<tr><td colspan="{len(COLUMNS)}" class="empty">no node matches</td></tr>'
    first = (page - 1) * PAGE_SIZE + 1 if shown else 0
    last = first + len(shown) - 1 if shown else 0
    nav = (
        f'<div class="pager"><span{SHOWN_ID}>nodes {first}–{last}'
        f" of {len(found)}</span>"
        + (
            f' <a href="{q.link(page=page - 1)}" data-live rel="prev">previous</a>'
            if page > 1
            else ""
        )
        + f" page {page} of {pages}"
        + (
            f' <a href="{q.link(page=page + 1)}" data-live rel="next">next</a>'
            if page < pages
            else ""
        )
        + "</div>"
    )
    filters = "".join(
        f'<input type="hidden" name="{name}" value="{esc(value)}">'
        for name, value in (
            ("state", q.state),
            ("pool", q.pool),
            ("cluster", q.cluster),
            ("profile", q.profile),
            ("sort", q.sort),
        )
        if value
    )
    active = [
        f"{k}={v}"
        for k, v in (
            ("state", q.state),
            ("pool", q.pool),
            ("cluster", q.cluster),
            ("profile", q.profile),
        )
        if v
    ]
    clear = (
        f' <span class="active">filtered by {esc(", ".join(active))} '
        f'<a href="{href("/")}" data-live>clear</a></span>'
        if active
        else ""
    )
    form = (
        f'<form id="filter" method="get" action="/">{filters}<input type="search" name="q" '
        f'value="{esc(q.text)}" placeholder="filter: hostname, id, state, pool, reason" '
        f'autocomplete="off" aria-label="filter nodes"><button>filter</button>{clear}</form>'
    )
    bottom = nav.replace(SHOWN_ID, "")  # the same pager under the table, without the id
    table_html = (
        f'<table id="nodes" class="nodes"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
    return (
        banner(status)
        + f'<main><h1>Fleet <small id="total">{len(rows)} nodes</small></h1>'
        + summary
        + attention_html
        + f"<section><h2>Nodes</h2>{form}{nav}{table_html}{bottom}</section></main>"
    )


# --- node ----------------------------------------------------------------------------------


def _hardware(inv: Any) -> str:
    s, cpu = inv.system, inv.cpu
    return pairs(
        [
            ("system", esc(f"{s.vendor} {s.product}".strip() or "-")),
            ("serial", esc(s.serial or "-")),
            ("BIOS", esc(f"{s.bios_vendor} {s.bios_version} {s.bios_date}".strip() or "-")),
            (
                "CPU",
                esc(
                    f"{cpu.sockets}x {cpu.model_name} ({cpu.logical_cpus} logical CPUs)"
                    if cpu.model_name
                    else "-"
                ),
            ),
            ("memory", esc(size(inv.memory.total_bytes) if inv.memory.total_bytes else "-")),
            ("NUMA nodes", esc(len(inv.numa_nodes))),
            ("GPUs", esc(len(inv.gpus))),
            ("NVSwitches", esc(len(inv.nvswitches))),
            ("RDMA devices", esc(len(inv.rdma_devices))),
            ("NVMe controllers", esc(len(inv.nvme_controllers))),
            (
                "software",
                esc(
                    ", ".join(
                        f"{k} {v}"
                        for k, v in json_format.MessageToDict(
                            inv.software, preserving_proto_field_name=True
                        ).items()
                        if isinstance(v, str) and v
                    )
                    or "-"
                ),
            ),
        ]
    )


def _health(value: int, reasons: Sequence[str]) -> str:
    word = HEALTH.get(value, str(value))
    cls = "ok" if value == 1 else "bad" if value in (2, 3) else "unknown"
    why = f" ({esc('; '.join(reasons))})" if reasons else ""
    return f'<span class="health {cls}">{esc(word)}</span>{why}'


def _word(cls: str, text: str) -> str:
    return f'<span class="health {cls}">{esc(text or "-")}</span>'


def _gpus(inv: Any) -> str:
    rows = [
        [
            esc(g.index),
            esc(g.model or "-"),
            esc(g.pci_address),
            _health(g.health, g.health_reasons),
            esc(f"{g.nvlinks_active}/{g.nvlinks_total}" if g.nvlinks_total else "-"),
            esc(size(g.memory_bytes) if g.memory_bytes else "-"),
            esc(g.serial or "-"),
        ]
        for g in inv.gpus
    ]
    return table(
        ["#", "Model", "PCI", "Health", "NVLinks", "Memory", "Serial"],
        rows,
        cls="gpus",
        empty="no GPUs",
    )


def _rails(inv: Any, tiers: Any) -> str:
    rows = []
    for dev in inv.rdma_devices:
        for port in dev.ports:
            active = port.state.upper() == "ACTIVE"
            rows.append(
                [
                    esc(f"{dev.name}/{port.port}"),
                    esc(dev.model or "-"),
                    esc(port.link_layer or "-"),
                    _word("ok" if active else "bad", port.state),
                    esc(f"{port.rate_gbps:g} Gb/s" if port.rate_gbps else "-"),
                    esc(port.netdev or ", ".join(dev.netdevs) or "-"),
                ]
            )
    out = table(
        ["Port", "Model", "Link", "State", "Rate", "Netdev"],
        rows,
        cls="rails",
        empty="no RDMA ports",
    )
    if tiers is not None:
        degraded = (
            f'<span class="health bad">degraded</span>: {esc("; ".join(tiers.degraded_reasons))}'
            if tiers.degraded
            else '<span class="health ok">not degraded</span>'
        )
        out = (
            pairs(
                [
                    (
                        "compute rails",
                        esc(f"{tiers.rails_active} of {tiers.rails_expected} active"),
                    ),
                    ("slowest rail", esc(f"{tiers.rate_gbps:g} Gb/s")),
                    ("fabric", degraded),
                    (
                        "tiers",
                        esc(
                            f"fabric {tiers.fabric}, tier-2 {tiers.tier_2}, tier-1 {tiers.tier_1}, "
                            f"tier-0 {tiers.tier_0} ({tiers.source})"
                        ),
                    ),
                ]
            )
            + out
        )
    return out


def _nvme(inv: Any) -> str:
    rows = [
        [
            esc(c.name),
            esc(c.model or "-"),
            esc(c.serial or "-"),
            esc(c.firmware or "-"),
            _word("ok" if c.state == "live" else "bad", c.state),
            esc(size(sum(n.size_bytes for n in c.namespaces)) if c.namespaces else "-"),
        ]
        for c in inv.nvme_controllers
    ]
    return table(
        ["Controller", "Model", "Serial", "Firmware", "State", "Capacity"],
        rows,
        cls="nvme",
        empty="no NVMe",
    )


def _events(node: Any) -> str:
    def names(e: Any) -> tuple[str, str]:
        before = "registered" if e.from_state == 0 else ipb.NodeState.Name(e.from_state)
        after = "deleted" if e.to_state == 0 else ipb.NodeState.Name(e.to_state)
        return before, after

    rows = [
        [
            esc(utc(e.time.seconds + e.time.nanos / 1e9)),
            esc(e.actor),
            esc(names(e)[0]),
            esc(names(e)[1]),
            esc(e.reason or "-"),
        ]
        for e in reversed(node.events)
    ]
    return table(["Time", "Actor", "From", "To", "Reason"], rows, cls="events", empty="no events")


def _extra(message: Any, known: frozenset[str]) -> list[tuple[str, str]]:
    """Fields this dashboard does not know yet, shown as the API gives them."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return [(k, esc(v)) for k, v in sorted(data.items()) if k not in known]


def _drift(node: Any) -> str:
    for name in ("drift", "drift_count", "drift_items"):
        if name in NODE_FIELDS:
            value = getattr(node, name)
            if hasattr(value, "DESCRIPTOR"):
                value = json_format.MessageToDict(value, preserving_proto_field_name=True)
            return esc(value if value not in ("", 0, [], {}) else "none")
    return '<span class="empty">the inventory does not report drift</span>'


def _validation(node: Any) -> str:
    names = sorted(n for n in NODE_FIELDS if "validation" in n)
    if not names:
        return '<span class="empty">the inventory does not report validation runs</span>'
    items = []
    for name in names:
        value = getattr(node, name)
        if hasattr(value, "DESCRIPTOR"):
            value = json_format.MessageToDict(value, preserving_proto_field_name=True)
        elif not isinstance(value, str | int | float | bool):
            value = [
                json_format.MessageToDict(v, preserving_proto_field_name=True)
                if hasattr(v, "DESCRIPTOR")
                else v
                for v in value
            ]
        items.append((name, esc(value or "none")))
    return pairs(items)


def node_page(node: Any, labels: dict[str, str] | None, tiers: Any, status: Status) -> str:
    a = node.assignment
    seen = utc(node.last_seen.seconds) if node.HasField("last_seen") else "never"
    reach = "-" if not node.HasField("last_seen") else "yes" if node.reachable else "NO"
    overview = pairs(
        [
            ("id", esc(node.id)),
            ("state", badge(ipb.NodeState.Name(node.state)) + f" {esc(node.state_reason)}"),
            ("reachable", esc(f"{reach} (last seen {seen}, phase {node.reported_phase or '-'})")),
            (
                "assigned",
                esc(
                    f"pool={a.pool or '-'} role={a.role or '-'} cluster={a.cluster or '-'} "
                    f"profile={a.profile or '-'}"
                ),
            ),
            ("taints", esc(", ".join(a.taints) or "-")),
            (
                "certificate expires",
                esc(
                    utc(node.certificate_expires.seconds)
                    if node.HasField("certificate_expires")
                    else "-"
                ),
            ),
            ("enrolled", esc(utc(node.created_at.seconds))),
            *_extra(node, KNOWN_NODE_FIELDS),
        ]
    )
    blocking = (
        '<ul class="blocking">' + "".join(f"<li>{esc(b)}</li>" for b in node.blocking) + "</ul>"
        if node.blocking
        else '<p class="empty">nothing blocks this node</p>'
    )
    label_rows = [
        [esc(k), esc(v), "override" if k in a.labels else "derived"]
        for k, v in sorted({**(labels or {}), **a.labels}.items())
    ]
    labels_html = table(["Key", "Value", "Source"], label_rows, cls="labels", empty="no labels")
    if labels is None:
        labels_html = '<p class="empty">the labels could not be read</p>' + labels_html
    inv = node.inventory
    return (
        banner(status)
        + f"<main><h1>{esc(node.hostname or node.id)}</h1>{overview}"
        + f'<section id="blocking"><h2>Blocked by</h2>{blocking}</section>'
        + f'<section id="hardware"><h2>Hardware</h2>{_hardware(inv)}</section>'
        + f'<section id="gpus"><h2>GPUs</h2>{_gpus(inv)}</section>'
        + f'<section id="rails"><h2>Rails</h2>{_rails(inv, tiers)}</section>'
        + f'<section id="nvme"><h2>NVMe</h2>{_nvme(inv)}</section>'
        + f'<section id="labels"><h2>Labels</h2>{labels_html}</section>'
        + f'<section id="drift"><h2>Drift</h2>{_drift(node)}</section>'
        + f'<section id="validation"><h2>Validation</h2>{_validation(node)}</section>'
        + f'<section id="events"><h2>Event log</h2>{_events(node)}</section></main>'
    )


# --- fabric --------------------------------------------------------------------------------


def fabric(svg: str, boxes: int, focus: str, status: Status, loaded: bool) -> str:
    head = (
        f"<p>Group <code>{esc(focus)}</code>, every node. "
        '<a href="/fabric">the whole fabric</a></p>'
        if focus
        else "<p>Groups larger than the picture can hold show counts; follow "
        "“show each node” for one group.</p>"
    )
    if not loaded:
        svg = '<p class="empty">the topology has not been read from the inventory yet</p>'
    return (
        banner(status)
        + f'<main><h1>Fabric <small id="boxes">{boxes} nodes drawn</small></h1>{head}'
        + f'<div class="svgbox" id="fabric">{svg}</div>'
        + '<p><a href="/fabric.svg">the picture alone (SVG)</a></p></main>'
    )


# --- jobs ----------------------------------------------------------------------------------

JOB_NODE_DONE = {3: "joined", 4: "failed", 5: "cancelled"}


def _job_kind(job: Any) -> str:
    """Join jobs are the only kind the API names today; a `kind` field, when it comes, says."""
    for name in ("kind", "type"):
        if name in job.DESCRIPTOR.fields_by_name:
            value = getattr(job, name)
            if isinstance(value, int) and name in job.DESCRIPTOR.fields_by_name:
                enum = job.DESCRIPTOR.fields_by_name[name].enum_type
                if enum is not None:
                    return (
                        str(enum.values_by_number[value].name)
                        if value in enum.values_by_number
                        else str(value)
                    )
            return str(value or "join")
    return "join"


def _progress(job: Any) -> str:
    total = len(job.nodes)
    done = Counter(JOB_NODE_DONE.get(n.state, "") for n in job.nodes)
    finished = total - done[""]
    return f'<progress max="{max(total, 1)}" value="{finished}"></progress> ' + esc(
        f"{done['joined']} joined, {done['failed']} failed of {total}; "
        f"batch {job.current_batch}/{job.batches}"
    )


def _job_state(job: Any) -> str:
    return esc(ipb.JobState.Name(job.state).removeprefix("JOB_"))


def jobs(items: Sequence[Any] | None, error: str, status: Status) -> str:
    rows = [
        [
            f'<a href="/jobs/{esc(j.id)}">{esc(j.id[:12])}</a>',
            esc(_job_kind(j)),
            esc(j.cluster or "-"),
            _job_state(j),
            _progress(j),
            esc(j.created_by or "-"),
            esc(utc(j.created_at.seconds)),
            esc(j.message or "-"),
        ]
        for j in sorted(items or [], key=lambda j: j.created_at.seconds, reverse=True)
    ]
    body = table(
        ["Job", "Kind", "Cluster", "State", "Progress", "By", "Created", "Message"],
        rows,
        cls="jobs",
        empty="no jobs",
    )
    if error:
        body = f'<p class="error">{esc(error)}</p>' + body
    return banner(status) + f"<main><h1>Jobs</h1>{body}</main>"


def job_page(job: Any, events: Sequence[Any], status: Status) -> str:
    overview = pairs(
        [
            ("id", esc(job.id)),
            ("kind", esc(_job_kind(job))),
            ("cluster", esc(job.cluster or "-")),
            ("state", _job_state(job)),
            ("progress", _progress(job)),
            ("created", esc(f"{utc(job.created_at.seconds)} by {job.created_by or '-'}")),
            ("message", esc(job.message or "-")),
        ]
    )
    nodes = table(
        ["Node", "Batch", "State", "Failed task", "Message"],
        [
            [
                f'<a href="{node_href(n.node_id)}">{esc(n.hostname or n.node_id)}</a>',
                esc(n.batch),
                esc(ipb.JobNodeState.Name(n.state).removeprefix("JOB_NODE_")),
                esc(n.failed_task or "-"),
                esc(n.message or "-"),
            ]
            for n in job.nodes
        ],
        cls="job-nodes",
    )
    log = "".join(
        f"{esc(utc(e.time.seconds))} {esc(e.kind)}"
        + (f" [{esc(e.hostname)}]" if e.hostname else "")
        + (f" batch {esc(e.batch)}" if e.batch else "")
        + f" {esc(e.message)}\n"
        for e in events
    )
    return (
        banner(status)
        + f"<main><h1>Job {esc(job.id)}</h1>{overview}<h2>Nodes</h2>{nodes}"
        + f'<h2>Log</h2><pre class="log" id="log">{log or "no events yet"}</pre></main>'
    )


def error_page(title: str, message: str, status: Status) -> str:
    return banner(status) + f'<main><h1>{esc(title)}</h1><p class="error">{esc(message)}</p></main>'
