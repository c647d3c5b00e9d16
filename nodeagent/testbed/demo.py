"""`make demo`: discover this machine, then a bundled DGX H100-like server.

The second one is a root built from the modelled machine in nodeagent.testbed,
discovered exactly as a snapshot from a customer would be (`--root`), with its
NVML recording replayed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from nodeagent.cli import render
from nodeagent.hardware.inventory import discover
from nodeagent.host import HostRoot
from nodeagent.testbed.machines import build_machine


def _banner(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}")


def main() -> int:
    _banner("This machine: nodeagent discover")
    start = time.perf_counter()
    inv = discover(HostRoot("/"))
    took = (time.perf_counter() - start) * 1000
    print(render.inventory_table(inv), end="")
    print(f"(discovered in {took:.1f} ms)")

    with tempfile.TemporaryDirectory(prefix="nodeagent-demo-") as tmp:
        root = build_machine("dgx-h100", Path(tmp) / "dgx-h100")
        _banner(f"Bundled fixture server (DGX H100-like): nodeagent discover --root {root}")
        start = time.perf_counter()
        dgx = discover(HostRoot(root))
        took = (time.perf_counter() - start) * 1000
        print(render.inventory_table(dgx), end="")
        print(f"(discovered in {took:.1f} ms)")
        _banner("Its PCIe/NVLink affinity: nodeagent discover --root ... -o topo")
        print(render.topo_matrix(dgx), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
