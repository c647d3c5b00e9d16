"""Inventory service configuration (`/etc/nodeagent/inventory.toml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.tomlconfig import ConfigError, load_file, one_of

__all__ = ["ConfigError", "InventoryConfig", "load"]


@dataclass(frozen=True)
class InventoryConfig:
    listen: str = "0.0.0.0:7444"  # mTLS: nodes and admins with client certificates
    # TLS without client certificates, for Register only (a bootstrap token is the credential).
    # grpcio can either require client certificates on a port or not request them at all,
    # so enrolment has a port of its own; by default the next one.
    bootstrap_listen: str = ""
    data_dir: str = "/var/lib/nodeagent-inventory"
    # sqlite:///PATH (default: <data_dir>/inventory.db) or postgresql://user@host/db
    database: str = ""
    # The CA: created in data_dir on first start unless both paths are given (HA: share one).
    ca_cert: str = ""
    ca_key: str = ""
    # Names and addresses agents dial; they go into the serving certificate.
    server_names: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    heartbeat_interval_seconds: int = 10
    unreachable_after_missed: int = 3
    # HTTP/2 keepalive pings from the inventory to each connection; 0: none. Agents ping
    # (60 s), and a stream whose node falls silent is ended here after the unreachable
    # window, so the inventory needs none of its own. Each connection with a keepalive
    # holds a timer in gRPC core, and core walks every such timer many times a second: at
    # 6,000 connections that was a seventh of the server's CPU per heartbeat (issue 20).
    # Set it where old agents beat unary and nodes die without closing their
    # connections: a pinged connection that stops answering is closed.
    keepalive_seconds: int = 0
    node_cert_days: float = 30.0
    liveness_flush_seconds: float = 0.5
    # How often each replica re-reads the revocation list: a certificate revoked on one
    # replica is refused by all of them within this long.
    revocation_refresh_seconds: float = 2.0
    # Profiles a token or an assignment may name are those this host has (as `nodeagent tune`
    # finds them): this directory first, then $NODEAGENT_PROFILES_DIR, /etc/nodeagent/profiles
    # and the shipped ones.
    profiles_dir: str = ""
    max_message_bytes: int = 8 * 1024 * 1024
    # Prometheus metrics (plain HTTP, as the agent's; "" turns them off). The fleet gauges
    # (nodes by state, join jobs, certificate expiries) are read from the database this
    # often, never per scrape.
    metrics_listen: str = "0.0.0.0:9746"
    metrics_refresh_seconds: float = 15.0
    # how often a replica reads the join hooks asked of nodes and the tiers regrouped
    report_poll_seconds: float = 2.0
    # how long a join job waits for its nodes' pre-join and post-join hooks
    join_hook_timeout_seconds: float = 600.0
    log_format: str = "text"
    log_level: str = "info"
    # Join jobs: how often a replica looks for one, how long its cluster lease lasts
    # unrenewed (a dead replica's job is resumed after this), one playbook's time limit.
    join_poll_seconds: float = 2.0
    join_lease_seconds: float = 30.0
    join_playbook_timeout_seconds: int = 7200
    # A finished job's directory (inventory, ansible-runner's artifacts: the hosts' facts
    # and playbook output) is removed this long after the job ended.
    join_job_retention_days: float = 14.0
    # Each cluster's Kubespray runs with the Ansible its release requires: a virtualenv made
    # from the Kubespray tree's requirements.txt, one per distinct file, kept here (default:
    # <data_dir>/ansible-envs). pip installs through its own configuration unless an index
    # is given here (as for everything else this host installs).
    ansible_envs_dir: str = ""
    ansible_pip_index_url: str = ""
    ansible_pip_timeout_seconds: int = 1800
    # The environment for a Kubespray tree that declares no Ansible range (no
    # playbooks/ansible_version.yml) or has no requirements.txt. Default: the service's own.
    ansible_venv: str = ""
    # The cluster side of a node's life (reconciler.py): how often a replica looks for
    # nodes whose Node object needs a change, how long a joined node may take to be Ready
    # before it is FAILED, one drain's time limit, one API call's, the longest backoff.
    kube_reconcile_seconds: float = 2.0
    kube_ready_timeout_seconds: float = 600.0
    kube_drain_timeout_seconds: float = 300.0
    kube_request_timeout_seconds: float = 10.0
    kube_backoff_max_seconds: float = 300.0
    # The health policy applied to every heartbeat (health.py): XIDs that quarantine,
    # rails down or degraded tolerated, heartbeats a rail problem must last before a
    # quarantine and a problem must be gone before an automatic release, the quarantine
    # kinds released automatically (hardware, xid, rails, manual), and whether a mismatch
    # against the profile's expected_hardware quarantines.
    health_fatal_xids: list[int] = field(
        default_factory=lambda: [48, 63, 64, 74, 79, 94, 95, 119, 120]
    )
    health_rails_limit: int = 0
    health_quarantine_after: int = 3
    health_release_after: int = 10
    health_auto_release: list[str] = field(default_factory=lambda: ["rails"])
    health_hardware_mismatch: bool = True

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{Path(self.data_dir) / 'inventory.db'}"

    @property
    def ansible_envs_path(self) -> Path:
        return Path(self.ansible_envs_dir or Path(self.data_dir) / "ansible-envs")

    @property
    def bootstrap_address(self) -> str:
        if self.bootstrap_listen:
            return self.bootstrap_listen
        host, _, port = self.listen.rpartition(":")
        return f"{host}:{int(port) + 1}" if port != "0" else f"{host}:0"

    @property
    def ca_paths(self) -> tuple[Path, Path]:
        data = Path(self.data_dir)
        return (
            Path(self.ca_cert) if self.ca_cert else data / "ca.crt",
            Path(self.ca_key) if self.ca_key else data / "ca.key",
        )


RULES = {
    "log_format": one_of("json", "text"),
    "log_level": one_of("debug", "info", "warning", "error"),
}


def load(path: str | None) -> InventoryConfig:
    if path is None:
        return InventoryConfig()
    config = load_file(InventoryConfig, Path(path), required=True, rules=RULES)
    if bool(config.ca_cert) != bool(config.ca_key):
        raise ConfigError(f"{path}: give both 'ca_cert' and 'ca_key', or neither")
    if config.heartbeat_interval_seconds < 1 or config.unreachable_after_missed < 1:
        raise ConfigError(f"{path}: heartbeat interval and missed count must be at least 1")
    if config.report_poll_seconds <= 0:
        raise ConfigError(f"{path}: 'report_poll_seconds' must be more than 0")
    if config.metrics_refresh_seconds <= 0:
        raise ConfigError(f"{path}: 'metrics_refresh_seconds' must be more than 0")
    if config.join_job_retention_days <= 0:
        raise ConfigError(f"{path}: 'join_job_retention_days' must be more than 0")
    if config.ansible_pip_timeout_seconds < 1:
        raise ConfigError(f"{path}: 'ansible_pip_timeout_seconds' must be at least 1")
    if config.health_quarantine_after < 1 or config.health_release_after < 1:
        raise ConfigError(f"{path}: health heartbeat counts must be at least 1")
    unknown = set(config.health_auto_release) - {"hardware", "xid", "rails", "manual"}
    if unknown:
        raise ConfigError(
            f"{path}: 'health_auto_release' takes hardware, xid, rails, manual; not "
            f"{', '.join(sorted(unknown))}"
        )
    for key in ("ansible_envs_dir", "ansible_venv"):
        if getattr(config, key) and not getattr(config, key).startswith("/"):
            raise ConfigError(f"{path}: {key!r} must be an absolute path")
    return config
