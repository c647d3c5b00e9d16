"""The dashboard in a real browser against a live fleet: every page's content, no console
errors, live updates without a reload, node-controlled text shown as text, and the
inventory going away and coming back. Screenshots of each page go to the artifacts folder.
"""

from __future__ import annotations

import http.client
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By

from testbed.dashboard import screenshot
from testbed.wait import wait_for
from tests.dashboard.conftest import HOSTILE, Live, console_errors

READY_FILL = "#22c55e"


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 20, url)


def _texts(driver: Any, css: str) -> list[str]:
    """Read in one script: a live update may replace the elements between two calls."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(e => (e instanceof HTMLElement ? e.innerText : e.textContent).trim())",
            css,
        )
    )


def _counts(driver: Any, field: str) -> dict[str, int]:
    items = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(li => [li.querySelector('a').innerText, li.querySelector('b').innerText])",
        f"#by-{field} li",
    )
    return {name: int(n) for name, n in items}


def _click(driver: Any, css: str) -> None:
    driver.execute_script("document.querySelector(arguments[0]).click()", css)


def _type(driver: Any, css: str, text: str) -> None:
    """Type into a field as a user does: focus, value, an input event."""
    driver.execute_script(
        "const e = document.querySelector(arguments[0]); e.focus(); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}))",
        css,
        text,
    )


def test_fleet_page(live: Live, driver: Any, artifacts: Path) -> None:
    _open(driver, live.dashboard.url)
    assert driver.title == "Fleet · nodeagent"
    assert _counts(driver, "state") == {"READY": 3, "DISCOVERED": 1}
    assert _counts(driver, "pool") == {"training": 2, "services": 1, "-": 1}
    assert _counts(driver, "cluster") == {"-": 4}
    hostnames = _texts(driver, "#nodes tbody tr td:first-child")
    assert sorted(hostnames) == sorted(["cpu-node-01", "dgx-h100-01", "gpu-h100-0017", HOSTILE])
    assert _texts(driver, "#shown") == ["nodes 1–4 of 4"]
    assert _texts(driver, "#attention tbody td") == ["no failed or quarantined nodes"]
    # the hostname is markup; it shows as the text it is and runs nothing
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.CSS_SELECTOR, "#nodes img") == []
    assert console_errors(driver) == []
    screenshot(driver, artifacts, "fleet")


def test_the_table_filters_and_sorts_in_place(live: Live, driver: Any) -> None:
    _open(driver, live.dashboard.url)
    driver.execute_script("window.__marker = 7")
    _type(driver, "#filter input[name=q]", "h100")
    wait_for(lambda: _texts(driver, "#shown") == ["nodes 1–2 of 2"], 10, "filter")
    # the body is replaced after the count (and again by a live update): wait for it too
    wait_for(
        lambda: (
            _texts(driver, "#nodes tbody tr td:first-child") == ["dgx-h100-01", "gpu-h100-0017"]
        ),
        10,
        "the filtered rows",
    )
    _click(driver, "a[data-sort=hostname]")
    wait_for(lambda: "sort=hostname" in driver.current_url, 10, "ascending order")
    # the header is drawn again with the page; until then its link still says ascending
    wait_for(
        lambda: (
            "dir=desc"
            in driver.execute_script("return document.querySelector('a[data-sort=hostname]').href")
        ),
        10,
        "the header to offer descending order",
    )
    _click(driver, "a[data-sort=hostname]")  # now descending
    wait_for(
        lambda: (
            _texts(driver, "#nodes tbody tr td:first-child") == ["gpu-h100-0017", "dgx-h100-01"]
        ),
        10,
        "descending order",
    )
    assert urlsplit(driver.current_url).query == "q=h100&sort=hostname&dir=desc"
    assert driver.execute_script("return window.__marker") == 7, "the page was reloaded"
    assert console_errors(driver) == []


def test_node_page(live: Live, driver: Any, artifacts: Path) -> None:
    node_id = live.node_id("dgx-h100-01")
    labels = json.loads(live.fleet.run("admin", "nodes", "labels", node_id, "-o", "json"))
    _open(driver, f"{live.dashboard.url}nodes/{node_id}")
    assert _texts(driver, "h1") == ["dgx-h100-01"]
    assert _texts(driver, "table.gpus tbody tr td:nth-child(4)") == ["ok"] * 8
    assert len(_texts(driver, "table.nvme tbody tr")) == 10
    assert "mlx5_0/1" in _texts(driver, "table.rails tbody tr td:first-child")
    keys = _texts(driver, "table.labels tbody tr td:nth-child(1)")
    values = _texts(driver, "table.labels tbody tr td:nth-child(2)")
    assert dict(zip(keys, values, strict=True)) == labels
    shown = json.loads(live.fleet.run("admin", "-o", "json", "nodes", "show", node_id))
    assert len(_texts(driver, "table.events tbody tr")) == len(shown["events"])
    assert _texts(driver, "#blocking p") == ["nothing blocks this node"]
    assert console_errors(driver) == []
    screenshot(driver, artifacts, "node")


def test_the_hostile_node_page_shows_its_hostname_as_text(live: Live, driver: Any) -> None:
    _open(driver, f"{live.dashboard.url}nodes/{live.hostile_id}")
    assert _texts(driver, "h1") == [HOSTILE]
    assert driver.title == f"{HOSTILE} · nodeagent"
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    assert console_errors(driver) == []


def test_fabric_page(live: Live, driver: Any, artifacts: Path) -> None:
    _open(driver, f"{live.dashboard.url}fabric")
    fills = driver.execute_script(
        "return [...document.querySelectorAll('#fabric svg rect.node')]"
        ".map(r => [r.dataset.state, r.getAttribute('fill')])"
    )
    assert sorted(fills) == [["DISCOVERED", "#fbbf24"]] + [["READY", READY_FILL]] * 3
    assert _texts(driver, "#boxes") == ["4 nodes drawn"]
    groups = _texts(driver, "#fabric svg g.tier-0 text:first-of-type")
    # the OCI shape's tiers come from its (modelled) instance metadata; the others have none
    assert "qcnp7nxaaiz" in groups and "unknown" in groups and "-" in groups
    titles = driver.execute_script(
        "return [...document.querySelectorAll('#fabric rect.node title')].map(t => t.textContent)"
    )
    assert f"{HOSTILE} DISCOVERED" in titles
    assert driver.execute_script("return window.__xss") is None
    assert console_errors(driver) == []
    screenshot(driver, artifacts, "fabric")


def test_jobs_page(live: Live, driver: Any, artifacts: Path) -> None:
    _open(driver, f"{live.dashboard.url}jobs")
    assert _texts(driver, "table.jobs tbody td") == ["no jobs"]
    assert console_errors(driver) == []
    screenshot(driver, artifacts, "jobs")


def test_a_held_node_changes_on_the_page_without_a_reload(live: Live, driver: Any) -> None:
    _open(driver, live.dashboard.url)
    driver.execute_script("window.__marker = 42")
    reason = "<b>DIMM</b> & fan"
    live.fleet.run("admin", "nodes", "hold", "dgx-h100-01", "--reason", reason)

    def row() -> list[str]:
        return list(
            driver.execute_script(
                "for (const tr of document.querySelectorAll('#nodes tbody tr')) {"
                "  const cells = [...tr.cells].map(c => c.innerText.trim());"
                "  if (cells[0] === 'dgx-h100-01') return cells; }"
                "return [];"
            )
        )

    wait_for(lambda: row()[1:2] == ["MAINTENANCE"], 15, "the held node on the page")
    assert row()[-1] == reason
    assert _counts(driver, "state") == {"READY": 2, "DISCOVERED": 1, "MAINTENANCE": 1}
    live.fleet.run("admin", "nodes", "release", "dgx-h100-01")
    wait_for(lambda: row()[1:2] == ["READY"], 15, "the released node on the page")
    assert driver.execute_script("return window.__marker") == 42, "the page was reloaded"
    assert console_errors(driver) == []


def _get(url: str, host: str | None = None, method: str = "GET") -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"Host": host} if host else {}
    conn.request(method, parts.path or "/", headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def test_headers_read_only_and_host_check(live: Live) -> None:
    status, headers = _get(live.dashboard.url)
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'none'; script-src 'self';")
    assert headers["x-content-type-options"] == "nosniff"
    assert _get(live.dashboard.url, method="POST")[0] == 405
    # DNS rebinding: a page elsewhere that resolves its own name to 127.0.0.1
    assert _get(live.dashboard.url, host="attacker.example:80")[0] == 421
    port = urlsplit(live.dashboard.url).port
    assert _get(live.dashboard.url, host=f"localhost:{port}")[0] == 200
    assert _get(live.dashboard.url + "static/dashboard.js")[0] == 200
    assert _get(live.dashboard.url + "static/../pages.py")[0] == 404


def test_the_inventory_going_away_is_shown_and_recovered(live: Live, driver: Any) -> None:
    _open(driver, live.dashboard.url)
    driver.execute_script("window.__marker = 9")
    assert driver.find_elements(By.ID, "banner-inventory") == []
    live.fleet.stop_inventory(signal.SIGKILL)

    def banner() -> str:
        return "".join(_texts(driver, "#banner-inventory"))

    wait_for(lambda: "unreachable" in banner(), 20, "the unreachable banner")
    assert banner().startswith("The inventory is unreachable since ")
    # the last fleet read is still shown
    assert len(driver.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) == 4
    status = json.loads(urllib.request.urlopen(live.dashboard.url + "status.json").read())
    assert status["inventory"] == "unreachable"
    assert live.dashboard.alive()
    live.fleet.start_inventory()
    wait_for(lambda: banner() == "", 30, "the banner to go")
    assert driver.execute_script("return window.__marker") == 9, "the page was reloaded"
    # the console shows nothing either: the dashboard itself never went away
    assert console_errors(driver) == []
