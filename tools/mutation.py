"""Mutation testing of the core modules with mutmut (`make mutation`, issue 22).

Line coverage says a test ran the code; a mutation score says a test would notice if the code
were wrong. For each module in TARGETS this runs mutmut 3 with that module's own test selection
and reports how many of the generated mutants the tests kill.

Each module runs in a throwaway copy of the repository, because mutmut writes ./mutants and a
config section into pyproject.toml, and several people (and parallel sessions) share one
checkout. The copy gets a generated `[tool.mutmut]`: the whole package is copied into mutants/
(so imports resolve there rather than through the editable install), only the target module is
mutated, and `process_isolation = "forkserver"`, since with plain fork grpc's threads make the
forked mutant runs hang.

mutmut runs against a mutant only the tests that called its function in mutmut's own
process. Tests that drive the module through a child process (`nodeagent inventory serve`
in tests/security/test_attacks.py) are named in a target's `through_child`: after the stats
run, widen_mapping adds them to every function, and a second `mutmut run` tests all mutants.

Mutants that no selected test executes ("not covered") count as survivors: unexecuted code is
untested code. With `through_child`, a survivor of a function no test called in-process is
reported as not covered: whether the child ran it cannot be seen.

Mutants judged equivalent (no test could tell them apart from the original) are listed in
tools/mutation_equivalents.txt, one a line with its reason, and leave the score's denominator.
A listed mutant that a test kills, or that no longer exists, is reported as a stale entry:
mutant numbers are positions within a function, so editing the function renumbers them and
each entry for it must be checked again.

Output: per module its survivors (name, status and `mutmut show` diff, so the next person can
write the missing test), then one table of all modules, and as the last line of stdout the
benchmark JSON. A missed goal is printed (MISSED in the table), not turned into a failing exit
status, as for the other benchmarks; the exit status is non-zero only when mutmut itself could
not run a module (failing clean test run, crash, time limit). A failed `mutmut run` is tried
once more first: one flaky test in mutmut's stats or clean run fails the whole run.

    python tools/mutation.py [--only nodeagent/topology/tiers.py] [--jobs N] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tools" / "mutation_equivalents.txt"
MUTMUT = Path(sys.executable).parent / "mutmut"  # the venv's entry point, beside this Python

# Security-critical code must be pinned down tighter than the rest.
SECURITY_GOAL = 95.0
DEFAULT_GOAL = 85.0


@dataclass(frozen=True)
class Target:
    """A module, the tests that exercise it (fast enough to run once per mutant), a goal."""

    module: str
    tests: tuple[str, ...]
    goal: float
    # test files of the selection that reach the module only through a child process
    # (see widen_mapping): every mutant runs them, whatever mutmut's own mapping says
    through_child: tuple[str, ...] = ()


TARGETS: tuple[Target, ...] = (
    Target(
        "nodeagent/inventory/lifecycle.py",
        ("tests/inventory/test_lifecycle.py", "tests/inventory/test_service.py"),
        SECURITY_GOAL,
    ),
    Target(
        "nodeagent/api/auth.py",
        ("tests/test_auth.py", "tests/security/test_attacks.py"),
        SECURITY_GOAL,
        through_child=("tests/security/test_attacks.py",),
    ),
    Target(
        "nodeagent/inventory/tokens.py",
        ("tests/inventory/test_tokens.py", "tests/inventory/test_service.py"),
        SECURITY_GOAL,
    ),
    Target(
        "nodeagent/inventory/certificates.py",
        (
            "tests/inventory/test_certificates.py",
            "tests/security/test_attacks.py",
            "tests/inventory/test_service.py",
        ),
        SECURITY_GOAL,
        through_child=("tests/security/test_attacks.py",),
    ),
    Target("nodeagent/tuning/validators.py", ("tests/tuning/test_validators.py",), SECURITY_GOAL),
    Target(
        "nodeagent/label_syntax.py",
        ("tests/test_label_syntax.py", "tests/test_boundaries.py", "tests/labels"),
        DEFAULT_GOAL,
    ),
    Target(
        "nodeagent/hardware/parse.py",
        ("tests/hardware/test_parse.py", "tests/test_boundaries.py"),
        DEFAULT_GOAL,
    ),
    Target(
        "nodeagent/topology/tiers.py",
        ("tests/topology/test_tiers.py", "tests/topology/test_fleet.py"),
        DEFAULT_GOAL,
    ),
)

# mutmut's statuses (mutmut.stats.status_by_exit_code) folded into the table's columns. A
# segfault is how a mutant killed for overrunning its CPU limit (SIGKILL) shows up, and a
# crash of the test process is a detection too. Anything not named here (suspicious, not
# checked, interrupted) counts as undetected and is listed with the survivors.
DETECTED = frozenset({"killed", "caught by type check", "segfault"})
TIMEOUT = "timeout"
NOT_COVERED = "no tests"
SKIPPED = "skipped"
NOT_CHECKED = "not checked"

# Never copied into the throwaway tree: at the top, version control, caches and build outputs
# (every dot-directory: .git, .venv, .mypy_cache, .hypothesis, ...); anywhere, bytecode,
# egg-info and virtualenvs under any name.
TOP_IGNORE = {"build", "dist", "mutants"}


@dataclass
class Result:
    """One module's mutants by status, and what the equivalents file said about them."""

    target: Target
    status_by_mutant: dict[str, str] = field(default_factory=dict)
    equivalent: set[str] = field(default_factory=set)
    stale: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def counts(self) -> Counter[str]:
        """Column counts over the mutants not judged equivalent."""
        c: Counter[str] = Counter()
        for name, status in self.status_by_mutant.items():
            if name in self.equivalent:
                c["equivalent"] += 1
            elif status in DETECTED:
                c["killed"] += 1
            elif status == TIMEOUT:
                c["timeout"] += 1
            elif status == NOT_COVERED:
                c["not covered"] += 1
            elif status == SKIPPED:
                c["skipped"] += 1
            else:
                c["survived"] += 1
        return c

    def score(self) -> float:
        """Detected (killed or timed out) over all mutants but the skipped and the equivalent."""
        c = self.counts()
        scored = len(self.status_by_mutant) - c["skipped"] - c["equivalent"]
        return 100.0 if scored == 0 else 100.0 * (c["killed"] + c["timeout"]) / scored

    def undetected(self) -> list[str]:
        """The mutants a test still has to kill: survivors and uncovered ones (not unchecked)."""
        return sorted(
            (
                name
                for name, status in self.status_by_mutant.items()
                if name not in self.equivalent
                and status not in DETECTED
                and status not in (TIMEOUT, SKIPPED, NOT_CHECKED)
            ),
            key=mutant_order,
        )

    def unchecked(self) -> int:
        """Mutants mutmut never got to (it failed or hit the time limit): counted as survivors."""
        return sum(status == NOT_CHECKED for status in self.status_by_mutant.values())


