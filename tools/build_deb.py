"""Build the Debian package `nodeagent_<version>_<arch>.deb` (`make deb`).

The payload is a virtualenv at /opt/nodeagent holding the nodeagent wheel and its
dependencies. A virtualenv is not relocatable (its scripts name their interpreter by absolute
path), so it is built at /opt/nodeagent itself, inside a private mount namespace: /opt
becomes an overlay there (this machine's /opt underneath, read-only, so a local package index
or wheel directory in it still works), with the staging directory bound onto /opt/nodeagent.
Nothing outside the namespace sees it; this machine's /opt is never written.

The wheel is built from a clean copy of the files git tracks (plus new files it does not
ignore); the dependencies come from the configured package index through pip's cache, at the
versions installed in the environment running this script (the ones the tests ran against)
unless --no-pin. The venv's interpreter is Debian's python3, so the package depends on
python3 of that minor version; the shared libraries the wheels link against become
dependencies through dpkg-shlibdeps.

The rest of the tree: /usr/bin/nodeagent (a link into the venv), the systemd units in
/lib/systemd/system, commented default configurations in /etc/nodeagent (conffiles), the
maintainer scripts and the documentation in packaging/deb/.

    python tools/build_deb.py [--out dist] [--lintian]

Needs root (the mount namespace), dpkg-deb, dpkg-shlibdeps (dpkg-dev), strip (binutils) and,
for --lintian, lintian.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEB_DIR = REPO / "packaging" / "deb"
PACKAGE = "nodeagent"
PREFIX = "/opt/nodeagent"
BASE_PYTHON = "/usr/bin/python3"  # Debian's: the package depends on it
UNITS = ("nodeagent.service", "nodeagent-inventory.service")
CONFIGS = ("agent.toml", "inventory.toml")
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
# venv files nobody uses in a system install (activation is for interactive shells), and
# the wheel's copy of the units, which this package installs in /lib/systemd/system
DROP = ("bin/activate", "bin/activate.csh", "bin/activate.fish", "bin/Activate.ps1")
DROP_DIRS = ("share/nodeagent/systemd",)

# Runs inside `unshare --mount`: $1 a directory for the overlay's upper layer (a tmpfs), $2
# the staging directory for /opt/nodeagent, $3 the venv's base Python, $4 the Python whose pip
# installs, $5 the wheel, $6... more pip arguments. Prints `nodeagent --help` on stdout.
NAMESPACE_SCRIPT = r"""
set -eu
overlay=$1 stage=$2 base_python=$3 pip_python=$4 wheel=$5
shift 5
mount -t tmpfs -o mode=0700 nodeagent-build "$overlay"
mkdir "$overlay/upper" "$overlay/work"
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$overlay/upper,workdir=$overlay/work" /opt
mkdir -p /opt/nodeagent
mount --bind "$stage" /opt/nodeagent
"$base_python" -m venv --without-pip /opt/nodeagent
"$pip_python" -m pip --python /opt/nodeagent/bin/python install -q --no-compile \
    --disable-pip-version-check --no-warn-script-location "$@" "$wheel" >&2
