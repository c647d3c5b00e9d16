"""Agent configuration: TOML under /etc/nodeagent/agent.toml, validated strictly.

An unknown key or a value of the wrong type stops the daemon with one line that
names the key: a typo in a fleet-wide config must not be silently ignored and
leave a thousand nodes on defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.labels.config import LabelConfig
from nodeagent.labels.config import check as check_labels
from nodeagent.tomlconfig import ConfigError, flatten, load_file, one_of
from nodeagent.topology.config import RULES as FABRIC_RULES
from nodeagent.topology.config import FabricConfig

__all__ = ["AgentConfig", "ConfigError", "load"]

DEFAULT_PATH = "/etc/nodeagent/agent.toml"


@dataclass(frozen=True)
class ApiConfig:
    socket: str = "/run/nodeagent/agent.sock"
    tcp_listen: str = ""  # host:port; requires tls_cert, tls_key and tls_ca (mTLS)
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    max_request_bytes: int = 64 * 1024  # requests are tiny; anything bigger is hostile
    max_response_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int = 256


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "0.0.0.0:9745"  # "" turns the endpoint off


@dataclass(frozen=True)
class WatchConfig:
    udev: bool = True
    nvml_events: bool = True
    rdma_poll_seconds: float = 5.0
    rediscover_seconds: float = 300.0
    coalesce_seconds: float = 1.0


@dataclass(frozen=True)
class InventoryClientConfig:
    address: str = ""  # host:7444 (mTLS); empty: no inventory service, the agent runs alone
    bootstrap_address: str = ""  # host:7445 by default: enrolment with the token
    ca_hash: str = ""  # sha256:<hex> pin of the inventory CA's public key
    token_file: str = ""  # file holding the bootstrap token (kept out of this config)
    heartbeat_seconds: float = 0.0  # 0: use what the service says
    report_addresses: bool = True  # the node's addresses from netlink, for Kubespray
    # replicas to spread over (host:port each, mTLS); [] = `address` alone, whose name may
    # resolve to several replicas (A records)
    addresses: list[str] = field(default_factory=list)
    stream: bool = True  # heartbeats on one Session stream; unary where the server has none


@dataclass(frozen=True)
class TuningConfig:
    profile: str = ""  # golden profile when the inventory assigns none; "" = by selector
    profiles_dir: str = ""  # searched before /etc/nodeagent/profiles and the shipped ones
    commands_file: str = ""  # JSON map of command stand-ins (throwaway roots, tests)
    bmc_url: str = ""  # Redfish base URL; empty: BIOS settings are not read or written
    bmc_username: str = ""
    bmc_password_file: str = ""  # the password stays in this file, out of the config
    bmc_verify_tls: bool = True
    gpu_driver: str = ""  # host | operator (the GPU Operator's); "" = the profile's, else host
    # verify the profile this often and report drift (0: only when asked)
    verify_seconds: float = 3600.0
    # a re-apply on drift (profile on_drift = "apply") may run on a JOINED node
    apply_on_drift_when_joined: bool = False


@dataclass(frozen=True)
class AgentConfig:
    root: str = "/"
    state_dir: str = "/var/lib/nodeagent"
    hooks_dir: str = "/etc/nodeagent/hooks.d"
    hook_timeout_seconds: float = 300.0
    # a failing post-* hook: "fail" fails the step (the node goes FAILED), "warn" records it
    post_hook_failure: str = "fail"
    log_format: str = "text"  # text | json
    log_level: str = "info"
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    inventory: InventoryClientConfig = field(default_factory=InventoryClientConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    # the node's labels (the daemon keeps labels.feature_file current) and its fabric:
    # the same tables as labels.toml, which `nodeagent labels` reads
    labels: LabelConfig = field(default_factory=LabelConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)

    def summary(self) -> dict[str, str]:
        """Flat view for GetStatus; paths and switches only, never key material."""
        return {name: str(value) for name, value in flatten(self).items()}


def load(path: str | Path | None, *, required: bool = False) -> AgentConfig:
    """Read and validate a config file; no file (and not required) means defaults."""
    if path is None:
        if not Path(DEFAULT_PATH).exists():
            return AgentConfig()
        path = DEFAULT_PATH
    config = load_file(AgentConfig, Path(path), required=required, rules=RULES)
    check_labels(config.labels, str(path))
    inv = config.inventory
    if inv.address and not (inv.ca_hash and inv.token_file):
        raise ConfigError(f"{path}: 'inventory.address' needs inventory.ca_hash and token_file")
    api = config.api
    if api.tcp_listen and not (api.tls_cert and api.tls_key and api.tls_ca):
        raise ConfigError(
            f"{path}: 'api.tcp_listen' needs api.tls_cert, api.tls_key and api.tls_ca"
        )
    return config


RULES = {
    "log_format": one_of("json", "text"),
    "log_level": one_of("debug", "info", "warning", "error"),
    "tuning.gpu_driver": one_of("", "host", "operator"),
    "post_hook_failure": one_of("fail", "warn"),
    **FABRIC_RULES,
}
