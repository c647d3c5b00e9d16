"""Running join jobs: Kubespray's add-node procedure through ansible-runner.

For each job this replica holds the cluster lease of: write the inventory into a private
data directory of the job's own (`<data_dir>/jobs/<id>/`, a fresh `ident` per playbook,
no env files written, so no run inherits another's settings), run `facts.yml` over all
hosts, then `scale.yml --limit=<batch>` batch after batch, sharing one fact cache
(Kubespray refuses `--limit` without a facts cache of the other hosts). Each host's first
failing task and message come from the runner's events. A monitor thread renews the
lease and reads the cancel flag, which may have been set through another replica.

A replica that stops hands its jobs back (lease expired at once) and a replica that
dies lets the lease run out; either way the next holder resumes the job at its current
batch, first killing any `ansible-playbook` the dead replica left running on this host
(found by the job directory in its command line), since Kubespray's plays are
idempotent and a half-run batch is simply run again.

A job directory holds the hosts' facts and the playbooks' output, so it is private (0700)
and removed once the job has been finished for `join_job_retention_days`; ansible-runner
records its environment in `artifacts/<ident>/command`, so it gets only the few variables
of the service's own that a run needs (RUNNER_ENV).

The playbooks run with the cluster's own Ansible (ansible_env.py): that environment's
`ansible-runner`, with its `bin` first on PATH so the runner starts its `ansible-playbook`
(and that ansible-core finds the collections installed beside it). The environment is
resolved, made if need be, and its ansible-core checked against the Kubespray tree's
range before the first playbook; a mismatch or a requirements.txt pip cannot install ends
the job with nothing run (the latter also marks the cluster unusable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import ansible_env, clusters, joins, kube_state, kubespray, reports
from nodeagent.inventory.config import InventoryConfig
from nodeagent.inventory.store import Conflict, NotFound, Store, StoreError

log = logging.getLogger("nodeagent.inventory.join")
FACTS_PLAYBOOKS = ("playbooks/facts.yml", "facts.yml")
SCALE_PLAYBOOK = "scale.yml"
REMOVE_PLAYBOOK = "remove-node.yml"
# Where Kubespray writes the cluster's admin kubeconfig (`kubeconfig_localhost: true`),
# relative to the job's inventory directory: the cluster's kubeconfig when it has none yet.
ADMIN_CONF = Path("artifacts") / "admin.conf"
# All ansible-runner is given of the service's environment (besides PATH, with the bin
# directory of the cluster's Ansible environment first): the home and temporary
# directories, the locale (ansible-core refuses a locale that is not UTF-8), the time
# zone, and an ssh-agent set up for the clusters' SSH. Nothing else: the service's
# environment may carry a database password or cloud credentials, and ansible-runner
# writes what it gets to a file. Proxy variables are left out too (their URLs may carry a
# password; Kubespray takes its proxies from the cluster's group_vars), and so are
# ANSIBLE_* ones (Ansible's settings come from the Kubespray checkout's ansible.cfg; the
# few the runner needs are set here).
RUNNER_ENV = ("HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSH_AUTH_SOCK")
RUNNER_SETTINGS = {"ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1"}
PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass
class PlayResult:
    status: str  # ansible-runner's: successful, failed, canceled, timeout, error
    rc: int
    processed: set[str] = field(default_factory=set)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (task, message)
    output_tail: str = ""


def _failure_message(res: Any) -> str:
    if not isinstance(res, dict):
        return str(res)[:1000]
    for key in ("msg", "stderr", "reason", "module_stderr"):
        value = res.get(key)
        if value:
            return str(value).strip()[:1000]
    return "failed"


def kill_leftovers(marker: str) -> list[int]:
    """SIGKILL the process groups of processes whose command line mentions `marker` (an
    ansible-playbook a dead replica left behind). Returns the pids found."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "ansible" in cmdline:
            found.append(int(entry))
    for pid in found:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return found


