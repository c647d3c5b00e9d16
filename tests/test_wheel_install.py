"""The wheel on its own, as a node gets it: built from a copy of the repository, installed
with its dependencies into a fresh virtualenv outside the repository, and run from that
virtualenv only (its own `nodeagent`, a working directory outside the repository, no
PYTHONPATH), so nothing the checkout holds beside the package can make it pass.

A first boot is the whole path: `tune list|show` find the shipped profiles, `tune verify` and
`tune apply --check` run on a modelled root, a failing apply exits non-zero with its cause,
and `bootstrap` enrols with a live inventory and tunes a throwaway root (its task lines
streamed), failing first on a command that fails and passing when run again.

The dependencies come from the package index pip is configured with, resolved as on a
node; that install is most of this module's setup (under 10 s here), so it is done once per
module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent.api.v1 import inventory_pb2 as ipb
from testbed import fakehost
from testbed.inventory_process import InventoryProcess
from testbed.machines import build_machine

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {"cpu-node", "hgx-b200", "hgx-h100", "oci-bm-gpu-h100-8", "rtx-pro-6000"}
# one finished task as `tune apply` prints it (index, status, name, then any message), and
# as bootstrap passes it on (indented)
TASK_LINE = re.compile(r"^(?:  )?\[ ?(\d+)\] (ok|changed|skipped|FAILED) +(\S.*?)(?:  .*)?$")


@dataclass
class Installed:
    base: Path  # outside the repository: the working directory of every command
    venv: Path
    wheel: Path

    def env(self) -> dict[str, str]:
        """This machine's environment without the repository in it: no PYTHONPATH, no
        virtualenv of the repository on PATH, no profile directory of a test."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NODEAGENT_PROFILES_DIR", "PYTHONHOME")
        }
        path = [p for p in env.get("PATH", "/usr/bin:/bin").split(":") if str(REPO) not in p]
        env["PATH"] = ":".join([str(self.venv / "bin"), *path])
        return env

    def nodeagent(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "nodeagent"), *args],
            cwd=self.base,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv[:4]}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel-install")
    assert REPO not in base.parents, "the virtualenv must live outside the repository"
    src = base / "src"
    shutil.copytree(
        REPO / "nodeagent",
        src / "nodeagent",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copytree(REPO / "systemd", src / "systemd")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "-w", str(base / "dist"), str(src)], cwd=base)
    (wheel,) = (base / "dist").glob("nodeagent-*.whl")
    shutil.rmtree(src)
    venv = base / "venv"
    # The interpreter the tests run on, in a fresh environment: none of the repository's
    # virtualenv's packages (no --system-site-packages), not even pip, which this pip
    # installs into (--python) instead, saving ensurepip's ~5 s. --no-compile: byte-compiling
    # all of ansible-core up front is most of an install's time; imports compile what they use.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    found = Installed(base, venv, wheel)
    pip_install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    _run([*pip_install, "install", "-q", "--no-compile", str(wheel)], cwd=base, env=found.env())
    yield found
    shutil.rmtree(base, ignore_errors=True)


def _root(base: Path, name: str) -> tuple[Path, Path]:
    """A modelled cpu-node machine made a throwaway host; its root and command stand-ins."""
    root = base / name
    build_machine("cpu-node", root)
    fakehost.prepare(root)
    return root, root / ".nodeagent" / "commands.json"


def _task_lines(out: str) -> list[tuple[int, str, str]]:
    return [(int(m[1]), m[2], m[3]) for line in out.splitlines() if (m := TASK_LINE.match(line))]


