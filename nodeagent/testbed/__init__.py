"""Modelled machine roots for tests and demos: trees laid out like `/` of reference servers.

`build_machine("dgx-h100", path)` writes `sys/`, `proc/`, `etc/` and probe recordings of a
DGX H100 under `path`; discovery reads it through a HostRoot like a live machine.
"""

from nodeagent.testbed.machines import MACHINES, build_machine
from nodeagent.testbed.smi_q import normalise_pci_bus_id, parse_smi_q

__all__ = ["MACHINES", "build_machine", "normalise_pci_bus_id", "parse_smi_q"]
