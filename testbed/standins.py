"""Stand-ins for the acceptance tools that need GPUs or a fabric: small executables put on
PATH that print recorded outputs (acceptance_tools/README.md says where each came from).

`install(dest)` writes `dest/bin/{dcgmi,all_reduce_perf,ib_write_bw}` and returns the PATH
to give the run (the stand-ins first, then the real PATH, so the real fio is found). Options
pick a failing recording, a tool that hangs, or one whose output does not parse.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "acceptance_tools"
TOOLS = ("dcgmi", "all_reduce_perf", "ib_write_bw")
HANG = "exec sleep 600\n"
GARBAGE = "printf 'Segmentation fault (core dumped)\\n\\001\\002'\nexit 139\n"


def _script(body: str) -> str:
    return "#!/bin/sh\n" + body


def _ib_write_bw(slow: Iterable[str]) -> str:
    """Server (no address) prints its banner; a client prints the table for its device."""
    fast = shlex.quote(str(DATA / "ib_write_bw-client-ndr.txt"))
    half = shlex.quote(str(DATA / "ib_write_bw-client-half-rate.txt"))
    server = shlex.quote(str(DATA / "ib_write_bw-server.txt"))
    cases = "".join(f"  {shlex.quote(d)}) out={half} ;;\n" for d in slow)
    return (
        'dev=""; last=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = "-d" ] && dev="$a"; prev="$a"; last="$a"; done\n'
        'case "$last" in *.*.*.*) ;; *) cat ' + server + "; exit 0 ;; esac\n"
        f"out={fast}\n"
        'case "$dev" in\n' + cases + "  *) ;;\nesac\n"
        'cat "$out"\n'
    )


def install(
    dest: Path,
    *,
    dcgm: str = "dcgmi-diag-r2.json",
    nccl: str = "all_reduce_perf-8xH100.txt",
    slow_rails: Iterable[str] = (),
    hang: Iterable[str] = (),
    garbage: Iterable[str] = (),
    absent: Iterable[str] = (),
) -> str:
    """Write the stand-ins into `dest/bin`; return the PATH for the run."""
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    bodies = {
        "dcgmi": f"cat {shlex.quote(str(DATA / dcgm))}\n",
        "all_reduce_perf": f"cat {shlex.quote(str(DATA / nccl))}\n",
        "ib_write_bw": _ib_write_bw(slow_rails),
    }
    hang, garbage, absent = set(hang), set(garbage), set(absent)
    for tool, body in bodies.items():
        if tool in absent:
            continue
        body = HANG if tool in hang else GARBAGE if tool in garbage else body
        path = bin_dir / tool
        path.write_text(_script(body))
        path.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', os.defpath)}"
