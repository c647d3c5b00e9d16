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
import re
import types
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from nodeagent.hardware.probes import oci

SWITCH = ("auto", "on", "off")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


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
class LldpConfig:
    enabled: str = "auto"
    socket: str = ""
    lldpcli: str = "lldpcli"
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class InfinibandConfig:
    enabled: str = "auto"
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class OciConfig:
    enabled: str = "auto"
    base_url: str = oci.DEFAULT_BASE_URL
    timeout_seconds: float = oci.DEFAULT_TIMEOUT


@dataclass(frozen=True)
class FabricConfig:
    node_name: str = ""
    expected_rails: int = 0
    expected_rate_gbps: float = 0.0
    rails: RailSelector = field(default_factory=RailSelector)
    static: StaticConfig = field(default_factory=StaticConfig)
    lldp: LldpConfig = field(default_factory=LldpConfig)
    infiniband: InfinibandConfig = field(default_factory=InfinibandConfig)
    oci: OciConfig = field(default_factory=OciConfig)


CHOICES = {"enabled": SWITCH}
# Static placement values become label values and Slurm switch names as they are, so they
# must already be valid label values (the rule of nodeagent.labels.syntax, which this
# lower layer cannot import).
_LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")


def build(cls: Any, data: Any, where: str, prefix: str = "") -> Any:
    """A frozen dataclass from a TOML table, every key and type checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'table'}' must be a table")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{dotted}'")
        kwargs[key] = _value(hints[key], value, where, dotted)
    return cls(**kwargs)


def _value(expected: Any, value: Any, where: str, dotted: str) -> Any:
    if dataclasses.is_dataclass(expected):
        return build(expected, value, where, f"{dotted}.")
    if get_origin(expected) is tuple:
        item = get_args(expected)[0]
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{where}: '{dotted}' must be a list of {item.__name__}")
        return tuple(value)
    if isinstance(expected, types.UnionType):  # str | None and the like: not used in tables
        raise ConfigError(f"{where}: '{dotted}' cannot be set here")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{dotted}' must be {expected.__name__}, got {type(value).__name__}"
        )
    name = dotted.rsplit(".", 1)[-1]
    if dotted.startswith("fabric.static.") and value and not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(
            f"{where}: '{dotted}' must be a label value: <= 63 of A-Z a-z 0-9 - _ ., "
            "alphanumeric at both ends"
        )
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{where}: '{dotted}' must be one of {', '.join(CHOICES[name])}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: '{dotted}' must not be negative")
    return value


def fabric_config(data: dict[str, Any], where: str) -> FabricConfig:
    """The `[fabric]` table of a parsed TOML document (absent: defaults)."""
    config: FabricConfig = build(FabricConfig, data.get("fabric", {}), where, "fabric.")
    return config
