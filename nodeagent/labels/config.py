"""Label configuration: the `[labels]` table (and, beside it, `[fabric]`) of a TOML file.

    [labels]
    domain = "nodeagent.io"                    # our keys: gpu.<domain>/..., <domain>/pool
    families = ["own", "nfd", "gfd", "oci"]    # add "platform" for truefoundry.com/*
    pool = ""                                  # static assignment; the inventory's wins
    profile = ""
    expiry_seconds = 600                       # NFD feature file horizon
    taints = ["{domain}/validating=true:NoSchedule"]   # Kubespray node_taints; [] for none
    feature_file = ""                          # "": <root>/etc/kubernetes/node-feature-
                                               # discovery/features.d/nodeagent

The same `[labels]` and `[fabric]` tables sit in the agent's own configuration: the daemon
keeps `feature_file` current from them.

Validated before use, as the fabric table is: unknown keys and bad values stop with a
line naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent import label_syntax
from nodeagent.tomlconfig import ConfigError, build, read
from nodeagent.topology.config import FabricConfig, fabric_config

DEFAULT_PATH = "/etc/nodeagent/labels.toml"
DEFAULT_DOMAIN = "nodeagent.io"
FAMILIES = ("own", "nfd", "gfd", "oci", "platform")
DEFAULT_FAMILIES = ("own", "nfd", "gfd", "oci")
FEATURES_PATH = "etc/kubernetes/node-feature-discovery/features.d/nodeagent"
DEFAULT_TAINT = "{domain}/validating=true:NoSchedule"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TAINT_RE = re.compile(r"(?P<key>[^=:]+)(?:=(?P<value>[^:]*))?:(?P<effect>[A-Za-z]+)")


@dataclass(frozen=True)
class LabelConfig:
    domain: str = DEFAULT_DOMAIN
    families: tuple[str, ...] = DEFAULT_FAMILIES
    pool: str = ""
    profile: str = ""
    expiry_seconds: int = 600
    taints: tuple[str, ...] = (DEFAULT_TAINT,)
    feature_file: str = ""  # "": FEATURES_PATH under the root (/ on a live node)

    def resolved_taints(self) -> list[str]:
        return [t.replace("{domain}", self.domain) for t in self.taints]


@dataclass(frozen=True)
class Config:
    labels: LabelConfig = field(default_factory=LabelConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)


def check(config: LabelConfig, where: str = "labels") -> LabelConfig:
    """Semantic checks the type checks cannot make."""
    try:
        label_syntax.check_domain(config.domain)
    except ValueError as exc:
        raise ConfigError(f"{where}: 'labels.domain': {exc}") from None
    unknown = [f for f in config.families if f not in FAMILIES]
    if unknown:
        raise ConfigError(
            f"{where}: 'labels.families': unknown {', '.join(unknown)}; "
            f"known: {', '.join(FAMILIES)}"
        )
    if config.expiry_seconds < 60:
        raise ConfigError(
            f"{where}: 'labels.expiry_seconds' must be at least 60 "
            "(NFD re-reads feature files every 60 s)"
        )
    if config.feature_file and not config.feature_file.startswith("/"):
        raise ConfigError(f"{where}: 'labels.feature_file' must be an absolute path")
    for taint in config.resolved_taints():
        problem = taint_problem(taint)
        if problem:
            raise ConfigError(f"{where}: 'labels.taints': {problem}")
    return config


def taint_problem(taint: str) -> str:
    """Why `key[=value]:Effect` is not a valid taint ('' when it is)."""
    m = _TAINT_RE.fullmatch(taint)
    if not m:
        return f"{taint!r} is not key[=value]:Effect"
    if not label_syntax.is_valid_key(m.group("key")):
        return f"{taint!r}: invalid key"
    if not label_syntax.is_valid_value(m.group("value") or ""):
        return f"{taint!r}: invalid value"
    if m.group("effect") not in TAINT_EFFECTS:
        return f"{taint!r}: effect must be one of {', '.join(TAINT_EFFECTS)}"
    return ""


def parse(data: dict[str, Any], where: str) -> Config:
    unknown = sorted(set(data) - {"labels", "fabric"})
    if unknown:
        raise ConfigError(f"{where}: unknown table '{unknown[0]}' (expected labels, fabric)")
    labels = build(LabelConfig, data.get("labels", {}), where, "labels.")
    return Config(check(labels, where), fabric_config(data, where))


def load(path: str | Path | None) -> Config:
    """The file at `path`; None reads DEFAULT_PATH when it exists, else defaults."""
    if path is None:
        if not Path(DEFAULT_PATH).exists():
            return Config()
        path = DEFAULT_PATH
    p = Path(path)
    return parse(read(p), str(p))
