"""Which Ansible runs a cluster's Kubespray, and making that environment.

A Kubespray release runs only with the ansible-core range its first play checks
(`playbooks/ansible_version.yml`: v2.28 wants >= 2.16.4 and < 2.17.0, v2.31 the 2.18
series), and a cluster keeps the release that built it. So the service's own Ansible
cannot run every cluster's `scale.yml`: each cluster gets an environment of its own.

- The admin's `ansible_venv` when the cluster names one (used as it is).
- Otherwise a virtualenv made from the tree's `requirements.txt` (with the service's
  ansible-runner added unless the file pins one), under `ansible_envs_dir/<sha256>`: the
  hash covers the file, the runner and the Python, so clusters on one release share it and
  a changed file gets a fresh one. It is made in place (a virtualenv's scripts name their
  own path, so it cannot be built elsewhere and renamed), with a marker written last: a
  directory without the marker is half made (a crash, a deleted file) and made again.
  A file lock serialises makers across the replicas that share the directory.
- The configured environment (`ansible_venv` in inventory.toml, default the service's
  own) for a tree that declares no range, with a warning, or has no requirements.txt.

The release (git tag, else galaxy.yml's version) and the range are reported on the
cluster; a mismatch between the range and the environment's ansible-core is refused
before any playbook runs, with the fix in the message. Everything here blocks (git, pip,
an interpreter started to read a version): call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.config import InventoryConfig

log = logging.getLogger("nodeagent.inventory.ansible")
RANGE_FILE = "playbooks/ansible_version.yml"
REQUIREMENTS = "requirements.txt"
READY_MARK = ".nodeagent-ready"
TOOLS = ("ansible-playbook", "ansible-runner")


class EnvError(Exception):
    """No usable environment for the cluster; the message says why and what to do."""


class EnvUnusable(EnvError):
    """The tree's requirements.txt cannot be installed (pip's error): the cluster is marked
    unusable until it is updated, rather than trying pip again on every job."""


@dataclass(frozen=True)
class Tree:
    """What a Kubespray tree declares about the Ansible it needs."""

    release: str = ""  # "v2.28.0", or "" when neither git nor galaxy.yml tells
    min_version: str = ""  # inclusive; "" when the tree declares no range
    max_version: str = ""  # exclusive
    requirements: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def range_text(self) -> str:
        if not self.min_version:
            return ""
        return f">={self.min_version},<{self.max_version}"

    def describe(self) -> str:
        return f"Kubespray {self.release or '(release unknown)'}"


@dataclass
class Resolved:
    """The environment a cluster's jobs run with."""

    path: Path
    core_version: str
    tree: Tree
    warnings: list[str] = field(default_factory=list)

    def bin(self, tool: str) -> Path:
        return self.path / "bin" / tool


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric parts of a version ("2.16.19" -> (2, 16, 19); "2.17.0rc1" -> (2, 17, 0))."""
    parts = []
    for piece in text.strip().split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def in_range(version: str, tree: Tree) -> bool:
    if not tree.min_version:
        return True
    v = version_tuple(version)
    return version_tuple(tree.min_version) <= v < version_tuple(tree.max_version)


def _release(base: Path) -> str:
    """The checkout's git tag (`git describe`: v2.28.0, or v2.28.0-3-gabc past it), else the
    version of its galaxy.yml (Kubespray's collection metadata, in every release tarball)."""
    if (base / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["git", "-c", f"safe.directory={base}", "-C", str(base), "describe", "--tags"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    with contextlib.suppress(OSError, yaml.YAMLError):
        galaxy = yaml.safe_load((base / "galaxy.yml").read_text())
        if isinstance(galaxy, dict) and galaxy.get("version"):
            return f"v{galaxy['version']}"
    return ""


def _declared_range(plays: Any) -> tuple[str, str]:
    """(minimal, maximal) from the vars of ansible_version.yml's plays, or ("", "")."""
    for play in plays if isinstance(plays, list) else []:
        variables = play.get("vars") if isinstance(play, dict) else None
        if isinstance(variables, dict):
            low = variables.get("minimal_ansible_version")
            high = variables.get("maximal_ansible_version")
            if low and high:
                return str(low), str(high)
    return "", ""


def read_tree(kubespray_dir: str) -> Tree:
    base = Path(kubespray_dir)
    release = _release(base)
    req = base / REQUIREMENTS
    requirements = req if req.is_file() else None
    range_file = base / RANGE_FILE
    if not range_file.is_file():
        return Tree(
            release,
            requirements=requirements,
            warnings=(
                f"{base} has no {RANGE_FILE}: the Ansible it needs is unknown; "
                "using the configured environment",
            ),
        )
    try:
        low, high = _declared_range(yaml.safe_load(range_file.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        low, high = "", ""
        log.warning("%s: %s", range_file, exc)
    warnings: tuple[str, ...] = ()
    if not low:
        warnings = (f"{range_file} declares no minimal/maximal_ansible_version",)
    return Tree(release, low, high, requirements, warnings)


def core_version(env: Path) -> str:
    """The ansible-core version of a virtualenv, asked of its own interpreter."""
    python = env / "bin" / "python"
    missing = [t for t in ("python", *TOOLS) if not (env / "bin" / t).exists()]
    if missing:
        raise EnvError(f"Ansible environment {env} has no bin/{', bin/'.join(missing)}")
    try:
        out = subprocess.run(
            [str(python), "-c", "from ansible.release import __version__; print(__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvError(f"Ansible environment {env}: {exc}") from exc
    if out.returncode != 0 or not out.stdout.strip():
        why = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvError(f"Ansible environment {env} has no usable ansible-core: {why}")
    return out.stdout.strip()


def _pip_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return " | ".join(errors or lines[-3:])[-1500:] or "no output"


class Envs:
    """The inventory's Ansible environments (one object per service)."""

    def __init__(self, config: InventoryConfig) -> None:
        self.root = config.ansible_envs_path
        self.index_url = config.ansible_pip_index_url
        self.timeout = config.ansible_pip_timeout_seconds
        self.configured = Path(config.ansible_venv or sys.prefix)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- which environment --------------------------------------------------------------
    def _runner_spec(self, requirements: bytes) -> str:
        if re.search(rb"(?im)^\s*ansible[-_]runner\b", requirements):
            return ""
        return f"ansible-runner=={importlib.metadata.version('ansible-runner')}"

    def managed_path(self, tree: Tree) -> Path | None:
        """Where the environment made from the tree's requirements.txt lives, or None when
        the tree gets the configured one."""
        if tree.requirements is None or not tree.min_version:
            return None
        text = tree.requirements.read_bytes()
        key = b"\0".join([text, self._runner_spec(text).encode(), sys.version.split()[0].encode()])
        return self.root / hashlib.sha256(key).hexdigest()

    def inspect(self, cluster: ipb.Cluster) -> ipb.Cluster:
        """The cluster with its release, range and (when already made) environment filled in;
        EnvError when its own `ansible_venv` is missing or outside the tree's range."""
        out = ipb.Cluster()
        out.CopyFrom(cluster)
        tree = read_tree(cluster.kubespray_dir)
        out.kubespray_release = tree.release
        out.ansible_min_version, out.ansible_max_version = tree.min_version, tree.max_version
        out.ansible_env = out.ansible_core_version = out.ansible_env_error = ""
        if cluster.ansible_venv:
            env = Path(cluster.ansible_venv)
            version = core_version(env)
            self._check(tree, env, version, explicit=True)
        else:
            managed = self.managed_path(tree)
            env = managed or self.configured
            if managed is not None and not (managed / READY_MARK).is_file():
                return out  # made at the first join
            version = core_version(env)
            self._check(tree, env, version, explicit=False)
        out.ansible_env, out.ansible_core_version = str(env), version
        return out

    def _check(self, tree: Tree, env: Path, version: str, *, explicit: bool) -> None:
        if in_range(version, tree):
            return
        fix = (
            "clear the cluster's ansible_venv (`--ansible-venv ''`) to use one made from "
            "its requirements.txt, or point --ansible-venv at an environment with an "
            "ansible-core in that range"
            if explicit
            else f"make {tree.requirements or 'its requirements.txt'} pin an ansible-core in "
            "that range, or point the cluster's --ansible-venv at an environment with one"
        )
        raise EnvError(
            f"{tree.describe()} requires ansible-core {tree.range_text}; environment {env} "
            f"has {version}: {fix}"
        )

    def resolve(self, cluster: ipb.Cluster) -> Resolved:
        """The environment for a job of the cluster, made (or made again) as needed, its
        ansible-core checked against the tree's range."""
        tree = read_tree(cluster.kubespray_dir)
        warnings = list(tree.warnings)
        if cluster.ansible_venv:
            env = Path(cluster.ansible_venv)
            version = core_version(env)
            self._check(tree, env, version, explicit=True)
            return Resolved(env, version, tree, warnings)
        managed = self.managed_path(tree)
        if managed is None:
            if tree.min_version and tree.requirements is None:
                warnings.append(
                    f"{cluster.kubespray_dir} has no {REQUIREMENTS}: using the configured "
                    "environment"
                )
            version = core_version(self.configured)
            self._check(tree, self.configured, version, explicit=False)
            return Resolved(self.configured, version, tree, warnings)
        assert tree.requirements is not None
        self.ensure(managed, tree.requirements)
        version = core_version(managed)
        self._check(tree, managed, version, explicit=False)
        return Resolved(managed, version, tree, warnings)

    # --- making one ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(path.name, threading.Lock())
        with lock:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def ready(self, path: Path) -> bool:
        return (path / READY_MARK).is_file() and all((path / "bin" / t).exists() for t in TOOLS)

    def ensure(self, path: Path, requirements: Path) -> None:
        """Make the virtualenv at `path` from `requirements` unless it is there whole."""
        with self._locked(path):
            if self.ready(path):
                return
            if path.exists():
                log.warning("Ansible environment %s is incomplete; making it again", path)
                shutil.rmtree(path)
            log.info("making Ansible environment %s from %s", path, requirements)
            text = requirements.read_bytes()
            pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
            pip += ["--disable-pip-version-check", "-r", str(requirements)]
            pip += [s for s in [self._runner_spec(text)] if s]
            if self.index_url:
                pip += ["--index-url", self.index_url]
            try:
                for step, cmd in (
                    ("python -m venv", [sys.executable, "-m", "venv", str(path)]),
                    (f"pip install -r {requirements}", pip),
                ):
                    out = subprocess.run(
                        cmd,
                        capture_output=True,
                        text=True,
                        timeout=self.timeout,
                        stdin=subprocess.DEVNULL,
                    )
                    if out.returncode != 0:
                        raise EnvUnusable(f"{step} failed: {_pip_error(out.stderr + out.stdout)}")
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise EnvUnusable(f"{exc.cmd[2]}: no result in {self.timeout}s") from exc
            except EnvUnusable:
                shutil.rmtree(path, ignore_errors=True)
                raise
            except OSError as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise EnvError(f"making Ansible environment {path}: {exc}") from exc
            (path / READY_MARK).write_text(requirements.read_text(errors="replace"))
