"""Agent configuration: TOML under /etc/nodeagent/agent.toml, validated strictly.

An unknown key or a value of the wrong type stops the daemon with one line that
names the key: a typo in a fleet-wide config must not be silently ignored and
leave a thousand nodes on defaults.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

DEFAULT_PATH = "/etc/nodeagent/agent.toml"


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


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
class AgentConfig:
    root: str = "/"
    state_dir: str = "/var/lib/nodeagent"
    hooks_dir: str = "/etc/nodeagent/hooks.d"
    hook_timeout_seconds: float = 300.0
    log_format: str = "text"  # text | json
    log_level: str = "info"
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def summary(self) -> dict[str, str]:
        """Flat view for GetStatus; paths and switches only, never key material."""
        out: dict[str, str] = {}
        for name, value in _flatten(self).items():
            out[name] = str(value)
        return out


_CHOICES = {"log_format": {"text", "json"}, "log_level": {"debug", "info", "warning", "error"}}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _build(cls: Any, data: dict[str, Any], where: str, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{dotted}'")
        expected = hints[key]
        if dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' must be a table")
            kwargs[key] = _build(expected, value, where, f"{dotted}.")
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{where}: '{dotted}' must be {expected.__name__}, got {type(value).__name__}"
            )
        if key in _CHOICES and prefix == "" and value not in _CHOICES[key]:
            raise ConfigError(f"{where}: '{dotted}' must be one of {sorted(_CHOICES[key])}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{where}: '{dotted}' must not be negative")
        kwargs[key] = value
    return cls(**kwargs)


def load(path: str | Path | None, *, required: bool = False) -> AgentConfig:
    """Read and validate a config file; no file (and not required) means defaults."""
    if path is None:
        path = DEFAULT_PATH
        if not Path(path).exists():
            return AgentConfig()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{p}: no such file") from None
        return AgentConfig()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: unreadable: {exc}") from None
    config: AgentConfig = _build(AgentConfig, data, str(p))
    api = config.api
    if api.tcp_listen and not (api.tls_cert and api.tls_key and api.tls_ca):
        raise ConfigError(f"{p}: 'api.tcp_listen' needs api.tls_cert, api.tls_key and api.tls_ca")
    return config
