"""`nodeagent tune validate|list|show|schema|verify|apply`: golden-image profiles."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_ERROR, EXIT_OK, EXIT_PROBLEM, CliError, add_output

STATUS_WORDS = {1: "ok", 2: "DRIFT", 3: "pending", 4: "unknown"}
TASK_WORDS = {1: "...", 2: "ok", 3: "changed", 4: "skipped", 5: "FAILED"}


def _cmd_validate(args: argparse.Namespace) -> int:
    from nodeagent.tuning.loader import ProfileError, load_file

    bad = 0
    for path in args.files:
        try:
            profile = load_file(path)
            print(f"{path}: ok (profile {profile.name})")
        except ProfileError as exc:
            print(f"{exc}", file=sys.stderr)
            bad += 1
    return EXIT_ERROR if bad else EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from nodeagent.tuning.schema import PROFILE_SCHEMA

    print(json.dumps(PROFILE_SCHEMA, indent=2))
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.tuning import profiles

    rows = []
    found = profiles.load_all(profiles.profile_dirs(args.profiles_dir))
    if args.output != "table":
        docs = {"profiles": [render.to_dict(p) for p in found]}
        sys.stdout.write(render.dump(docs, args.output))
        return EXIT_OK
    for p in found:
        s = p.selector
        sel = "; ".join(
            x
            for x in (
                ",".join(s.gpu_models),
                f"{s.gpu_count} GPUs" if s.HasField("gpu_count") else "",
                ",".join(s.system_products),
                ",".join(s.cpu_vendors),
            )
            if x
        )
        rows.append([p.name, sel or "-", str(s.priority), p.source])
    print(render.table(rows, ["PROFILE", "SELECTOR", "PRIORITY", "FILE"]))
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.tuning import profiles

    profile = profiles.find(args.profile, profiles.profile_dirs(args.profiles_dir))
    if args.resolved or args.output == "json":
        text = render.to_json(profile) if args.output == "json" else render.to_yaml(profile)
        print(text, end="")
    else:
        # as written: the settings this file chose, with its base named by `extends:`
        print(Path(profile.source).read_text(encoding="utf-8"), end="")
    if args.output == "yaml" and profile.extends:
        print(f"# deviations from {profile.extends}: {len(profile.deviations) or 'none'}")
        for d in profile.deviations:
            print(f"#   {d.setting}: {d.base} -> {d.value}  ({d.reason})")
    if args.output == "yaml":
        for note in _left_to_operator(profile, args.gpu_driver):
            print(f"# {note}")
    return EXIT_OK


def _left_to_operator(profile: Any, node_mode: str | None) -> list[str]:
    """What a node in operator mode does not get from this profile (the Operator runs it)."""
    from nodeagent.tuning import gpu_driver

    mode = gpu_driver.effective(node_mode or "", profile.gpu_driver)
    return gpu_driver.notes(gpu_driver.for_mode(profile, mode).left_out)


def _flat(profile: Any) -> dict[str, str]:
    """Setting path -> value as text, over everything but a profile's own description."""
    from google.protobuf import json_format

    from nodeagent.tuning.loader import META_KEYS, as_text

    data = json_format.MessageToDict(profile, preserving_proto_field_name=True)
    out: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else key)
        else:
            out[path] = as_text(value)

    walk({k: v for k, v in data.items() if k not in META_KEYS | {"source"}}, "")
    return out


