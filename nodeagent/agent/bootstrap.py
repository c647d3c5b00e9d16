"""`nodeagent bootstrap`: first boot, run once by cloud-init, safe to run again.

Steps, each recorded in the state file when done so that after a reboot (or a
crash, or an operator re-running it) bootstrap continues where it stopped:

  config    write /etc/nodeagent/agent.toml and the token file (0600), every run
  discover  discover the hardware (the inventory sent at enrolment)
  enrol     pinned-CA enrolment with the bootstrap token -> node certificate
  tune      apply the profile the inventory assigned, as the policy allows
  handoff   done: nodeagent.service takes over (heartbeats, health, labels)

A failure names the step and says how to retry; steps already done are skipped.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nodeagent import tlsutil
from nodeagent.agent import config as config_mod
from nodeagent.agent.daemon import inventory_hash
from nodeagent.agent.enrol import EnrolmentError, InventoryClient, Snapshot
from nodeagent.agent.state import Phase, StateFile
from nodeagent.fsutil import write_atomic
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot

STEPS = ("config", "discover", "enrol", "tune", "handoff")
TUNE_TIMEOUT = 3600.0  # seconds; a hung playbook must not hold a first boot forever
ERROR_PREFIX = "nodeagent: error: "  # how the command line starts its one error line
_ADDRESS_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_")

# said after an enrolment failure only when the same run can work later (never for a token
# that is used up: that one needs a new token)
ENROL_RETRY = "; then run the same `nodeagent bootstrap` again: completed steps are skipped"


class BootstrapError(RuntimeError):
    """A step failed; the message names it and how to retry."""


@dataclass
class BootstrapOptions:
    inventory: str
    token: str
    ca_hash: str
    config_dir: str = "/etc/nodeagent"
    state_dir: str = "/var/lib/nodeagent"
    root: str = "/"
    bootstrap_address: str = ""  # enrolment port; default: the inventory's port + 1
    tuning: str = "apply"  # apply | check | skip
    reboot: str = "never"  # never | auto
    commands: str = ""  # tune apply's command stand-ins (a throwaway root); "" on a node


def _validate(opts: BootstrapOptions) -> None:
    """Values reach a TOML file and an RPC: check them before anything is written."""
    for flag, value in (
        ("--inventory", opts.inventory),
        ("--bootstrap-address", opts.bootstrap_address),
    ):
        host, _, port = value.rpartition(":")
        if value and (not host or not port.isdigit() or not set(value) <= _ADDRESS_CHARS):
            raise BootstrapError(f"{flag} must be host:port, got {value!r}")
    if not opts.inventory:
        raise BootstrapError("--inventory is required")
    if not opts.ca_hash.startswith("sha256:") or len(opts.ca_hash) != 71:
        raise BootstrapError(
            "--ca-hash must be sha256:<64 hex digits> "
            "(`nodeagent inventory ca-hash` on the inventory host)"
        )
    if opts.tuning not in ("apply", "check", "skip") or opts.reboot not in ("never", "auto"):
        raise BootstrapError("--tuning is apply|check|skip and --reboot never|auto")


def write_config(opts: BootstrapOptions) -> Path:
    directory = Path(opts.config_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    token_file = directory / "bootstrap-token"
    tlsutil.write_private(token_file, opts.token.strip().encode() + b"\n")
    config = directory / "agent.toml"
    text = (
        f'root = "{opts.root}"\nstate_dir = "{opts.state_dir}"\n\n[inventory]\n'
        f'address = "{opts.inventory}"\nca_hash = "{opts.ca_hash}"\n'
        f'token_file = "{token_file}"\n'
        + (f'bootstrap_address = "{opts.bootstrap_address}"\n' if opts.bootstrap_address else "")
    )
    write_atomic(config, text, mode=0o644)
    config_mod.load(config, required=True)  # what we wrote must be what the service accepts
    return config


def run(opts: BootstrapOptions, log: Callable[[str], None] = print) -> list[str]:
    """Run the remaining steps; returns the steps run this time."""
    _validate(opts)
    state_file = StateFile(Path(opts.state_dir) / "state.json")
    state = state_file.load()
    done: list[str] = list(state.get("bootstrap", {}).get("done", []))
    ran: list[str] = []
    root = HostRoot(opts.root)
    inventory = None

    def mark(step: str) -> None:
        done.append(step)
        ran.append(step)
        state.setdefault("bootstrap", {})["done"] = done
        state_file.save(state)
        log(f"bootstrap: {step} done")

    for step in STEPS:
        if step == "config":  # the command line is the truth: rewritten on every run
            write_config(opts)
            if step not in done:
                mark(step)
            continue
        if step in done:
            log(f"bootstrap: {step} already done, skipped")
            continue
        try:
            if step in ("discover", "enrol") and inventory is None:
                inventory = discover(root)
            if step == "enrol":
                assert inventory is not None
                cfg = config_mod.load(Path(opts.config_dir) / "agent.toml", required=True)
                snap = Snapshot(
                    phase=Phase.DISCOVERED,
                    inventory=inventory,
                    inventory_hash=inventory_hash(inventory),
                    drift_count=0,
                    health=[],
                )
                client = InventoryClient(
                    cfg.inventory, opts.state_dir, functools.partial(_same, snap)
                )
                if not client.identity.exists():
                    try:
                        asyncio.run(client.enrol())
                    except EnrolmentError as exc:  # one line; "again" only if it can work
                        again = ENROL_RETRY if exc.retry else ""
                        raise BootstrapError(f"step 'enrol' failed: {exc}{again}") from None
                state["node_id"] = client.identity.node_id()
                state["assignment_profile"] = client.desired.profile
            elif step == "tune":
                _tune(opts, str(state.get("assignment_profile", "")), log)
        except BootstrapError:
            raise
        except Exception as exc:  # every failure: which step, what, how to retry
            raise BootstrapError(
                f"step '{step}' failed: {exc}. Fix the cause and run the same "
                "`nodeagent bootstrap` again: completed steps are skipped."
            ) from exc
        mark(step)
    return ran


def _same(snap: Snapshot) -> Snapshot:
    return snap


def _tune(opts: BootstrapOptions, profile: str, log: Callable[[str], None]) -> None:
    """`nodeagent tune apply` of the assigned profile, its task lines passed to `log` as
    they come (a first boot that says nothing for minutes looks hung), its cause of failure
    raised. A child process, so that ansible-runner and what it imports stay out of
    bootstrap's own process; the same interpreter, so the same installation."""
    if opts.tuning == "skip" or not profile:
        log(f"bootstrap: tune skipped ({'policy skip' if profile else 'no profile assigned'})")
        return
    cmd = [
        sys.executable,
        "-m",
        "nodeagent.cli.main",
        "tune",
        "apply",
        "--profile",
        profile,
        "--root",
        opts.root,
        "--reboot",
        opts.reboot,
        "--state-dir",
        opts.state_dir,
    ]
    if opts.commands:
        cmd += ["--commands", opts.commands]
    if opts.tuning == "check":
        cmd.append("--check")
    log(f"bootstrap: tune: {'checking' if opts.tuning == 'check' else 'applying'} {profile}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []
        drain = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
        drain.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(TUNE_TIMEOUT, kill)
        timer.start()
        try:
            for line in proc.stdout:
                log(f"  {line.rstrip()}")
            returncode = proc.wait()
        finally:
            timer.cancel()
        drain.join(timeout=10)
    text = "".join(errors).strip()
    if returncode == 0:
        for line in text.splitlines():  # warnings: shown, not lost
            log(f"  {line}")
        return
    if timed_out.is_set():
        raise RuntimeError(f"tune apply of profile {profile} ran past {TUNE_TIMEOUT:.0f} s")
    marker = text.rfind(ERROR_PREFIX)
    cause = text[marker + len(ERROR_PREFIX) :] if marker >= 0 else text[-2000:] or "no output"
    raise RuntimeError(f"tune apply of profile {profile} exited {returncode}: {cause}")