class JobRun:
    """One job on this replica, in a worker thread; database calls go through the loop."""

    def __init__(self, scheduler: JoinScheduler, job_id: str) -> None:
        self.scheduler = scheduler
        self.job_id = job_id
        self.workdir = Path(scheduler.jobs_dir) / job_id
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.cluster = ipb.Cluster()
        self.env_bin = Path(sys.executable).parent

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        coro = self.scheduler.store.run(lambda: fn(self.scheduler.store, *args, **kw))
        return asyncio.run_coroutine_threadsafe(coro, self.scheduler.loop).result()

    def event(self, kind: str, message: str, **kw: Any) -> None:
        with contextlib.suppress(StoreError):
            self.call(joins.event, self.job_id, kind, message, job_state=ipb.JOB_RUNNING, **kw)

    def _monitor(self) -> None:
        interval = max(self.scheduler.lease_seconds / 3, 0.2)
        while not self.done.wait(interval):
            try:
                if self.call(
                    joins.renew, self.job_id, self.scheduler.owner, self.scheduler.lease_seconds
                ):
                    self.cancel.set()
            except joins.LeaseLost:
                self.lost.set()
                return
            except StoreError as exc:  # the database is away: keep trying until the lease ends
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)

    def interrupted(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or self.scheduler.stopping.is_set()

    # --- the job --------------------------------------------------------------------------
    def run(self) -> None:
        monitor = threading.Thread(target=self._monitor, daemon=True, name=f"lease-{self.job_id}")
        monitor.start()
        try:
            self._run()
        except joins.LeaseLost:
            log.warning("job %s: lease lost to another replica; stopped", self.job_id)
        except Exception:  # a bug or the database gone: hand the job back, do not leave it held
            log.exception("job %s: runner failed; handing the job back", self.job_id)
            with contextlib.suppress(Exception):
                self.call(joins.release, self.job_id, self.scheduler.owner)
        finally:
            self.done.set()
            monitor.join(5)
        if self.scheduler.stopping.is_set() and not self.lost.is_set():
            with contextlib.suppress(Exception):
                self.call(joins.release, self.job_id, self.scheduler.owner)

    def _finish(self, message: str = "", **kw: Any) -> None:
        job = self.call(joins.finish, self.job_id, self.scheduler.owner, message, **kw)
        log.info("job %s finished %s: %s", self.job_id, ipb.JobState.Name(job.state), job.message)
        self.scheduler.on_finished(ipb.JobState.Name(job.state).removeprefix("JOB_").lower())

    def _run(self) -> None:
        killed = kill_leftovers(str(self.workdir))
        if killed:
            self.event("job-resumed", f"killed playbook processes of a previous run: {killed}")
        cluster, inventory, problems, per_node = self.call(
            joins.job_inventory, self.job_id, self.scheduler.owner
        )
        self.cluster = cluster
        if problems:
            self._finish(abort="cluster configuration: " + "; ".join(problems))
            return
        if any(per_node.values()):
            self.call(joins.fail_unstarted, self.job_id, self.scheduler.owner, per_node)
        base = Path(cluster.kubespray_dir)
        facts = next((p for p in FACTS_PLAYBOOKS if (base / p).is_file()), "")
        if not facts or not (base / SCALE_PLAYBOOK).is_file():
            self._finish(
                abort=f"{base} is not a Kubespray checkout (no playbooks/facts.yml or "
                f"{SCALE_PLAYBOOK})"
            )
            return
        if not self._resolve_env():
            return
        self.workdir.mkdir(exist_ok=True, mode=0o700)
        self.workdir.chmod(0o700)  # one made before directories were kept private
        (self.workdir / "inventory").mkdir(exist_ok=True, mode=0o700)
        inv_path = self.workdir / "inventory" / "hosts.yaml"
        inv_path.write_text(kubespray.to_yaml(inventory))
        if self.cancel.is_set():
            self._finish(cancelled=True)
            return
        job = self.call(joins.get_job, self.job_id)
        attempt = job.attempts
        if job.kind == joins.REMOVE and not (base / REMOVE_PLAYBOOK).is_file():
            self._finish(abort=f"{base} has no {REMOVE_PLAYBOOK}")
            return
        result = self._playbook(f"facts-a{attempt}", facts, "", inv_path)
        if self._stop_if_interrupted(result):
            return
        existing = {h.name for h in [*cluster.control_plane, *cluster.etcd]}
        broken = sorted(set(result.failed) & existing)
        if result.status in ("error", "timeout") or broken:
            why = (
                f"facts.yml failed on {', '.join(broken)}: {result.failed[broken[0]][1]}"
                if broken
                else f"facts.yml {result.status} (rc {result.rc}): {result.output_tail}"
            )
            self._finish(abort=why)
            return
        failed_facts = result.failed
        if job.kind == joins.REMOVE:
            self._remove(attempt, inv_path, failed_facts)
            return
        while True:
            batch, nodes = self.call(joins.batch_nodes, self.job_id, self.scheduler.owner)
            if not batch:
                break
            results = []
            for node_id, hostname in list(nodes):
                if hostname in failed_facts:
                    task, msg = failed_facts[hostname]
                    results.append((node_id, hostname, False, f"facts.yml: {task}", msg))
            todo = [(i, h) for i, h in nodes if h not in failed_facts]
            results += self._join_hooks("pre-join", todo)
            todo = [(i, h) for i, h in todo if not any(r[0] == i for r in results)]
            if todo:
                limit = ",".join(h for _, h in todo)
                self.event("playbook", f"scale.yml --limit={limit}", batch=batch)
                result = self._playbook(
                    f"scale-b{batch}-a{attempt}",
                    SCALE_PLAYBOOK,
                    limit,
                    inv_path,
                    "-e kubeconfig_localhost=true",
                )
                if self._stop_if_interrupted(result):
                    return
                outcomes = [self._outcome(result, i, h) for i, h in todo]
                joined = [(o[0], o[1]) for o in outcomes if o[2]]
                failed_post = {r[0]: r for r in self._join_hooks("post-join", joined)}
                results += [failed_post.get(o[0], o) for o in outcomes]
                if result.status == "successful":
                    self._adopt_kubeconfig(inv_path.parent / ADMIN_CONF)
            self.call(joins.record_results, self.job_id, self.scheduler.owner, batch, results)
        self._finish()

    def _join_hooks(self, phase: str, nodes: list[tuple[str, str]]) -> list[Any]:
        """Run the nodes' pre-join or post-join hooks (on the nodes, through their agents);
        the results of the nodes whose hooks failed, with the hook's stderr tail."""
        if not nodes:
            return []
        outcome = reports.run_join_hooks(
            self.call,
            self.job_id,
            phase,
            [i for i, _ in nodes],
            self.scheduler.hook_timeout,
            self.interrupted,
        )
        failed = []
        for node_id, hostname in nodes:
            if outcome.get(node_id):
                self.event("hook", f"{hostname}: {outcome[node_id]}"[:2000], node_id=node_id)
                failed.append((node_id, hostname, False, phase, outcome[node_id]))
        return failed

    def _remove(self, attempt: int, inv_path: Path, failed_facts: dict[str, Any]) -> None:
        """Kubespray's remove-node.yml for the job's (retired) nodes, named with `node=`
        as Kubespray's documentation runs it (its plays pick the node and the first
        control-plane host themselves; a --limit would cut the latter off)."""
        nodes = self.call(joins.remove_nodes, self.job_id, self.scheduler.owner)
        names = ",".join(h for _, h in nodes)
        extra = f"-e node={names} -e skip_confirmation=true"
        if any(h in failed_facts for _, h in nodes):
            extra += " -e reset_nodes=false"  # Kubespray's way for a host SSH cannot reach
        self.event("playbook", f"{REMOVE_PLAYBOOK} -e node={names}")
        result = self._playbook(f"remove-a{attempt}", REMOVE_PLAYBOOK, "", inv_path, extra)
        if self._stop_if_interrupted(result):
            return
        results = []
        for node_id, host in nodes:
            if host in result.failed:
                task, msg = result.failed[host]
                results.append((node_id, host, False, task, msg))
            elif result.status == "successful":
                results.append((node_id, host, True, "", ""))
            else:
                first = next(iter(result.failed.items()), None)
                why = f"{REMOVE_PLAYBOOK} {result.status} (rc {result.rc})"
                if first:
                    why += f"; failure on {first[0]}: {first[1][0]}: {first[1][1]}"
                results.append((node_id, host, False, "", why))
        self.call(joins.record_removed, self.job_id, self.scheduler.owner, results)
        self._finish()

    def _adopt_kubeconfig(self, path: Path) -> None:
        """Kubespray's admin.conf becomes the cluster's kubeconfig when it has none."""
        try:
            text = path.read_text()
        except OSError:
            return
        source = f"kubespray artifacts/admin.conf of job {self.job_id}"
        try:
            if self.call(kube_state.adopt_kubeconfig, self.cluster.name, text, source):
                self.event("kubeconfig", f"cluster {self.cluster.name}: kubeconfig from {source}")
        except (ValueError, StoreError) as exc:
            self.event("warning", f"{path.name} not used as the cluster's kubeconfig: {exc}")
        finally:
            path.unlink(missing_ok=True)  # a credential: the database keeps it, not the job

    def _resolve_env(self) -> bool:
        """Find (or make) the cluster's Ansible environment and record it on the job; False
        when the job ended instead (the reason in its message, the fix with it)."""
        cluster, envs = self.cluster, self.scheduler.envs
        self.event("ansible-env", f"resolving the Ansible environment of {cluster.kubespray_dir}")
        try:
            env = envs.resolve(cluster)
        except ansible_env.EnvUnusable as exc:
            with contextlib.suppress(StoreError):
                self.call(clusters.record_env, cluster.name, "", "", str(exc))
            self._finish(f"Ansible environment: {exc}", abort=f"Ansible environment: {exc}")
            return False
        except ansible_env.EnvError as exc:
            self._finish(f"Ansible environment: {exc}", abort=f"Ansible environment: {exc}")
            return False
        for warning in env.warnings:
            self.event("warning", warning)
        self.env_bin = env.path / "bin"
        self.call(
            joins.set_ansible, self.job_id, self.scheduler.owner, str(env.path), env.core_version
        )
        with contextlib.suppress(StoreError):
            self.call(clusters.record_env, cluster.name, str(env.path), env.core_version)
        wanted = env.tree.range_text or "no declared range"
        self.event(
            "ansible-env",
            f"{env.tree.describe()} (ansible-core {wanted}) runs with {env.path}: "
            f"ansible-core {env.core_version}",
        )
        return True

    def _outcome(
        self,
        result: PlayResult,
        node_id: str,
        host: str,
    ) -> tuple[str, str, bool, str, str]:
        if host in result.failed:
            task, msg = result.failed[host]
            return node_id, host, False, task, msg
        if result.status in ("successful", "failed") and host in result.processed:
            return node_id, host, True, "", ""
        why = f"scale.yml {result.status} (rc {result.rc}) before this host finished"
        first = next(iter(result.failed.items()), None)
        if first:
            other, (task, msg) = first
            return node_id, host, False, "", f"{why}; first failure on {other}: {task}: {msg}"
        return node_id, host, False, "", f"{why}: {result.output_tail}".strip(": ")

    def _stop_if_interrupted(self, result: PlayResult) -> bool:
        if self.lost.is_set() or self.scheduler.stopping.is_set():
            return True  # another replica (or this one, restarted) carries on
        if self.cancel.is_set():
            self._finish("cancelled", cancelled=True)
            return True
        return False

    def _playbook(
        self, ident: str, playbook: str, limit: str, inv_path: Path, extra: str = ""
    ) -> PlayResult:
        """Run one playbook through the `ansible-runner` command in a process of its own
        (a session of its own, so cancel and the leftover sweep reach the whole tree):
        pexpect's pty fork from this multi-threaded process can lose the child (as the
        tuning runner found), and a child process is what a cancel can stop."""
        bin_dir = self.env_bin
        cmd = [
            str(bin_dir / "ansible-runner"),
            "run",
            str(self.workdir),
            "-p",
            playbook,
            "--ident",
            ident,
            "--project-dir",
            self.cluster.kubespray_dir,
            "--inventory",
            str(inv_path),
            f"--cmdline=--become{' ' + extra if extra else ''}",
            "--omit-env-files",
            "-q",
        ]
        if limit:
            cmd += ["--limit", limit]
        env = {name: os.environ[name] for name in RUNNER_ENV if name in os.environ}
        env["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env.update(RUNNER_SETTINGS)
        artifacts = self.workdir / "artifacts" / ident
        # One fact cache for all the job's runs: ansible-runner would give each run its own
        # (under artifacts/<ident>), and scale.yml --limit needs what facts.yml gathered.
        # (An absolute `fact_cache` replaces the per-run path; a short pexpect timeout makes
        # ansible-runner notice SIGTERM, our cancel, quickly.)
        settings = {
            "fact_cache": str(self.workdir / "fact_cache"),
            "pexpect_timeout": 0.5,
            "suppress_ansible_output": True,
        }
        (self.workdir / "env").mkdir(exist_ok=True, mode=0o700)
        (self.workdir / "env" / "settings").write_text(json.dumps(settings))
        self.event("playbook", f"{playbook} started" + (f" (--limit={limit})" if limit else ""))
        events = _EventReader(artifacts / "job_events", playbook, self.event)
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=str(self.workdir),
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            return PlayResult("error", 127, output_tail=f"ansible-runner: {exc}")
        started, verdict = time.monotonic(), ""
        while proc.poll() is None:
            events.read()
            if not verdict and self.interrupted():
                verdict = "canceled"
            elif not verdict and time.monotonic() - started > self.scheduler.playbook_timeout:
                verdict = "timeout"
            if verdict:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGTERM)  # ansible-runner stops its playbook
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.25)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        events.read()
        status = verdict or _read(artifacts / "status") or "error"
        rc = int(_read(artifacts / "rc") or proc.returncode or 0)
        tail = ""
        if status != "successful":
            text = _read(artifacts / "stdout") + "\n" + stderr
            lines = [ln for ln in text.splitlines() if ln.strip()]
            tail = " | ".join(lines[-3:])[-500:]
        return PlayResult(status, rc, events.processed, events.failed, tail)