def mutant_order(name: str) -> tuple[str, int]:
    """Function by function, mutants in source order (x_f__mutmut_9 before x_f__mutmut_10)."""
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def dotted(module: str) -> str:
    """mutmut names mutants by dotted module path: nodeagent.topology.tiers.x_f__mutmut_1."""
    return module.removesuffix(".py").replace("/", ".")


def load_equivalents(path: Path) -> dict[str, dict[str, str]]:
    """module path -> full mutant name -> reason; every entry must give its reason."""
    known = {t.module for t in TARGETS}
    out: dict[str, dict[str, str]] = {}
    if not path.exists():
        return out
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry, _, reason = line.partition("#")
        fields = entry.split()
        if len(fields) != 2 or not reason.strip():
            raise SystemExit(f"{path}:{lineno}: expected 'MODULE MUTANT  # reason', got {raw!r}")
        module, mutant = fields
        if module not in known:
            raise SystemExit(f"{path}:{lineno}: {module} is not one of the configured modules")
        prefix = dotted(module) + "."
        full = mutant if mutant.startswith(prefix) else prefix + mutant
        out.setdefault(module, {})[full] = reason.strip()
    return out


def copy_repo(dest: Path) -> None:
    """The working tree as it is now (uncommitted edits included), without the heavy parts."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        top = here == REPO
        return {
            n
            for n in names
            if (top and (n.startswith(".") or n in TOP_IGNORE))
            or n == "__pycache__"
            or n.endswith(".egg-info")
            or (here / n / "pyvenv.cfg").exists()
        }

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def toml_list(items: list[str]) -> str:
    """A TOML array of strings (JSON string syntax is valid TOML for these plain paths)."""
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write_config(tree: Path, target: Target) -> None:
    """Append mutmut's section to the copy's pyproject.toml (the checkout's is never touched)."""
    also_copy = sorted(p.name for p in tree.iterdir() if p.name not in ("nodeagent", "mutants"))
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["nodeagent"]',
            f"only_mutate = {toml_list([target.module])}",
            f"pytest_add_cli_args_test_selection = {toml_list(list(target.tests))}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            f"also_copy = {toml_list(also_copy)}",
            'process_isolation = "forkserver"',
            "use_git_change_detection = false",
            "",
        ]
    )
    with (tree / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(section)


def processes_naming(text: str) -> list[int]:
    """Processes whose command line names our work directory: leftovers of killed test runs.

    A mutant run killed at its CPU limit never reaches fixture teardown, so a PostgreSQL it
    started (data directory under our TMPDIR) would outlive the run.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def end_leftovers(workdir: Path) -> None:
    """TERM, then after a grace period KILL, each leftover process (by pid)."""
    pids = processes_naming(str(workdir))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
            if not pids:
                return
            time.sleep(0.2)


def read_statuses(tree: Path, target: Target) -> dict[str, str]:
    """mutmut's verdict per mutant, from the .meta file it keeps beside the mutated module."""
    meta = tree / "mutants" / (target.module + ".meta")
    if not meta.exists():
        return {}
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in exit_codes.items()}


