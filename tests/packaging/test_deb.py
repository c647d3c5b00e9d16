"""The Debian package (`make deb`, tools/build_deb.py): built, checked with lintian, unpacked
and run from its real paths, /opt/nodeagent and /usr/bin/nodeagent, inside a private mount
namespace; then installed, upgraded, removed and purged by dpkg in a throwaway overlay of this
machine. This machine's /opt, /usr, /etc, /lib/systemd and dpkg database are never written."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodeagent.agent import config as agent_config
from nodeagent.inventory import config as inventory_config
from nodeagent.tomlconfig import flatten

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = REPO / "packaging" / "deb"
SHIPPED_PROFILES = {"cpu-node", "hgx-b200", "hgx-h100", "oci-bm-gpu-h100-8", "rtx-pro-6000"}
UNITS = ("nodeagent.service", "nodeagent-inventory.service")
# xz -1: the same package, 4 s to compress instead of 35 (14.5 MiB instead of 12.5)
FAST = ("--xz-level", "1")
UNSHARE = ("unshare", "--mount", "--propagation", "private")
# what the package (or the stand-ins) would create on this machine if a test leaked
REAL_PATHS = (
    "/opt/nodeagent",
    "/usr/bin/nodeagent",
    "/etc/nodeagent",
    *(f"/lib/systemd/system/{unit}" for unit in UNITS),
    "/usr/local/sbin/systemctl",
    "/usr/local/sbin/deb-systemd-invoke",
    "/var/lib/dpkg/info/nodeagent.list",
)

# Runs in `unshare --mount`: $1 the unpacked package, $2 an empty directory; then the command.
# /opt, /usr/bin, /etc and /usr/lib/systemd/system become overlays of the package's files on
# this machine's, in this namespace only; /opt/nodeagent is the unpacked venv itself.
NAMESPACE = r"""
set -eu
pkg=$1 tmp=$2
shift 2
mount -t tmpfs -o mode=0700 nodeagent-test "$tmp"
mkdir "$tmp/upper" "$tmp/work"
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$tmp/upper,workdir=$tmp/work" /opt
mkdir -p /opt/nodeagent
mount --bind "$pkg/opt/nodeagent" /opt/nodeagent
mount -t overlay overlay -o "lowerdir=$pkg/usr/bin:/usr/bin" /usr/bin
mount -t overlay overlay -o "lowerdir=$pkg/etc:/etc" /etc
units=$(readlink -f /lib/systemd/system)
mount -t overlay overlay -o "lowerdir=$pkg/lib/systemd/system:$units" "$units"
cd /
exec "$@"
"""


@dataclass(frozen=True)
class Package:
    deb: Path
    root: Path  # dpkg-deb -x, with the control files in DEBIAN/
    build_seconds: float


def _require_tools() -> None:
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "strip", "lintian", "unshare", "git"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed (the Makefile's APT_PACKAGES; make test installs them)")
    if os.geteuid() != 0:
        pytest.fail("building and unpacking the package needs root (private mount namespaces)")


def _snapshot_real_paths() -> dict[str, bool]:
    return {path: os.path.lexists(path) for path in REAL_PATHS}


@pytest.fixture(scope="module")
def package() -> Iterator[Package]:
    _require_tools()
    before = _snapshot_real_paths()
    work = Path(tempfile.mkdtemp(prefix="nodeagent-deb-test-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / "build_deb.py"), "--out", str(work), *FAST],
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (deb,) = work.glob("nodeagent_*.deb")
        root = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=120)
        subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True)
        yield Package(deb, root, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert _snapshot_real_paths() == before, "the test changed this machine's real paths"


def in_namespace(pkg: Package, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run cmd with the package at its real paths, in a private mount namespace."""
    with tempfile.TemporaryDirectory(prefix="nodeagent-ns-") as tmp:
        return subprocess.run(
            [*UNSHARE, "sh", "-c", NAMESPACE, "ns", str(pkg.root), tmp, *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
            # nothing of this checkout's environment; no bytecode written into the unpacked tree
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        )


def _uncommented(path: Path) -> str:
    """The file with every `#key = value` line switched on (headers are already on)."""
    return re.sub(r"(?m)^#([a-z_]+ = )", r"\1", path.read_text())


@pytest.mark.parametrize(
    ("name", "defaults", "load"),
    [
        (
            "agent.toml",
            agent_config.AgentConfig(),
            lambda p: agent_config.load(p, required=True),
        ),
        ("inventory.toml", inventory_config.InventoryConfig(), inventory_config.load),
    ],
)
def test_default_configs_list_every_key_with_its_default(
    scratch: Path, name: str, defaults: Any, load: Callable[[str], Any]
) -> None:
    shipped = DEB_DIR / name
    assert f"/etc/nodeagent/{name}" in (DEB_DIR / "conffiles").read_text().split()
    assert load(str(shipped)) == defaults, "the shipped file must change nothing"
    on = scratch / name
    on.write_text(_uncommented(shipped))
    listed = set(flatten_toml(tomllib.loads(on.read_text())))
    assert listed == set(flatten(defaults)), "every key, and only keys the loader knows"
    assert load(str(on)) == defaults, "each commented value is the default"


def flatten_toml(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten_toml(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_package_contents_and_lintian(package: Package) -> None:
    root = package.root
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    assert package.deb.name == f"nodeagent_{_version()}_{arch.stdout.strip()}.deb"
    control = (root / "DEBIAN" / "control").read_text()
    depends = re.search(r"^Depends: (.*)$", control, re.MULTILINE)
    assert depends, control
    major, minor = _debian_python()
    assert f"python3 (>= {major}.{minor}~), python3 (<< {major}.{minor + 1})" in depends.group(1)
    assert "libc6 (>= " in depends.group(1), "dpkg-shlibdeps ran over the compiled modules"
    assert (root / "DEBIAN" / "conffiles").read_text().split() == [
        "/etc/nodeagent/agent.toml",
        "/etc/nodeagent/inventory.toml",
    ]
    assert os.readlink(root / "usr/bin/nodeagent") == "/opt/nodeagent/bin/nodeagent"
    for unit in UNITS:
        shipped = (root / "lib/systemd/system" / unit).read_text()
        assert shipped == (REPO / "systemd" / unit).read_text()
        assert "ExecStart=/opt/nodeagent/bin/nodeagent " in shipped
    venv = root / "opt/nodeagent"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    assert (venv / "bin/nodeagent").read_text().startswith("#!/opt/nodeagent/bin/python")
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(package.deb)], capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(listing.stdout)) as tar:
        names = tar.getnames()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], "no bytecode"
    assert not (venv / "bin/pip").exists() and not (venv / "bin/activate").exists()
    assert package.deb.stat().st_size < 20 * 2**20, "the .deb is kept small"

    result = subprocess.run(
        ["lintian", "--fail-on", "error", "--display-info", str(package.deb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("W:")]
    assert not warnings, "a new lintian warning: fix it, or override it and explain in README"
    assert package.build_seconds < 300, f"the build took {package.build_seconds:.0f}s"


def _version() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _debian_python() -> tuple[int, int]:
    """The minor version of /usr/bin/python3, which the package's venv runs on."""
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_installed_package_runs_from_its_real_paths(
    package: Package, machine_root: Callable[..., Path]
) -> None:
    dgx = machine_root("dgx-h100")
    # /usr/bin/nodeagent (found on PATH), the link into the venv
    proc = in_namespace(package, "nodeagent", "discover", "--root", str(dgx), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)
    assert len(inventory["gpus"]) == 8
    assert {g["model"] for g in inventory["gpus"]} == {"NVIDIA H100 80GB HBM3"}
    assert all(c["success"] for c in inventory["collectors"]), inventory["collectors"]

    proc = in_namespace(package, "/opt/nodeagent/bin/nodeagent", "tune", "list")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert {row[0] for row in rows} == SHIPPED_PROFILES, proc.stdout
    assert all(row[-1].startswith("/opt/nodeagent/") for row in rows), "shipped in the package"

    # the code is the package's, on Debian's python3; the conffiles load as the defaults
    check = (
        "import sys, nodeagent\n"
        "from nodeagent.agent import config as a\n"
        "from nodeagent.inventory import config as i\n"
        "assert a.load('/etc/nodeagent/agent.toml', required=True) == a.AgentConfig()\n"
        "assert i.load('/etc/nodeagent/inventory.toml') == i.InventoryConfig()\n"
        "print(nodeagent.__file__, sys.base_prefix)\n"
    )
    proc = in_namespace(package, "/opt/nodeagent/bin/python", "-c", check)
    assert proc.returncode == 0, proc.stderr
    module, base = proc.stdout.split()
    major, minor = _debian_python()
    assert module.startswith(f"/opt/nodeagent/lib/python{major}.{minor}/site-packages/nodeagent/")
    assert base == "/usr"

    # the units as installed: ExecStart exists, the unit files are valid
    proc = in_namespace(
        package, "systemd-analyze", "verify", *(f"/lib/systemd/system/{u}" for u in UNITS)
    )
    assert proc.returncode == 0, proc.stderr


# Runs in `unshare --mount`: $1 an empty directory, $2 the .deb, $3 a modelled machine's root,
# $4 a directory for results, $5 the script to run as root of the copy. The copy is an overlay
# of / whose writes go to a tmpfs: dpkg installs into it, with its own database, and this
# machine's files stay as they were. /run is empty but for /run/systemd/system, so the
# maintainer scripts see a systemd host; systemctl and deb-systemd-invoke are stand-ins in
# /usr/local/sbin (first on dpkg's PATH) that append what they were asked to /run/calls.log.
CHROOT = r"""
set -eu
tmp=$1 deb=$2 machine=$3 results=$4 script=$5
mount -t tmpfs nodeagent-test "$tmp"
mkdir "$tmp/upper" "$tmp/work" "$tmp/root"
root=$tmp/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/upper,workdir=$tmp/work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs nodeagent-run "$root/run"
mkdir -p "$root/run/systemd/system" "$root/machine" "$root/results" "$root/usr/local/sbin"
mount --bind "$machine" "$root/machine"
mount --bind "$results" "$root/results"
cp "$deb" "$root/tmp/nodeagent.deb"
for tool in systemctl deb-systemd-invoke; do
    printf '#!/bin/sh\necho "%s $*" >> /run/calls.log\n' "$tool" > "$root/usr/local/sbin/$tool"
    chmod 0755 "$root/usr/local/sbin/$tool"
done
exec chroot "$root" sh -eu -c "$script"
"""

# As root of the copy: install, use, upgrade (the same version again), remove, purge.
LIFECYCLE = r"""
calls() { mv /run/calls.log "/results/$1.calls" 2>/dev/null || : > "/results/$1.calls"; }
dpkg -i /tmp/nodeagent.deb > /results/install.out 2>&1
calls install
nodeagent discover --root /machine -o json > /results/discover.json
nodeagent tune list > /results/tune.txt
dpkg --verify nodeagent > /results/verify.out 2>&1
dpkg-query -W -f='${Conffiles}' nodeagent > /results/conffiles.txt
find /opt/nodeagent -name '*.pyc' | wc -l > /results/pyc.count
systemd-analyze verify /lib/systemd/system/nodeagent.service \
    /lib/systemd/system/nodeagent-inventory.service > /results/units.out 2>&1
echo 'log_level = "debug"' >> /etc/nodeagent/agent.toml  # as `nodeagent bootstrap` would
dpkg -i /tmp/nodeagent.deb > /results/upgrade.out 2>&1
calls upgrade
grep -c '^log_level = "debug"' /etc/nodeagent/agent.toml > /results/kept.count
dpkg -r nodeagent > /results/remove.out 2>&1
calls remove
ls -A /etc/nodeagent > /results/etc-after-remove.txt
test -e /opt/nodeagent || echo gone > /results/opt-after-remove.txt
dpkg -P nodeagent > /results/purge.out 2>&1
calls purge
test -e /etc/nodeagent || echo gone > /results/etc-after-purge.txt
"""


def test_dpkg_installs_upgrades_removes_and_purges_it(
    package: Package, machine_root: Callable[..., Path], scratch: Path
) -> None:
    """The package through dpkg itself, in a throwaway copy of this machine."""
    results = scratch / "results"
    results.mkdir()
    machine = machine_root("cpu-node")
    with tempfile.TemporaryDirectory(prefix="nodeagent-chroot-", dir="/var/tmp") as tmp:
        args = [tmp, str(package.deb), str(machine), str(results), LIFECYCLE]
        proc = subprocess.run(
            [*UNSHARE, "sh", "-c", CHROOT, "chroot", *args],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    out = {p.name: p.read_text() for p in results.iterdir()}
    assert proc.returncode == 0, (
        proc.stdout
        + proc.stderr
        + "".join(
            f"== {name}\n{text}" for name, text in sorted(out.items()) if name.endswith(".out")
        )
    )
    reload = "systemctl --system daemon-reload"
    units = " ".join(UNITS)
    # installed: systemd is told about the units, and no service is enabled or started
    assert out["install.calls"].splitlines() == [reload]
    assert json.loads(out["discover.json"])["system"]["hostname"].startswith("cpu-node")
    assert {line.split()[0] for line in out["tune.txt"].splitlines()[1:]} == SHIPPED_PROFILES
    assert out["verify.out"] == "", "every installed file matches the package's md5sums"
    assert out["conffiles.txt"].split()[::2] == [
        "/etc/nodeagent/agent.toml",
        "/etc/nodeagent/inventory.toml",
    ]
    assert int(out["pyc.count"]) > 1000, "postinst byte-compiles the venv"
    assert out["units.out"] == "", "systemd-analyze verify on the installed units"
    # upgraded: what runs is restarted (try-restart starts nothing), the edited conffile kept
    assert out["upgrade.calls"].splitlines() == [reload, f"deb-systemd-invoke try-restart {units}"]
    assert out["kept.count"].strip() == "1"
    # removed: the services stop first; the code goes, bytecode and all; conffiles stay
    assert out["remove.calls"].splitlines() == [f"deb-systemd-invoke stop {units}", reload]
    assert "not empty" not in out["remove.out"], out["remove.out"]
    assert out["opt-after-remove.txt"].strip() == "gone"
    assert out["etc-after-remove.txt"].split() == ["agent.toml", "inventory.toml"]
    # purged: the conffiles go too
    assert out["purge.calls"].splitlines() == [reload]
    assert out["etc-after-purge.txt"].strip() == "gone"
    for script in ("postinst", "prerm", "postrm"):
        for line in (package.root / "DEBIAN" / script).read_text().splitlines():
            if not line.lstrip().startswith("#"):
                # try-restart is the one restart: it never starts a stopped service
                assert not re.search(r"(?<![-\w])(enable|start|restart)\b", line), line
