"""Modelled machine roots for tests and demos: trees laid out like `/` of reference servers.

`build_machine("dgx-h100", path)` writes `sys/`, `proc/`, `etc/` and probe recordings of a
DGX H100 under `path`; discovery reads it through a HostRoot like a live machine.
"""

from pathlib import Path

from testbed.machines import MACHINES, build_machine
from testbed.smi_q import normalise_pci_bus_id, parse_smi_q

# the recorded outputs of real machines the models are checked against (data/README.md)
TESTBED_DATA = Path(__file__).resolve().parent / "data"

__all__ = ["MACHINES", "TESTBED_DATA", "build_machine", "normalise_pci_bus_id", "parse_smi_q"]
