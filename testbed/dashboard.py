"""`nodeagent admin dashboard` as a real process, and a headless Chromium to look at it.

The browser is Debian's chromium driven through Debian's chromedriver: Selenium is pointed
at both, so it never downloads a browser or a driver.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.wait import wait_for

CHROMIUM = os.environ.get("NODEAGENT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("NODEAGENT_CHROMEDRIVER", "/usr/bin/chromedriver")
URL_LINE = re.compile(r"^dashboard: (http://\S+/) ")


class DashboardProcess:
    """The dashboard, started as an admin starts it; `url` once it serves."""

    def __init__(self, env: Mapping[str, str], *args: str, refresh: float = 15.0) -> None:
        self.env = {**os.environ, **env}
        self.args = args
        self.refresh = refresh
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout: float = 30) -> DashboardProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodeagent.cli.main",
                "admin",
                "dashboard",
                "--listen",
                "127.0.0.1:0",
                "--refresh",
                str(self.refresh),
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: bool(self.url) or self._died(), timeout, "the dashboard to serve")
        if not self.url:
            raise RuntimeError("the dashboard stopped: " + "".join(self.output))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            found = URL_LINE.match(line)
            if found:
                self.url = found[1]

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        return self.proc.returncode


def browser(width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium with its console log kept (goog:loggingPrefs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def load_time(driver: Any, url: str) -> float:
    """Seconds from navigation start to the load event's end, as the browser measured it."""
    driver.get(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        timing = driver.execute_script(
            "const t = performance.getEntriesByType('navigation')[0];"
            "return t ? [t.startTime, t.loadEventEnd] : null;"
        )
        if timing and timing[1] > 0:
            return float(timing[1] - timing[0]) / 1000
        time.sleep(0.02)
    raise TimeoutError(f"{url} never finished loading")


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