def log_tail(log: Path, lines: int) -> list[str]:
    """The end of mutmut's output without its spinner frames, which would fill any tail."""
    text = log.read_text(errors="replace").replace("\r", "\n")
    spinner = tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    return [line for line in text.splitlines() if not line.startswith(spinner)][-lines:]


class Run:
    """`mutmut run` in one throwaway tree, under one deadline for all its invocations."""

    def __init__(self, workdir: Path, jobs: int, limit_s: float) -> None:
        self.workdir, self.tree, self.tmp = workdir, workdir / "repo", workdir / "tmp"
        self.log = workdir / "mutmut.log"
        self.jobs = jobs
        self.deadline = time.monotonic() + limit_s
        self.live = sys.stderr.isatty()  # a terminal shows mutmut's progress as it goes

    def once(self, names: list[str]) -> int | None:
        """Exit status of one `mutmut run [NAMES]`; None when the deadline stopped it."""
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [str(MUTMUT), "run", "--max-children", str(self.jobs), *names],
                cwd=self.tree,
                # a PostgreSQL a test starts lands under our TMPDIR, where end_leftovers finds it
                env={**os.environ, "TMPDIR": str(self.tmp)},
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr if self.live else out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc: int | None = proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        end_leftovers(self.workdir)
        return rc

    def retried(self, names: list[str]) -> int | None:
        """Once more after a failure: a test that flakes in mutmut's stats or clean run (under
        the load of a shared machine) fails the whole run, and mutmut resumes where it was."""
        rc = self.once(names)
        if rc not in (0, None):
            if not self.live:
                print("\n".join(log_tail(self.log, 80)), file=sys.stderr)
            print(f"   mutmut exited {rc}; trying once more", file=sys.stderr)
            rc = self.once(names)
        return rc


def widen_mapping(tree: Path, target: Target) -> set[str]:
    """Give every function of the module the tests that reach it through a child process.

    mutmut maps each function to the tests that called it in its own process, so a test
    that drives `nodeagent inventory serve` as a child (tests/security/test_attacks.py)
    is never run against a mutant. After the stats run, its tests are added to every
    function's list and the verdicts reset, for a second `mutmut run` to test them all.
    Returns the functions some test called in-process (the others' survivors are
    reported as not covered).
    """
    stats_path = tree / "mutants" / "mutmut-stats.json"
    meta_path = tree / "mutants" / (target.module + ".meta")
    stats = json.loads(stats_path.read_text())
    meta = json.loads(meta_path.read_text())
    by_function: dict[str, list[str]] = stats["tests_by_mangled_function_name"]
    child = {
        test
        for test in stats["duration_by_test"]
        if any(test.split("::")[0] == path for path in target.through_child)
    }
    functions = {name.partition("__mutmut_")[0] for name in meta["exit_code_by_key"]}
    in_process = {f for f in functions if by_function.get(f)}
    for f in functions:
        by_function[f] = sorted(set(by_function.get(f, [])) | child)
    stats_path.write_text(json.dumps(stats, indent=4))
    meta["exit_code_by_key"] = dict.fromkeys(meta["exit_code_by_key"])
    meta_path.write_text(json.dumps(meta, indent=4))
    return in_process