/opt/nodeagent/bin/nodeagent --help
"""


class BuildError(RuntimeError):
    """A step of the build failed; the message says which and why."""


def _run(
    cmd: list[str], what: str, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def version() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    value = data["project"]["version"]
    if not isinstance(value, str) or not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", value):
        raise BuildError(f"pyproject.toml: version {value!r} is not a Debian version")
    return value


def source_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time: file dates in the package."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    proc = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(proc.stdout.strip()) if proc.stdout.strip().isdigit() else int(time.time())


def copy_sources(dest: Path) -> None:
    """The tracked files, and new ones git does not ignore, as they are in the work tree."""
    listing = _run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        "git ls-files",
    )
    for name in sorted(set(filter(None, listing.split("\0")))):
        src = REPO / name
        if not src.is_file():  # deleted in the work tree, or a submodule
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)


def build_wheel(src: Path, out: Path) -> Path:
    _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "-w", str(out), str(src)),
        ],
        "building the wheel",
    )
    wheels = sorted(out.glob(f"{PACKAGE}-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def pins(work: Path) -> Path:
    """Constraints: the versions installed in the environment that runs this build."""
    frozen = _run(
        [
            *(sys.executable, "-m", "pip", "list", "--format=freeze", "--exclude-editable"),
            "--disable-pip-version-check",
        ],
        "pip list",
    )
    lines = [line for line in frozen.splitlines() if not line.lower().startswith(f"{PACKAGE}==")]
    path = work / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_venv(stage_prefix: Path, wheel: Path, work: Path, constraints: Path | None) -> str:
    """Create the venv at /opt/nodeagent in a private mount namespace; returns `--help`."""
    if not Path("/opt").is_dir():
        raise BuildError("/opt is missing: the venv is built at /opt/nodeagent (in a namespace)")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise BuildError("building the venv needs root and unshare (a private mount namespace)")
    overlay = work / "overlay"
    overlay.mkdir()
    stage_prefix.mkdir(parents=True)
    pip_args = ["--constraint", str(constraints)] if constraints else []
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT]
    cmd += ["build-venv", str(overlay), str(stage_prefix), BASE_PYTHON, sys.executable]
    return _run([*cmd, str(wheel), *pip_args], "building the venv at /opt/nodeagent")


def trim(prefix: Path) -> None:
    """No bytecode (postinst compiles it), no activation scripts, no second copy of the units,
    no empty directories (the venv's include/, which only building from source would use)."""
    for cache in sorted(prefix.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for pyc in prefix.rglob("*.py[co]"):
        pyc.unlink()
    for name in DROP:
        (prefix / name).unlink(missing_ok=True)
    for name in DROP_DIRS:
        shutil.rmtree(prefix / name, ignore_errors=True)
    include = prefix / "include"
    if include.is_dir() and not any(p.is_file() for p in include.rglob("*")):
        shutil.rmtree(include)
    share = prefix / "share"
    for path in sorted(share.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):  # what DROP_DIRS left empty
            path.rmdir()
    if share.is_dir() and not any(share.iterdir()):
        share.rmdir()


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def elf_files(root: Path) -> list[Path]:
    files = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return sorted(p for p in files if _head(p, 4) == b"\x7fELF")


def strip_binaries(files: list[Path]) -> None:
    """What dh_strip does to shared objects: debug symbols out (several MB in some wheels)."""
    if files:
        _run(
            ["strip", "--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"]
            + [str(f) for f in files],
            "strip",
        )


def python_depends() -> str:
    """The venv runs on Debian's python3 of the minor version it was built with (the
    compiled modules are for that ABI, site-packages is lib/python3.X)."""
    out = _run([BASE_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"], f"{BASE_PYTHON} -V")
    major, minor = (int(x) for x in out.split())
    return f"python3 (>= {major}.{minor}~), python3 (<< {major}.{minor + 1})"


def shlib_depends(workdir: Path, files: list[Path]) -> str:
    """dpkg-shlibdeps over the compiled modules. The staging tree is debian/<package> under
    `workdir`, so libraries bundled in the wheels (*.libs/) count as the package's own."""
    if not files:
        return ""
    (workdir / "debian" / "control").write_text(
        f"Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"
    )
    libdirs = sorted({str(f.parent) for f in files})
    out = _run(
        ["dpkg-shlibdeps", "-O"] + [f"-l{d}" for d in libdirs] + [f"-e{f}" for f in files],
        "dpkg-shlibdeps",
        cwd=workdir,
    )
    match = re.search(r"^shlibs:Depends=(.*)$", out, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _first(meta: importlib.metadata.PackageMetadata, key: str) -> str:
    values = meta.get_all(key) or []
    return str(values[0]).strip() if values else ""


def bundled_licenses(prefix: Path) -> list[str]:
    """One line per distribution in the venv: name, version, the license it declares."""
    site = sorted(prefix.glob("lib/python3*/site-packages"))
    rows = []
    for dist in importlib.metadata.distributions(path=[str(p) for p in site]):
        meta = dist.metadata
        classifiers = meta.get_all("Classifier") or []
        from_classifiers = "; ".join(
            c.split(" :: ")[-1] for c in classifiers if c.startswith("License ::")
        )
        declared = _first(meta, "License-Expression") or from_classifiers or _first(meta, "License")
        lic = declared.splitlines()[0][:120] if declared else "see its metadata"
        rows.append(f" {_first(meta, 'Name')} {_first(meta, 'Version')}: {lic}")
    return sorted(set(rows), key=str.lower)


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def _gzip(data: str, epoch: int) -> bytes:
    return gzip.compress(data.encode(), compresslevel=9, mtime=epoch)


def man_page(help_text: str, ver: str, epoch: int) -> str:
    """nodeagent(1) from the program's own --help (so it lists today's commands)."""
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))

    def roff(text: str) -> str:
        lines = []
        for line in text.replace("\\", "\\e").splitlines():
            lines.append("\\&" + line if line.startswith((".", "'")) else line)
        return "\n".join(lines)

    return (
        f'.TH NODEAGENT 1 "{date}" "nodeagent {ver}" "User Commands"\n'
        ".SH NAME\nnodeagent \\- provisioning agent for bare-metal GPU servers\n"
        ".SH SYNOPSIS\n.B nodeagent\n[\\fB\\-\\-debug\\fR] \\fICOMMAND\\fR ...\n"
        ".SH DESCRIPTION\n"
        "Discovers a GPU server's hardware, enrols it with the inventory service, applies "
        "golden-image tuning and joins it to a Kubernetes cluster; also runs the inventory "
        "service. Each command has its own \\fB\\-\\-help\\fR.\n"
        ".SH USAGE\n.nf\n" + roff(help_text) + "\n.fi\n"
        ".SH FILES\n"
        ".TP\n.I /etc/nodeagent/agent.toml\nthe node agent's configuration "
        "(nodeagent.service)\n"
        ".TP\n.I /etc/nodeagent/inventory.toml\nthe inventory service's configuration "
        "(nodeagent\\-inventory.service)\n"
        ".TP\n.I /opt/nodeagent\nthe program and its Python dependencies (a virtualenv)\n"
        ".SH SEE ALSO\n"
        ".BR systemctl (1),\n.BR journalctl (1)\n"
    )


def changelog(ver: str, epoch: int) -> str:
    return (
        f"{PACKAGE} ({ver}) unstable; urgency=medium\n\n"
        f"  * Built from the nodeagent source tree (pyproject.toml version {ver}).\n\n"
        f" -- {maintainer()}  {email.utils.formatdate(epoch)}\n"
    )


def maintainer() -> str:
    match = re.search(r"^Maintainer: (.*)$", (DEB_DIR / "control").read_text(), re.MULTILINE)
    if not match:
        raise BuildError("packaging/deb/control has no Maintainer")
    return match.group(1).strip()


def normalise(root: Path, prefix: Path, epoch: int) -> None:
    """0755 directories and executables, 0644 the rest; dates no later than the source's.

    In the venv a file is executable when it can be run: a script (`#!`), or an ELF file
    its wheel made executable. Wheels are careless with modes (protobuf's modules are all
    0755, some modules with a `#!` line are 0644); which modules are run by path does not
    change with the mode, since they are imported."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            executable = bool(path.stat().st_mode & stat.S_IXUSR)
            if path.is_relative_to(prefix):
                head = _head(path, 4)
                executable = head[:2] == b"#!" or (executable and head == b"\x7fELF")
            path.chmod(0o755 if executable else 0o644)
        if path.stat().st_mtime > epoch:
            os.utime(path, (epoch, epoch))


def installed_size(root: Path) -> int:
    """In KiB, as dpkg-gencontrol counts: each file rounded up, each directory or link one."""
    total = 0
    for path in root.rglob("*"):
        if path.is_relative_to(root / "DEBIAN"):
            continue
        total += -(-path.lstat().st_size // 1024) if path.is_file() and not path.is_symlink() else 1
    return total


def md5sums(root: Path, conffiles: list[str]) -> str:
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("DEBIAN/") or f"/{rel}" in conffiles:
            continue
        if path.is_file() and not path.is_symlink():
            lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}")
    return "\n".join(lines) + "\n"


def build(out_dir: Path, *, pin: bool = True, xz_level: int = 6) -> Path:
    """Build the package into out_dir; returns the .deb's path."""
    started = time.monotonic()
    ver, epoch = version(), source_epoch()

    def say(msg: str) -> None:
        print(f"build_deb: {msg} ({time.monotonic() - started:.1f}s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="nodeagent-deb-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        copy_sources(work / "src")
        wheel = build_wheel(work / "src", work / "wheel")
        say(f"built {wheel.name}")
        root = work / "debian" / PACKAGE  # where dpkg-shlibdeps looks for the package's files
        prefix = root / PREFIX.lstrip("/")
        help_text = build_venv(prefix, wheel, work, pins(work) if pin else None)
        say(f"installed the venv at {PREFIX}")
        trim(prefix)
        binaries = elf_files(prefix)
        strip_binaries(binaries)
        depends = ", ".join(x for x in (python_depends(), shlib_depends(work, binaries)) if x)
        say(f"stripped {len(binaries)} shared objects; Depends: {depends}")

        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / PACKAGE).symlink_to(f"{PREFIX}/bin/{PACKAGE}")
        units = root / "lib" / "systemd" / "system"
        for unit in UNITS:
            _write(units / unit, (REPO / "systemd" / unit).read_bytes())
        for config in CONFIGS:
            _write(root / "etc" / PACKAGE / config, (DEB_DIR / config).read_bytes())
        doc = root / "usr" / "share" / "doc" / PACKAGE
        year = time.strftime("%Y", time.gmtime(epoch))
        copyright_text = (DEB_DIR / "copyright").read_text().replace("@YEAR@", year)
        _write(doc / "copyright", copyright_text + "\n".join(bundled_licenses(prefix)) + "\n")
        _write(doc / "changelog.gz", _gzip(changelog(ver, epoch), epoch))
        _write(
            root / "usr" / "share" / "man" / "man1" / f"{PACKAGE}.1.gz",
            _gzip(man_page(help_text, ver, epoch), epoch),
        )
        _write(
            root / "usr" / "share" / "lintian" / "overrides" / PACKAGE,
            (DEB_DIR / "lintian-overrides").read_bytes(),
        )
        normalise(root, prefix, epoch)

        control_dir = root / "DEBIAN"
        conffiles = (DEB_DIR / "conffiles").read_text().split()
        for path in conffiles:
            if not (root / path.lstrip("/")).is_file():
                raise BuildError(f"conffile {path} is not in the package")
        arch = _run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()
        fields = {
            "@VERSION@": ver,
            "@ARCH@": arch,
            "@DEPENDS@": depends,
            "@INSTALLED_SIZE@": str(installed_size(root)),
        }
        control = (DEB_DIR / "control").read_text()
        for key, value in fields.items():
            control = control.replace(key, value)
        _write(control_dir / "control", control)
        _write(control_dir / "conffiles", "\n".join(conffiles) + "\n")
        for script in MAINTAINER_SCRIPTS:
            _write(control_dir / script, (DEB_DIR / script).read_bytes(), mode=0o755)
        _write(control_dir / "md5sums", md5sums(root, conffiles))
        control_dir.chmod(0o755)

        out_dir.mkdir(parents=True, exist_ok=True)
        deb = out_dir / f"{PACKAGE}_{ver}_{arch}.deb"
        compress = ["-Zxz", f"-z{xz_level}"]
        _run(
            ["dpkg-deb", "--root-owner-group", *compress, "--build", str(root), str(deb)],
            "dpkg-deb --build",
            env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
        )
    say(f"wrote {deb} ({deb.stat().st_size / 2**20:.1f} MiB)")
    return deb


def build_wheel_only(out_dir: Path) -> Path:
    """The wheel alone (make dist), from the same clean copy of the tree."""
    with tempfile.TemporaryDirectory(prefix="nodeagent-wheel-") as tmp:
        (Path(tmp) / "src").mkdir()
        copy_sources(Path(tmp) / "src")
        wheel = build_wheel(Path(tmp) / "src", Path(tmp) / "wheel")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheel, out_dir / wheel.name))


def lintian(deb: Path) -> subprocess.CompletedProcess[str]:
    """lintian on the package: errors and warnings (there are none today); its exit status
    is non-zero on errors only. `lintian --display-info --show-overrides` on the .deb also
    lists the informational tags and the overridden ones with their reasons (README)."""
    if not shutil.which("lintian"):
        raise BuildError("lintian is not installed (Debian's lintian package)")
    return subprocess.run(
        ["lintian", "--fail-on", "error", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    parser.add_argument(
        "--wheel-only", action="store_true", help="build only the wheel (make dist)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let pip choose the dependency versions instead of this environment's",
    )
    parser.add_argument(
        "--xz-level",
        type=int,
        choices=range(10),
        default=6,
        metavar="0-9",
        help="xz level: 6 (default) compresses to 12.5 MiB in 35 s, 1 to 14.5 MiB in 4 s",
    )
    parser.add_argument("--lintian", action="store_true", help="run lintian; fail on errors")
    args = parser.parse_args(argv)
    try:
        if args.wheel_only:
            print(f"build_deb: wrote {build_wheel_only(args.out)}")
            return 0
        deb = build(args.out, pin=not args.no_pin, xz_level=args.xz_level)
        if not args.lintian:
            return 0
        result = lintian(deb)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 1
    print(result.stdout + result.stderr, end="")
    print(f"build_deb: lintian exit status {result.returncode} (non-zero on errors only)")
    return 1 if result.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
