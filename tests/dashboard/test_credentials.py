"""The dashboard's own edges: an admin certificate that expires while it runs, and the
listen address (loopback unless --allow-remote)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from testbed.dashboard import DashboardProcess, screenshot
from testbed.wait import wait_for
from tests.dashboard.conftest import Live, console_errors

LIFETIME_S = 12.0


def test_an_expiring_certificate_is_a_banner_not_a_crash(
    live: Live, driver: Any, tmp_path: Path, artifacts: Path
) -> None:
    cert, key = live.fleet.ca().issue_client("brief", "viewer", days=LIFETIME_S / 86400)
    (tmp_path / "brief.crt").write_bytes(cert)
    (tmp_path / "brief.key").write_bytes(key)
    env = {
        **live.fleet.env,
        "NODEAGENT_ADMIN_CERT": str(tmp_path / "brief.crt"),
        "NODEAGENT_ADMIN_KEY": str(tmp_path / "brief.key"),
    }
    started = time.monotonic()
    dashboard = DashboardProcess(env, refresh=1.0).start()
    try:
        driver.get(dashboard.url)
        wait_for(lambda: _rows(driver) == 4, 20, "the fleet table")
        cls, text = _banner(driver)
        assert cls == "banner warn"
        assert text.startswith("The admin certificate expires at ")
        assert time.monotonic() - started < LIFETIME_S, "too slow to see it before it expired"
        wait_for(lambda: _banner(driver)[0] == "banner error", LIFETIME_S + 20, "expired")
        text = _banner(driver)[1]
        assert text.startswith("The admin certificate (brief) expired at ")
        assert "nodeagent inventory issue-admin-cert" in text
        # the page is still served, the rows as last read, and the process still runs
        driver.get(dashboard.url)
        assert _rows(driver) == 4
        assert urllib.request.urlopen(dashboard.url + "status.json").status == 200
        assert dashboard.alive()
        assert console_errors(driver) == []
        screenshot(driver, artifacts, "expired-certificate")
    finally:
        assert dashboard.stop() == 0
    assert "Traceback" not in "".join(dashboard.output)


def _rows(driver: Any) -> int:
    return int(driver.execute_script("return document.querySelectorAll('#nodes tbody tr').length"))


def _banner(driver: Any) -> tuple[str, str]:
    """The certificate banner's class and text, read in one script (pages update live)."""
    found = driver.execute_script(
        "const b = document.getElementById('banner-cert');"
        "return b ? [b.className, b.innerText.trim()] : ['', ''];"
    )
    return str(found[0]), str(found[1])


def _dashboard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodeagent.cli.main", "admin", "dashboard", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_non_loopback_address_needs_allow_remote(live: Live) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        done = _dashboard(live.fleet.env, "--listen", listen)
        assert done.returncode == 1
        assert done.stderr.startswith(
            f"nodeagent: error: refusing to serve the dashboard on {listen}:"
        )
        assert "give --allow-remote" in done.stderr
        assert done.stdout == ""
    done = _dashboard(live.fleet.env, "--listen", "localhost")
    assert (done.returncode, done.stderr) == (
        1,
        "nodeagent: error: --listen 'localhost': give HOST:PORT, e.g. 127.0.0.1:8080\n",
    )


def test_allow_remote_serves_on_every_address(live: Live) -> None:
    dashboard = DashboardProcess(
        live.fleet.env, "--listen", "0.0.0.0:0", "--allow-remote", refresh=1.0
    ).start()
    try:
        assert dashboard.url.startswith("http://0.0.0.0:")
        port = dashboard.url.rsplit(":", 1)[1].strip("/")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/status.json", headers={"Host": f"10.0.0.5:{port}"}
        )
        assert urllib.request.urlopen(request).status == 200
    finally:
        assert dashboard.stop() == 0