def _cmd_diff(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.tuning import profiles

    dirs = profiles.profile_dirs(args.profiles_dir)
    a, b = (_flat(profiles.find(name, dirs)) for name in (args.a, args.b))
    rows = [
        [key, a.get(key, "-"), b.get(key, "-")]
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]
    if not rows:
        print(f"{args.a} and {args.b} set the same values")
    else:
        print(render.table(rows, ["SETTING", args.a.upper(), args.b.upper()]))
    return EXIT_OK


def _bmc(args: argparse.Namespace) -> Any:
    if not getattr(args, "bmc", None):
        return None
    from nodeagent.tuning.bios import BmcTarget

    password = os.environ.get("NODEAGENT_BMC_PASSWORD", "")
    if args.bmc_password_file:
        try:
            password = Path(args.bmc_password_file).read_text().strip()
        except OSError as exc:
            raise CliError(
                f"--bmc-password-file: {exc.strerror}: {args.bmc_password_file}"
            ) from None
    try:
        return BmcTarget(
            args.bmc, args.bmc_user or "", password, not args.bmc_insecure, args.bmc_system or ""
        )
    except ValueError as exc:
        raise CliError(f"--bmc: {exc}") from None


def _resolve(args: argparse.Namespace, root: Any) -> tuple[Any, Any]:
    from nodeagent.hardware.discover import discover
    from nodeagent.tuning import profiles

    inv = discover(root)
    try:
        profile = profiles.resolve(args.profile, inv, profiles.profile_dirs(args.profiles_dir))
    except profiles.NoProfile as exc:
        raise CliError(str(exc)) from None
    return profile, inv


def _for_mode(profile: Any, node_mode: str | None) -> Any:
    """The profile as verify sees it on a node whose driver is `node_mode`'s (or the
    profile's): the Operator's units and modules are not expected on the host."""
    from nodeagent.tuning import gpu_driver

    mode = gpu_driver.effective(node_mode or "", profile.gpu_driver)
    return gpu_driver.for_mode(profile, mode).profile


def print_report(report: Any, verbose: bool = False) -> None:
    from nodeagent.cli import render

    rows = [
        [s.setting, STATUS_WORDS.get(s.status, "?"), s.expected, s.actual or "-", s.detail]
        for s in report.settings
        if verbose or s.status != 1
    ]
    print(f"profile {report.profile} on {report.root} ({report.duration_seconds * 1000:.1f} ms)")
    if rows:
        print(render.table(rows, ["SETTING", "STATUS", "EXPECTED", "ACTUAL", "DETAIL"]))
    for h in report.hardware:
        print(f"hardware mismatch: {h.reason} (expected {h.expected}, found {h.actual})")
    counts = {
        w: sum(1 for s in report.settings if STATUS_WORDS.get(s.status) == w)
        for w in STATUS_WORDS.values()
    }
    summary = ", ".join(f"{n} {w.lower()}" for w, n in counts.items() if n)
    print(f"{summary}{'; reboot needed' if report.reboot_needed else ''}")


def _cmd_verify(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.host import open_root
    from nodeagent.tuning import bios as bios_mod
    from nodeagent.tuning.verify import verify

    target = _bmc(args)
    with open_root(args.root) as root:
        profile, inv = _resolve(args, root)
        profile = _for_mode(profile, args.gpu_driver)
        bios_results = []
        if target is not None:
            try:
                bios_results = bios_mod.verify_bios(target, profile.bios)
            except bios_mod.BiosError as exc:
                raise CliError(str(exc)) from None
        report = verify(root, profile, inv, bios_results)
    if args.output != "table":
        sys.stdout.write(render.message(report, args.output))
    else:
        print_report(report, args.all)
    return EXIT_PROBLEM if report.drift or report.hardware else EXIT_OK


def _phase(state_dir: str) -> str:
    try:
        return str(json.loads((Path(state_dir) / "state.json").read_text()).get("phase", ""))
    except (OSError, ValueError):
        return ""


def print_event(event: Any, tty: bool, show_diff: bool) -> None:
    if event.HasField("task"):
        t = event.task
        if t.status == 1:
            if tty:
                print(f"\r[{t.index:2d}] ...      {t.task}", end="", flush=True)
            return
        msg = f"  {t.message}" if t.message else ""
        back = "\r" if tty else ""  # over the "..." line; a pipe or a log gets plain lines
        print(f"{back}[{t.index:2d}] {TASK_WORDS.get(t.status, '?'):<8} {t.task}{msg}", flush=True)
        if show_diff and t.diff:
            sys.stdout.write(t.diff if t.diff.endswith("\n") else t.diff + "\n")
        return
    r = event.result
    print(
        f"{r.outcome}: {r.changed} changed, {r.ok} ok, {r.skipped} skipped "
        f"in {r.duration_seconds:.1f} s"
    )
    if r.reboot_needed:
        print(f"reboot needed for: {', '.join(r.reboot_reasons)} (policy {r.reboot_policy})")
    for note in r.notes:
        print(f"note: {note}")


def _cmd_apply(args: argparse.Namespace) -> int:
    from nodeagent.cli import render
    from nodeagent.host import open_root
    from nodeagent.tuning import apply as apply_mod
    from nodeagent.tuning import bios as bios_mod
    from nodeagent.tuning import commands as commands_mod

    reason = apply_mod.refuse_reason(_phase(args.state_dir), args.maintenance)
    if reason and not args.check:
        raise CliError(f"refusing to apply: {reason} (--maintenance)")
    try:
        commands = commands_mod.load(args.commands)
    except commands_mod.CommandsError as exc:
        raise CliError(str(exc)) from None
    target = _bmc(args)
    with open_root(args.root) as root:
        if not root.is_live and not args.commands:
            raise CliError(
                "--root without --commands would run this machine's update-grub, "
                "sysctl, systemctl... against it; give stand-ins with --commands"
            )
        profile, inv = _resolve(args, root)
        bios_step = None
        if target is not None:
            settings = profile.bios

            def bios_step(check: bool) -> Any:
                return bios_mod.apply_bios(target, settings, check)

        opts = apply_mod.ApplyOptions(
            profile,
            root,
            inv,
            check=args.check,
            reboot_policy=args.reboot,
            commands=commands,
            bios=bios_step,
            keep_run=args.keep_run,
            gpu_driver=args.gpu_driver or "",
        )
        result = None
        tty = sys.stdout.isatty() and args.output == "table"
        for event in apply_mod.apply(opts):
            if args.output == "json":
                print(render.to_json(event).replace("\n", " "), flush=True)
            else:
                print_event(event, tty, args.check or args.diff)
            if event.HasField("result"):
                result = event.result
    if result is None:
        raise CliError("tune apply ended without a result")
    if result.outcome == "failed":
        # the cause on stderr, where a caller (bootstrap, cloud-init's log) looks for it
        task = result.failed_task
        where = "" if task == apply_mod.RUNNER_TASK else f" at task '{task}'"
        raise CliError(f"tune apply failed{where}: {result.error}")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="profile name or file (default: by selector)")
    p.add_argument("--profiles-dir", help="look here first for profiles")
    p.add_argument("--root", help="a directory laid out like / (default: this machine)")
    p.add_argument("--bmc", help="Redfish base URL of the BMC, e.g. https://10.0.0.5")
    p.add_argument("--bmc-user", help="BMC user name")
    p.add_argument(
        "--bmc-password-file", help="file holding the BMC password (or NODEAGENT_BMC_PASSWORD)"
    )
    p.add_argument("--bmc-system", help="Redfish system id when the BMC has several")
    p.add_argument("--bmc-insecure", action="store_true", help="do not verify the BMC's TLS")
    _gpu_driver_flag(p)


def _gpu_driver_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu-driver",
        choices=("host", "operator"),
        help="who owns the NVIDIA driver (default: the profile's gpu_driver, else host); "
        "operator leaves persistenced, fabric manager and nvidia-peermem to the GPU Operator",
    )


