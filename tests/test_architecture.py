"""The shape of the code as docs/architecture.md draws it: layers, cycles, the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_import_contracts_hold() -> None:
    """An upward import, agent <-> inventory, or a cycle inside a package fails here."""
    proc = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_wheel_ships_the_package_and_no_test_scaffolding(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("nodeagent", "testbed", "tests", "systemd"):
        shutil.copytree(
            REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("nodeagent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nodeagent/cli/main.py" in names
    assert "nodeagent/api/v1/hardware_pb2.pyi" in names
    leaked = [n for n in names if n.split("/")[0] in ("testbed", "tests") or "/testbed/" in n]
    assert leaked == []
    assert not [n for n in names if n.startswith("nodeagent/") and n.endswith((".ttar", ".tabs"))]


def test_ruff_format_owns_the_layout() -> None:
    marked = [
        f"{p.relative_to(REPO)}:{i}"
        for top in ("nodeagent", "testbed", "tests", "bench", "tools")
        for p in (REPO / top).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.rstrip().endswith("# fmt" + ": skip")
    ]
    assert marked == []
