"""The renderers without a server: the fleet table's order and pages, escaping, and the
fabric picture's grouping at 10,000 nodes."""

from __future__ import annotations

import re

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.dashboard import fabric_svg, pages
from nodeagent.dashboard.source import Row, Status, row_of


def _row(n: int, state: str = "READY", reason: str = "", pool: str = "p") -> Row:
    return Row(f"id-{n:05d}", f"gpu-{n:05d}", state, pool, "", "", "", 0, True, 0.0, reason, ())


def test_failed_and_quarantined_come_first_then_hostnames() -> None:
    rows = [_row(3), _row(1, "QUARANTINED", "GPU 3 lost"), _row(2, "FAILED", "x"), _row(0)]
    assert [r.hostname for r in pages.select(rows, pages.Query())] == [
        "gpu-00002",
        "gpu-00001",
        "gpu-00000",
        "gpu-00003",
    ]
    by_state = pages.select(rows, pages.Query(sort="state", desc=True))
    assert [r.state for r in by_state] == ["READY", "READY", "QUARANTINED", "FAILED"]
    assert [r.hostname for r in pages.select(rows, pages.Query(text="LOST"))] == ["gpu-00001"]


def test_the_table_is_paged() -> None:
    rows = [_row(n) for n in range(10_000)]
    html = pages.fleet(rows, pages.Query(page=3), Status(inventory_ok=True))
    assert html.count("<tr data-node=") == pages.PAGE_SIZE
    assert "nodes 201–300 of 10000" in html
    assert 'data-node="id-00200"' in html and 'data-node="id-00300"' not in html
    last = pages.fleet(rows, pages.Query(page=999), Status(inventory_ok=True))
    assert "nodes 9901–10000 of 10000" in last and 'rel="next"' not in last


def test_node_controlled_text_is_escaped_everywhere() -> None:
    node = ipb.Node(
        id="n1",
        hostname="<script>x()</script>",
        state=ipb.QUARANTINED,
        state_reason='<img src=x onerror="y()">',
        blocking=["<b>check</b>"],
    )
    node.assignment.labels["rack"] = "<i>r1</i>"
    row = row_of(node)
    fleet = pages.fleet([row], pages.Query(), Status(inventory_ok=True))
    detail = pages.node_page(node, {"k": "<u>v</u>"}, None, Status(inventory_ok=True))
    for html in (fleet, detail):
        assert "<script>" not in html and "<img" not in html
        assert "&lt;script&gt;x()&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;y()&quot;&gt;" in fleet
    assert "<li>&lt;b&gt;check&lt;/b&gt;</li>" in detail
    assert "<td>rack</td><td>&lt;i&gt;r1&lt;/i&gt;</td><td>override</td>" in detail
    assert "<td>k</td><td>&lt;u&gt;v&lt;/u&gt;</td><td>derived</td>" in detail
    svg, boxes = fabric_svg.render(None, {node.hostname: (node.id, "QUARANTINED")})
    assert boxes == 1 and "<script>" not in svg
    assert "<title>&lt;script&gt;x()&lt;/script&gt; QUARANTINED</title>" in svg


def _topology(groups: int, per_group: int, degraded: set[int] = frozenset()) -> fpb.FabricTopology:  # type: ignore[assignment]
    topo = fpb.FabricTopology()
    for n in range(groups * per_group):
        g = n // per_group
        tiers = topo.nodes[f"gpu-{n:05d}"]
        tiers.fabric, tiers.tier_2 = "ib0", f"pod{g % 2}"
        tiers.tier_1, tiers.tier_0 = f"sg-{g % 4}", f"lg-{g:03d}"
        if n in degraded:
            tiers.degraded = True
            tiers.degraded_reasons.append("rail mlx5_3 down")
    return topo


def test_ten_thousand_nodes_are_drawn_as_groups() -> None:
    topo = _topology(40, 250, degraded={7, 8})
    nodes = {f"gpu-{n:05d}": (f"id-{n}", "READY" if n % 10 else "FAILED") for n in range(10_000)}
    svg, boxes = fabric_svg.render(topo, nodes)
    assert boxes == 0 and svg.count('class="node') == 0
    assert svg.count('<g class="group tier-0">') == 40
    assert svg.count('<g class="group tier-1">') == 4
    assert svg.count('<g class="group tier-2">') == 2
    assert svg.count('<g class="group fabric">') == 1
    assert ">READY 225<" in svg and ">FAILED 25<" in svg
    assert svg.count("degraded rails: 2") == 1
    assert svg.count('href="/fabric?group=lg-') == 40
    focused, boxes = fabric_svg.render(topo, nodes, focus="lg-000")
    assert boxes == 250 and focused.count('<rect class="node') == 250
    assert focused.count('class="node degraded"') == 2
    assert "<title>gpu-00007 READY degraded: rail mlx5_3 down</title>" in focused


def test_small_groups_are_drawn_node_by_node_up_to_the_budget() -> None:
    topo = _topology(150, 10)
    nodes = {f"gpu-{n:05d}": (f"id-{n}", "READY") for n in range(1500)}
    svg, boxes = fabric_svg.render(topo, nodes)
    assert boxes == 1020 == len(re.findall(r'<rect class="node"', svg))
    assert svg.count("show each node") == 150 - 102


def test_nodes_without_a_fabric_report_are_one_group() -> None:
    svg, boxes = fabric_svg.render(None, {"a": ("1", "READY"), "b": ("2", "FAILED")})
    assert boxes == 2
    assert ">no fabric report<" in svg
    assert '<a href="/nodes/1">' in svg and 'fill="#dc2626"' in svg


def test_banners() -> None:
    down = pages.banner(Status(inventory_ok=False, since=0.0, error="UNAVAILABLE: gone"))
    assert 'id="banner-inventory"' in down and "(UNAVAILABLE: gone)" in down
    expired = pages.banner(Status(inventory_ok=True, subject="<x>", cert_expires=1.0))
    assert "The admin certificate (&lt;x&gt;) expired at 1970-01-01 00:00:01Z" in expired
    assert pages.banner(Status(inventory_ok=True)) == ""
