"""Tuning benchmark: verify time on a DGX H100-like root, and the wall time of a full apply
and of an idempotent re-run against a throwaway root, beside a bare `ansible-playbook` run
of an empty play measured in the same run (the floor any Ansible-based apply pays).

Prints a table, then one JSON line (the last line) with every figure and goal.
Goals (tuning issue): verify < 100 ms; the overhead nodeagent adds to Ansible small.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testbed/ is not installed: it lives beside the package

from nodeagent.hardware.discover import discover  # noqa: E402
from nodeagent.host import HostRoot  # noqa: E402
from nodeagent.tuning import apply, profiles  # noqa: E402
from nodeagent.tuning.verify import verify  # noqa: E402
from testbed import fakehost  # noqa: E402
from testbed.machines import build_machine  # noqa: E402

VERIFY_RUNS = 30
EMPTY_RUNS = 3
EMPTY_PLAY = "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks: []\n"


def _apply_seconds(opts: apply.ApplyOptions) -> tuple[float, int]:
    start = time.perf_counter()
    changed = -1
    for event in apply.apply(opts):
        if event.HasField("result"):
            assert event.result.outcome != "failed", event.result.error
            changed = event.result.changed
    return time.perf_counter() - start, changed


def _empty_play_seconds(base: Path) -> float:
    play = base / "empty.yml"
    play.write_text(EMPTY_PLAY)
    binary = str(Path(sys.executable).with_name("ansible-playbook"))
    env = dict(
        os.environ,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_LOCAL_TEMP=str(base / "tmp"),
        ANSIBLE_HOME=str(base / "ansible"),
    )
    times = []
    for _ in range(EMPTY_RUNS):
        start = time.perf_counter()
        subprocess.run(
            [
                binary,
                "-i",
                "localhost,",
                "-e",
                f"ansible_python_interpreter={sys.executable}",
                str(play),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    base = Path(
        tempfile.mkdtemp(
            prefix="nodeagent-bench-tuning-",
            dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        )
    )
    try:
        dest = build_machine("dgx-h100", base / "dgx-h100")
        commands = fakehost.prepare(dest)
        root = HostRoot(dest)
        inv = discover(root)
        profile = profiles.find("hgx-h100", [profiles.SHIPPED])
        verify(root, profile, inv)  # warm
        times = []
        for _ in range(VERIFY_RUNS):
            start = time.perf_counter()
            report = verify(root, profile, inv)
            times.append(time.perf_counter() - start)
        verify_ms = statistics.median(times) * 1000
        settings = len(report.settings)

        opts = apply.ApplyOptions(profile, root, inv, commands=commands)
        full_s, full_changed = _apply_seconds(opts)
        rerun_s, rerun_changed = _apply_seconds(opts)
        empty_s = _empty_play_seconds(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rows = [
        (
            "verify, DGX H100 root (median)",
            f"{verify_ms:.2f} ms",
            f"< 100 ms ({settings} settings)",
        ),
        ("apply, full (throwaway root)", f"{full_s:.2f} s", f"{full_changed} changed tasks"),
        ("apply, idempotent re-run", f"{rerun_s:.2f} s", f"{rerun_changed} changed tasks"),
        ("ansible-playbook, empty play", f"{empty_s:.2f} s", "the floor"),
        ("re-run / empty play", f"{rerun_s / empty_s:.2f}x", "overhead over bare Ansible"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>10}  {note}")

    results = [
        {
            "name": "verify_dgx_h100_median",
            "value": round(verify_ms, 3),
            "unit": "ms",
            "goal": 100,
            "better": "lower",
        },
        {
            "name": "apply_full_wall",
            "value": round(full_s, 2),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "apply_rerun_wall",
            "value": round(rerun_s, 2),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "apply_rerun_changed_tasks",
            "value": rerun_changed,
            "unit": "tasks",
            "goal": 0,
            "better": "lower",
        },
        {
            "name": "ansible_empty_play_wall",
            "value": round(empty_s, 2),
            "unit": "s",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "apply_rerun_to_empty_play_ratio",
            "value": round(rerun_s / empty_s, 2),
            "unit": "x",
            "goal": None,
            "better": "lower",
        },
        {
            "name": "apply_full_to_empty_play_ratio",
            "value": round(full_s / empty_s, 2),
            "unit": "x",
            "goal": None,
            "better": "lower",
        },
    ]
    print(json.dumps({"bench": "tuning", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
