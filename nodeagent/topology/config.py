"""Fabric configuration: which rails are compute rails, what to expect, static
placement and the fabric probes. The `[fabric]` table of a TOML file, validated
strictly: an unknown key or a wrong type is an error that names the key, because a
typo in a fleet-wide file must not leave a thousand nodes on defaults.

    [fabric]
    node_name = ""              # default: the hostname
    expected_rails = 0          # 0: as many as were selected
    expected_rate_gbps = 0.0    # 0: the fastest selected rail's rate
    [fabric.rails]              # empty: RDMA devices nearest a GPU (GPU-less: all ACTIVE ports)
    pci_addresses = []          # exact, 0000:18:00.0
    netdevs = []                # shell patterns, ibp*; also selects plain netdevs (RoCE on a bond)
    devices = []                # shell patterns, mlx5_[0-7]
    [fabric.static]             # wins over observation and cloud metadata
    fabric = ""
    block = ""                  # tier-2
    rack = ""                   # tier-0, for top-of-rack designs
    [fabric.lldp]
    enabled = "auto"            # auto: when there are Ethernet rails
    socket = ""                 # lldpd control socket (lldpcli -u)
    [fabric.infiniband]
    enabled = "auto"            # auto: when there are ACTIVE InfiniBand rails
    [fabric.oci]
    enabled = "auto"            # auto: on OCI only (DMI chassis asset tag)
    base_url = "http://169.254.169.254"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nodeagent import label_syntax
from nodeagent.hardware.probes import oci
from nodeagent.tomlconfig import Rule, build, one_of

SWITCH = ("auto", "on", "off")


@dataclass(frozen=True)
class RailSelector:
    pci_addresses: tuple[str, ...] = ()
    netdevs: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.pci_addresses or self.netdevs or self.devices)


@dataclass(frozen=True)
class StaticConfig:
    fabric: str = ""
    block: str = ""
    rack: str = ""


@dataclass(frozen=True)
class ProbeConfig:
    """What every fabric probe takes: a switch (auto, on, off) and a time limit."""

    enabled: str = "auto"
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class LldpConfig(ProbeConfig):
    socket: str = ""
    lldpcli: str = "lldpcli"


@dataclass(frozen=True)
class OciConfig(ProbeConfig):
    timeout_seconds: float = oci.DEFAULT_TIMEOUT
    base_url: str = oci.DEFAULT_BASE_URL


@dataclass(frozen=True)
class FabricConfig:
    node_name: str = ""
    expected_rails: int = 0
    expected_rate_gbps: float = 0.0
    rails: RailSelector = field(default_factory=RailSelector)
    static: StaticConfig = field(default_factory=StaticConfig)
    lldp: LldpConfig = field(default_factory=LldpConfig)
    infiniband: ProbeConfig = field(default_factory=ProbeConfig)
    oci: OciConfig = field(default_factory=OciConfig)


def _label_value(value: str) -> str:
    """Static placement values become label values and Slurm switch names as they are, so
    they must already be valid ones."""
    if label_syntax.is_valid_value(value):
        return ""
    return "must be a label value: <= 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends"


RULES: dict[str, Rule] = {
    **{f"fabric.static.{f.name}": _label_value for f in dataclasses.fields(StaticConfig)},
    **{f"fabric.{probe}.enabled": one_of(*SWITCH) for probe in ("lldp", "infiniband", "oci")},
}


def fabric_config(data: dict[str, Any], where: str) -> FabricConfig:
    """The `[fabric]` table of a parsed TOML document (absent: defaults)."""
    return build(FabricConfig, data.get("fabric", {}), where, "fabric.", RULES)