def run_target(
    target: Target, equivalents: dict[str, str], *, jobs: int, limit_s: float, keep: bool
) -> Result:
    """Run mutmut on one module in its own throwaway tree and collect the verdicts."""
    result = Result(target)
    workdir = Path(tempfile.mkdtemp(prefix="nodeagent-mutation-"))
    workdir.chmod(0o755)  # the postgres user of the inventory tests must reach its data dir
    run = Run(workdir, jobs, limit_s)
    run.tmp.mkdir()
    run.tmp.chmod(0o1777)
    try:
        copy_repo(run.tree)
        write_config(run.tree, target)
        print(f"== {target.module}: {' '.join(target.tests)} in {run.tree}", file=sys.stderr)
        started = time.monotonic()
        in_process: set[str] | None = None
        if target.through_child:
            # first pass: mutants and stats, and only each function's first mutant tested
            rc = run.retried([dotted(target.module) + ".*__mutmut_1"])
            if rc == 0:
                in_process = widen_mapping(run.tree, target)
                rc = run.retried([])
        else:
            rc = run.retried([])
        print(f"   finished in {time.monotonic() - started:.0f} s", file=sys.stderr)
        result.status_by_mutant = read_statuses(run.tree, target)
        if in_process is not None:
            for name, status in result.status_by_mutant.items():
                if status == "survived" and name.partition("__mutmut_")[0] not in in_process:
                    result.status_by_mutant[name] = NOT_COVERED
        if rc is None:
            result.error = f"stopped after the {limit_s:.0f} s limit"
        elif rc != 0 or not result.status_by_mutant:
            result.error = f"mutmut exited {rc}"
        if result.error and not run.live:
            print("\n".join(log_tail(run.log, 80)), file=sys.stderr)

        for name, reason in equivalents.items():
            verdict = result.status_by_mutant.get(name)
            if verdict is None:
                result.stale.append(f"{name}: no such mutant any more ({reason})")
            elif verdict in DETECTED or verdict == TIMEOUT:
                result.stale.append(f"{name}: listed as equivalent, but a test kills it")
            else:
                result.equivalent.add(name)
        for name in result.undetected():
            shown = subprocess.run(
                [str(MUTMUT), "show", name], cwd=run.tree, capture_output=True, text=True
            )
            # its first line repeats the name and status, which print_survivors shows already
            diff = shown.stdout.strip().removeprefix(f"# {name}:").partition("\n")[2]
            result.diffs[name] = diff or shown.stderr.strip()
    finally:
        if keep or result.error:  # a failed run's tree and mutmut.log are there to look into
            print(f"   kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_survivors(result: Result) -> None:
    """Every mutant a test still has to kill, with its diff, and stale equivalents entries."""
    undetected = result.undetected()
    statuses = result.status_by_mutant
    print(f"\n== {result.target.module}: {len(undetected)} mutant(s) no test kills")
    for name in undetected:
        label = "not covered" if statuses[name] == NOT_COVERED else statuses[name]
        print(f"\n-- {name} [{label}]")
        print(result.diffs.get(name, ""))
    if result.unchecked():
        print(f"\n{result.unchecked()} mutant(s) not checked: the run stopped before them")
    for line in result.stale:
        print(f"\nstale equivalents entry: {line}")


COLUMNS = (
    "module",
    "mutants",
    "killed",
    "timeout",
    "survived",
    "not covered",
    "skipped",
    "equivalent",
    "score",
    "goal",
    "",
)


def print_table(results: list[Result]) -> None:
    """One row per module; MISSED marks a module under its goal, FAILED one mutmut could not run."""
    rows = []
    for r in results:
        c = r.counts()
        verdict = "FAILED" if r.error else ("ok" if r.score() >= r.target.goal else "MISSED")
        rows.append(
            [
                r.target.module,
                str(len(r.status_by_mutant)),
                str(c["killed"]),
                str(c["timeout"]),
                str(c["survived"]),
                str(c["not covered"]),
                str(c["skipped"]),
                str(c["equivalent"]),
                f"{r.score():.1f}%" if r.status_by_mutant else "-",
                f"{r.target.goal:.0f}%",
                verdict + (f" ({r.error})" if r.error else ""),
            ]
        )
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    print()
    for row in [list(COLUMNS), *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1], strict=True)]
        print("  ".join([*cells, row[-1]]).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", help="run one configured module, e.g. nodeagent/topology/tiers.py"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once"
    )
    parser.add_argument(
        "--limit", type=float, default=3600, help="seconds one module may take before it is stopped"
    )
    parser.add_argument("--keep", action="store_true", help="keep the throwaway trees (debugging)")
    args = parser.parse_args(argv)

    targets = list(TARGETS)
    if args.only:
        wanted = args.only.removeprefix("./")
        targets = [t for t in TARGETS if t.module == wanted]
        if not targets:
            choices = "\n  ".join(t.module for t in TARGETS)
            parser.error(f"{args.only} is not a configured module; one of:\n  {choices}")
    equivalents = load_equivalents(EQUIVALENTS)

    results = []
    for target in targets:
        result = run_target(
            target,
            equivalents.get(target.module, {}),
            jobs=args.jobs,
            limit_s=args.limit,
            keep=args.keep,
        )
        print_survivors(result)
        print_table([result])
        results.append(result)

    if len(results) > 1:
        print_table(results)
    bench = [
        {
            "name": r.target.module,
            "value": round(r.score(), 1),
            "unit": "%",
            "goal": r.target.goal,
            "better": "higher",
        }
        for r in results
        if not r.error
    ]
    print(json.dumps({"bench": "mutation", "results": bench}), flush=True)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