def test_the_wheel_carries_the_profiles_and_the_playbook(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assets = "nodeagent/tuning/assets"
    assert {f"{assets}/profiles/{p}.yaml" for p in SHIPPED} <= names
    assert f"{assets}/playbooks/golden-image.yml" in names
    assert f"{assets}/playbooks/library/nodeagent_files.py" in names
    # the dashboard serves its own script and stylesheet: nothing comes from the internet
    static = "nodeagent/dashboard/static"
    assert {f"{static}/{n}" for n in ("dashboard.js", "dashboard.css", "favicon.svg")} <= names
    python = installed.venv / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-c", "import nodeagent; print(nodeagent.__file__)"],
        cwd=installed.base,
        env=installed.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(proc.stdout.strip()).is_relative_to(installed.venv), proc.stderr


def test_the_wheel_carries_the_alert_rules_and_dashboards(installed: Installed) -> None:
    share = installed.venv / "share" / "nodeagent" / "monitoring"
    shipped = {p.relative_to(share).as_posix() for p in share.rglob("*") if p.is_file()}
    assert shipped == {
        "alerts.yml",
        "grafana/nodeagent-inventory.json",
        "grafana/nodeagent-nodes.json",
    }
    repo = Path(__file__).resolve().parent.parent / "nodeagent" / "monitoring"
    assert all((share / name).read_bytes() == (repo / name).read_bytes() for name in shipped)


def test_tune_list_and_show_find_the_shipped_profiles(installed: Installed) -> None:
    proc = installed.nodeagent("tune", "list")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert {row[0] for row in rows} == SHIPPED
    site_packages = installed.venv / "lib"
    assert all(Path(row[-1]).is_relative_to(site_packages) for row in rows), proc.stdout
    proc = installed.nodeagent("tune", "show", "cpu-node")
    assert proc.returncode == 0 and "name: cpu-node" in proc.stdout, proc.stderr


def test_verify_check_and_a_failing_apply_on_a_modelled_root(installed: Installed) -> None:
    root, commands = _root(installed.base, "tune-root")
    proc = installed.nodeagent("tune", "verify", "--root", str(root), "-o", "json")
    assert proc.returncode == 3, proc.stderr  # a fresh machine drifts from its profile
    report = json.loads(proc.stdout)
    assert report["profile"] == "cpu-node" and report["drift"] is True

    state = installed.base / "tune-state"
    state.mkdir()
    apply = ["tune", "apply", "--root", str(root), "--commands", str(commands)]
    apply += ["--state-dir", str(state)]
    proc = installed.nodeagent(*apply, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checked: " in proc.stdout and "would run: update_grub, sysctl" in proc.stdout
    assert fakehost.commands_log(root) == []

    (root / ".nodeagent/fail").mkdir()
    (root / ".nodeagent/fail/sysctl").touch()
    proc = installed.nodeagent(*apply)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        "nodeagent: error: tune apply failed at task 'Apply sysctl settings': "
    )
    assert "simulated failure" in proc.stderr and "run kept in" not in proc.stderr
    assert ("FAILED", "Apply sysctl settings") in [(s, t) for _, s, t in _task_lines(proc.stdout)]


def test_bootstrap_enrols_and_tunes_streaming_each_task(installed: Installed) -> None:
    base = installed.base
    root, commands = _root(base, "boot-root")
    inventory = InventoryProcess(base / "inventory", f"sqlite:///{base / 'inventory.db'}")
    inventory.start()
    try:
        admin = inventory.admin()
        request = ipb.CreateTokenRequest(max_uses=1, preset=ipb.Assignment(profile="cpu-node"))
        token = base / "bootstrap-token"
        token.write_text(admin.CreateToken(request, timeout=30).secret)
        token.chmod(0o600)
        bootstrap = [
            "bootstrap",
            "--inventory",
            inventory.address,
            "--bootstrap-address",
            inventory.bootstrap,
            "--ca-hash",
            inventory.ca().pin,
            "--token-file",
            str(token),
            "--config-dir",
            str(base / "etc"),
            "--state-dir",
            str(base / "state"),
            "--root",
            str(root),
            "--commands",
            str(commands),
        ]
        # the first boot fails at its tune step: non-zero, the failing task and its cause
        (root / ".nodeagent/fail").mkdir()
        (root / ".nodeagent/fail/sysctl").touch()
        proc = installed.nodeagent(*bootstrap)
        assert proc.returncode == 1, proc.stdout
        assert "bootstrap: enrol done" in proc.stdout
        failed = [(s, t) for _, s, t in _task_lines(proc.stdout)]
        assert ("changed", "Write the golden configuration files") in failed
        assert failed[-1] == ("FAILED", "Apply sysctl settings")
        assert proc.stderr.startswith(
            "nodeagent: error: bootstrap: step 'tune' failed: tune apply of profile cpu-node "
            "exited 1: tune apply failed at task 'Apply sysctl settings': "
        )
        assert "simulated failure" in proc.stderr
        assert "bootstrap: tune done" not in proc.stdout

        # fixed, run again: it continues at the tune step, each task on its own line
        shutil.rmtree(root / ".nodeagent/fail")
        proc = installed.nodeagent(*bootstrap)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert "bootstrap: enrol already done, skipped" in out
        tasks = _task_lines(out)
        assert [index for index, _, _ in tasks] == list(range(1, len(tasks) + 1))
        done_now = [(s, t) for _, s, t in tasks]
        assert ("ok", "Write the golden configuration files") in done_now  # the first run's
        assert ("changed", "Apply sysctl settings") in done_now
        lines = out.splitlines()
        start = lines.index("bootstrap: tune: applying cpu-node")
        done = lines.index("bootstrap: tune done")
        assert start < lines.index(next(x for x in lines if TASK_LINE.match(x))) < done
        assert lines[-1] == "bootstrap complete: nodeagent.service takes over"
        assert "sysctl -p" in " ".join(fakehost.commands_log(root))
        nodes = admin.ListNodes(ipb.ListNodesRequest(), timeout=30).nodes
        assert [n.hostname for n in nodes] == ["cpu-node-01"]
    finally:
        inventory.kill()
