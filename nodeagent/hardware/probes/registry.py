"""Every probe, for what must cover them all: `snapshot capture` records each one.

A probe that asked and found its source absent (no lldpd, no infiniband-diags, no
driver, no answer from the metadata service) records `available: false` and the
reason, so replay reports what the live read reported; one with nothing to ask (no
ACTIVE InfiniBand port, not an OCI instance) records nothing. Each live read is bounded
by its probe's own timeout. The registry is its own module because importing it loads
every probe, which discovery alone does not need.
"""

from __future__ import annotations

from typing import Any

from nodeagent.hardware.probes import infiniband, lldp, nvml, oci
from nodeagent.hardware.probes.recording import Probe

PROBES: tuple[Probe[Any, Any], ...] = (nvml.PROBE, lldp.PROBE, infiniband.PROBE, oci.PROBE)