def register(sub: Any) -> None:
    tune = sub.add_parser("tune", help="golden-image tuning: profiles, verify, apply")
    tsub = tune.add_subparsers(dest="tune_command", required=True, metavar="ACTION")
    p = tsub.add_parser("validate", help="check profile files against the schema")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_validate)
    p = tsub.add_parser("schema", help="print the profile JSON Schema")
    p.set_defaults(func=_cmd_schema)
    p = tsub.add_parser("list", help="installed profiles and their selectors")
    p.add_argument("--profiles-dir")
    add_output(p)
    p.set_defaults(func=_cmd_list)
    p = tsub.add_parser("show", help="a profile as the agent reads it")
    p.add_argument("profile")
    p.add_argument("--profiles-dir")
    p.add_argument(
        "--resolved", action="store_true", help="the profile merged onto its bases (extends:)"
    )
    _gpu_driver_flag(p)
    add_output(p, ["yaml", "json"], default="yaml")  # a profile is a document, not a table
    p.set_defaults(func=_cmd_show)
    p = tsub.add_parser("diff", help="settings two profiles set differently (merged)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--profiles-dir")
    p.set_defaults(func=_cmd_diff)
    p = tsub.add_parser("verify", help="compare this node with its profile (exit 3 on drift)")
    _common(p)
    add_output(p)
    p.add_argument("--all", action="store_true", help="list settings that are ok too")
    p.set_defaults(func=_cmd_verify)
    p = tsub.add_parser("apply", help="bring this node to its profile (ansible-runner, Redfish)")
    _common(p)
    add_output(p, ["table", "json"])  # a stream of task events: JSON one per line
    p.add_argument("--check", action="store_true", help="show what would change, change nothing")
    p.add_argument("--diff", action="store_true", help="show file diffs when applying")
    p.add_argument(
        "--reboot",
        choices=["never", "auto"],
        default="never",
        help="reboot when a setting needs it (default never: report only)",
    )
    p.add_argument(
        "--maintenance",
        action="store_true",
        help="the node is held for maintenance: apply even if it is JOINED",
    )
    p.add_argument("--commands", help="JSON map of command stand-ins (tests, throwaway roots)")
    p.add_argument(
        "--keep-run",
        action="store_true",
        help="keep ansible-runner's run folder (artifacts, extravars) and print where it is",
    )
    p.add_argument("--state-dir", default="/var/lib/nodeagent", help="agent state (for the phase)")
    p.set_defaults(func=_cmd_apply)