def _expired(
    store: Store, jobs_dir: Path, names: list[str], running: set[str], cutoff: float
) -> list[str]:
    """Which of the job directories `names` are past the retention (`cutoff`, epoch)."""
    expired = []
    for name in names:
        path = jobs_dir / name
        if name in running or path.is_symlink() or not path.is_dir():
            continue
        try:
            job = joins.get_job(store, name)
        except NotFound:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    expired.append(name)
            continue
        if job.state in joins.FINISHED and job.updated_at.ToSeconds() < cutoff:
            expired.append(name)
    return expired


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _counter(name: str) -> int:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class _EventReader:
    """ansible-runner's job_events/ files, read as they appear (in counter order); a file
    still being written is read on the next pass."""

    def __init__(self, directory: Path, playbook: str, emit: Callable[..., None]) -> None:
        self.directory, self.playbook, self.emit = directory, playbook, emit
        self.seen: set[str] = set()
        self.failed: dict[str, tuple[str, str]] = {}  # host -> first (task, message)
        self.processed: set[str] = set()

    def read(self) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        fresh = sorted(
            (n for n in names if n.endswith(".json") and n not in self.seen), key=_counter
        )
        for name in fresh:
            try:
                event = json.loads((self.directory / name).read_text())
            except (OSError, ValueError):
                return  # half written: later events wait for it, to keep the order
            self.seen.add(name)
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start" and data.get("task"):
            self.emit("task", f"{self.playbook}: {data['task']}")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get(
            "ignore_errors"
        ):
            host, task = str(data.get("host", "")), str(data.get("task", ""))
            msg = _failure_message(data.get("res"))
            if kind == "runner_on_unreachable":
                msg = f"unreachable: {msg}"
            if host not in self.failed:
                self.failed[host] = (task, msg)
                self.emit("host-failed", f"{self.playbook}: {task}: {msg}", hostname=host)
        elif kind == "playbook_on_stats":
            self.processed = set(data.get("processed") or {})
            for host in {**(data.get("failures") or {}), **(data.get("dark") or {})}:
                self.failed.setdefault(host, ("", "failed"))


