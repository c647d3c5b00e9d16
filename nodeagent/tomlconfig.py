"""TOML configuration files loaded into frozen dataclasses, strictly.

An unknown key or a value of the wrong type is an error naming the file and the
key: a typo in a fleet-wide config must not be silently ignored and leave a
thousand machines on defaults. Every configuration file (agent, inventory, labels
and fabric) is read and checked here, so they all refuse mistakes alike.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

Rule = Callable[[Any], str]
"""What is wrong with a value the type check let through ('' when nothing is)."""


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


def one_of(*allowed: str) -> Rule:
    """A rule for a key that takes one of a few words; the error lists them, so the one line
    says how to fix the file."""

    def rule(value: Any) -> str:
        return "" if value in allowed else f"must be one of {', '.join(allowed)}"

    return rule


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def build(
    cls: type[T], data: Any, where: str, prefix: str = "", rules: Mapping[str, Rule] | None = None
) -> T:
    """`cls` from a TOML table, every key and type checked; `rules` are keyed by dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a table")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{dotted}'")
        kwargs[key] = _value(hints[key], value, where, dotted, rules or {})
    return cls(**kwargs)


def _value(expected: Any, value: Any, where: str, dotted: str, rules: Mapping[str, Rule]) -> Any:
    if isinstance(expected, type) and dataclasses.is_dataclass(expected):
        return build(expected, value, where, f"{dotted}.", rules)
    sequence = get_origin(expected)
    if sequence in (list, tuple):
        item = get_args(expected)[0]
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{where}: '{dotted}' must be a list of {item.__name__}")
        return sequence(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{dotted}' must be {expected.__name__}, got {type(value).__name__}"
        )
    rule = rules.get(dotted)
    problem = rule(value) if rule else ""
    if problem:
        raise ConfigError(f"{where}: '{dotted}' {problem}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: '{dotted}' must not be negative")
    return value


def read(path: Path, *, required: bool = True) -> dict[str, Any]:
    """The TOML document at `path`; an absent file that is not required reads as empty."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None


def load_file(
    cls: type[T], path: Path, *, required: bool = False, rules: Mapping[str, Rule] | None = None
) -> T:
    """Parse and validate `path` into `cls`; a missing optional file gives the defaults."""
    return build(cls, read(path, required=required), str(path), rules=rules)
