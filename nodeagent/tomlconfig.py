"""TOML configuration files loaded into frozen dataclasses, strictly.

An unknown key or a value of the wrong type is an error naming the file and the
key: a typo in a fleet-wide config must not be silently ignored and leave a
thousand machines on defaults.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _build(
    cls: Any,
    data: dict[str, Any],
    where: str,
    prefix: str = "",
    choices: dict[str, set[str]] | None = None,
) -> Any:
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
            kwargs[key] = _build(expected, value, where, f"{dotted}.", choices)
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if get_origin(expected) is list:
            item = get_args(expected)[0]
            if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
                raise ConfigError(f"{where}: '{dotted}' must be a list of {item.__name__}")
            kwargs[key] = value
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{where}: '{dotted}' must be {expected.__name__}, got {type(value).__name__}"
            )
        allowed = (choices or {}).get(dotted)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: '{dotted}' must be one of {sorted(allowed)}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{where}: '{dotted}' must not be negative")
        kwargs[key] = value
    return cls(**kwargs)


def load_file(
    cls: type[T], path: Path, *, required: bool = False, choices: dict[str, set[str]] | None = None
) -> T:
    """Parse and validate `path` into `cls`; a missing optional file gives the defaults."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return cls()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None
    result: T = _build(cls, data, str(path), "", choices)
    return result