class JoinScheduler:
    """Claims runnable jobs (lease), runs them in threads, starts auto-join jobs."""

    def __init__(
        self,
        store: Store,
        data_dir: str,
        *,
        poll_seconds: float,
        lease_seconds: float,
        playbook_timeout: int,
        retention_seconds: float = 14 * 86400,
        parallel: int = 4,
        envs: ansible_env.Envs | None = None,
        hook_timeout: float = 600.0,
    ) -> None:
        self.store = store
        self.hook_timeout = hook_timeout  # how long a job waits for its nodes' join hooks
        self.envs = envs or ansible_env.Envs(InventoryConfig(data_dir=data_dir))
        self.jobs_dir = str(Path(data_dir) / "jobs")
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.playbook_timeout = playbook_timeout
        self.retention_seconds = retention_seconds
        self.parallel = parallel
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="join")
        self.running: dict[str, Future[None]] = {}
        # told how each job this replica ran ended: succeeded, failed or cancelled (metrics)
        self.on_finished: Callable[[str], None] = lambda result: None

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        Path(self.jobs_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        Path(self.jobs_dir).chmod(0o700)
        pruned_at = -PRUNE_INTERVAL_SECONDS
        while not self.stopping.is_set():
            if self.loop.time() - pruned_at >= PRUNE_INTERVAL_SECONDS:
                with contextlib.suppress(StoreError):
                    await self.prune()
                    pruned_at = self.loop.time()
            with contextlib.suppress(StoreError):
                await self.tick()
            await asyncio.sleep(self.poll_seconds)

    async def prune(self) -> list[str]:
        """Remove the directories of jobs finished longer than the retention ago, and of
        jobs the database does not know once untouched that long. A job not finished keeps
        its directory whatever its age: this replica may resume it. Returns the names
        removed."""
        try:
            names = sorted(os.listdir(self.jobs_dir))
        except FileNotFoundError:
            return []
        cutoff = time.time() - self.retention_seconds
        expired = await self.store.run(
            _expired, self.store, Path(self.jobs_dir), names, set(self.running), cutoff
        )
        removed = []
        for name in expired:
            if name in self.running:  # claimed while the database was asked
                continue
            try:
                await asyncio.to_thread(shutil.rmtree, Path(self.jobs_dir) / name)
            except OSError as exc:
                log.warning("join job directory %s not removed: %s", name, exc)
                continue
            removed.append(name)
        if removed:
            log.info("removed %d join job directories past their retention", len(removed))
        return removed

    async def tick(self) -> None:
        for done in [j for j, f in self.running.items() if f.done()]:
            del self.running[done]
        for name in await self.store.run(joins.auto_join_candidates, self.store):
            with contextlib.suppress(Conflict):
                req = ipb.StartJoinRequest(cluster=name)
                job = await self.store.run(joins.create_job, self.store, req, "system:auto-join")
                log.info("auto-join: job %s for cluster %s", job.id, name)
        while len(self.running) < self.parallel and not self.stopping.is_set():
            job_id: str | None = await self.store.run(
                joins.claim_next, self.store, self.owner, self.lease_seconds
            )
            if job_id is None:
                return
            log.info("join job %s claimed by %s", job_id, self.owner)
            self.running[job_id] = self.pool.submit(JobRun(self, job_id).run)

    async def stop(self) -> None:
        """Stop running playbooks and hand the jobs back for the next replica to resume."""
        self.stopping.set()
        futures = [asyncio.wrap_future(f) for f in self.running.values()]
        if futures:
            await asyncio.wait(futures, timeout=20)
        self.pool.shutdown(wait=False, cancel_futures=True)
