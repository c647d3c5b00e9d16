"""Load a profile file: YAML with line numbers -> JSON Schema -> TuningProfile.

PyYAML's composer keeps a mark on every node; walking the node tree ourselves (instead of
`safe_load`) gives each key path its line, so a schema error names file, line and key the
way `cloud-init schema` does. The walk also refuses duplicate keys, which PyYAML would
silently resolve to the last one.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from google.protobuf import json_format

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import validators
from nodeagent.tuning.schema import PROFILE_SCHEMA
from nodeagent.tuning.shipped import SHIPPED

Path_ = tuple[str | int, ...]
# Keys Kubespray writes in /etc/sysctl.d/99-sysctl.conf, which sorts after ours and wins:
# a different value here would be silently overridden (os_tuning.md §5).
KUBESPRAY_SYSCTL = {
    "kernel.keys.root_maxbytes": "25000000",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "net.ipv4.ip_forward": "1",
}
_VALIDATOR = jsonschema.Draft202012Validator(PROFILE_SCHEMA)
# each file's own `deviations:` is checked before it is compared with its base
_DEVIATIONS = jsonschema.Draft202012Validator(PROFILE_SCHEMA["properties"]["deviations"])


class ProfileError(ValueError):
    """A profile problem; the message is `file:line: key 'a.b': what is wrong`."""

    def __init__(self, source: str, line: int, key: str, message: str) -> None:
        self.source, self.line, self.key, self.problem = source, line, key, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: key '{key}': {message}" if key else f"{where}: {message}")


def _dotted(path: Path_) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")


class _Lines:
    """Key path -> 1-based line, filled while converting the node tree."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}

    def of(self, path: Path_) -> int:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def _convert(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: _Lines, source: str
) -> Any:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ProfileError(
                    source,
                    key_node.start_mark.line + 1,
                    _dotted(path),
                    f"keys must be text, got {key!r}",
                )
            key = str(key)
            if key in out:
                raise ProfileError(
                    source, key_node.start_mark.line + 1, _dotted((*path, key)), "duplicate key"
                )
            lines.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _convert(loader, value_node, (*path, key), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, n, (*path, i), lines, source) for i, n in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, source: str) -> tuple[Any, _Lines]:
    lines = _Lines()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ProfileError(source, 1, "", "empty file")
        return _convert(loader, node, (), lines, source), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ProfileError(source, line, "", f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(source, 0, "", f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _schema_error(
    err: jsonschema.ValidationError, lines: _Origins, prefix: Path_ = ()
) -> ProfileError:
    path: Path_ = (*prefix, *err.absolute_path)
    message = err.message
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        schema = err.schema if isinstance(err.schema, dict) else {}
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        if extra:
            path = (*path, extra[0])
            message = f"unknown key (allowed: {', '.join(sorted(known))})"
    elif "propertyNames" in err.schema_path:
        path = (*path, str(err.instance))
        message = f"not a valid name: {err.instance!r} (pattern {err.validator_value})"
    elif err.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", err.message)
        return lines.error(
            path, "required key is missing", _dotted((*path, missing.group(1) if missing else "?"))
        )
    elif err.validator == "pattern":
        message = f"{err.instance!r} is not allowed here (pattern {err.validator_value})"
    return lines.error(path, message)


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _semantic_checks(data: dict[str, Any], lines: _Origins) -> None:
    """Rules a schema cannot say: value kinds after stringifying, conflicts between keys."""
    os_ = data.get("os", {})

    def fail(path: Path_, message: str) -> None:
        raise lines.error(path, message)

    for key, value in os_.get("sysctl", {}).items():
        text = _stringify(value)
        if not validators.is_valid("sysctl_value", text):
            fail(("os", "sysctl", key), f"{text!r} is not a valid sysctl value")
        if key in KUBESPRAY_SYSCTL and text != KUBESPRAY_SYSCTL[key]:
            fail(
                ("os", "sysctl", key),
                f"Kubespray sets {key} = {KUBESPRAY_SYSCTL[key]} in "
                "99-sysctl.conf, which overrides ours; use its value or set it there",
            )
    if "numa_balancing" in os_ and "kernel.numa_balancing" in os_.get("sysctl", {}):
        fail(
            ("os", "sysctl", "kernel.numa_balancing"), "set by os.numa_balancing as well; keep one"
        )
    seen: dict[str, int] = {}
    for i, token in enumerate(os_.get("kernel_cmdline", [])):
        key = token.split("=", 1)[0]
        if key in seen:
            fail(("os", "kernel_cmdline", i), f"'{key}' is already given at item {seen[key]}")
        seen[key] = i
    for module, options in os_.get("module_options", {}).items():
        for param, value in options.items():
            if not validators.is_valid("module_value", _stringify(value)):
                fail(("os", "module_options", module, param), f"{value!r} is not a valid value")
    memlock = os_.get("memlock")
    if memlock is not None and not validators.is_valid("memlock", _stringify(memlock)):
        fail(("os", "memlock"), f"{memlock!r} must be 'unlimited' or a size in KiB")
    raid, expected = os_.get("nvme_raid"), data.get("expected_hardware", {})
    if raid and not validators.is_valid("mount_point", raid["mount_point"]):
        fail(
            ("os", "nvme_raid", "mount_point"),
            f"{raid['mount_point']!r} is a system directory; mount the RAID elsewhere",
        )
    if raid and "nvme_count" in expected and raid["members"] > expected["nvme_count"]:
        fail(
            ("os", "nvme_raid", "members"),
            f"{raid['members']} members but expected_hardware.nvme_count is "
            f"{expected['nvme_count']}",
        )


def _to_proto_dict(data: dict[str, Any]) -> dict[str, Any]:
    """YAML shape -> protobuf JSON shape: scalars as text, module options wrapped."""
    out = dict(data)
    os_ = dict(out.get("os", {}))
    if "sysctl" in os_:
        os_["sysctl"] = {k: _stringify(v) for k, v in os_["sysctl"].items()}
    if "module_options" in os_:
        os_["module_options"] = {
            m: {"options": {k: _stringify(v) for k, v in opts.items()}}
            for m, opts in os_["module_options"].items()
        }
    if "memlock" in os_:
        os_["memlock"] = _stringify(os_["memlock"])
    out["os"] = os_
    if "bios" in out and "attributes" in out["bios"]:
        bios = dict(out["bios"])
        bios["attributes"] = {k: _stringify(v) for k, v in bios["attributes"].items()}
        out["bios"] = bios
    return out


# Keys a profile keeps to itself: a base's name, description or reference describe the base,
# and its deviations are merged separately (they are about the base's own base).
OWN_KEYS = frozenset({"name", "description", "extends", "abstract", "reference", "deviations"})
# Keys that are not settings: never a deviation, and not compared by `tune diff`.
META_KEYS = OWN_KEYS | {"sources"}
Origin = tuple[str, int]


class _Origins:
    """Key path -> (file, line) of the layer that set it, over a chain of merged profiles:
    an error in the merged result names the file that wrote the value, not the leaf's."""

    def __init__(self, lines: _Lines, source: str) -> None:
        self.at: dict[Path_, Origin] = {p: (source, n) for p, n in lines.lines.items()}
        self.leaf = source

    def of(self, path: Path_) -> Origin:
        while path not in self.at and path:
            path = path[:-1]
        return self.at.get(path, (self.leaf, 1))

    def error(self, path: Path_, message: str, key: str | None = None) -> ProfileError:
        source, line = self.of(path)
        return ProfileError(source, line, _dotted(path) if key is None else key, message)

    def replace(self, prefix: Path_, other: _Origins) -> None:
        """`prefix` and everything under it now come from `other`."""
        n = len(prefix)
        for p in [p for p in self.at if p[:n] == prefix]:
            del self.at[p]
        self.at.update({p: o for p, o in other.at.items() if p[:n] == prefix})


@dataclass
class _Layer:
    """One file of an inheritance chain, as written."""

    name: str
    source: str
    data: dict[str, Any]
    origins: _Origins

    @property
    def base(self) -> str | None:
        value = self.data.get("extends")
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.origins.error(("extends",), "give the name of a base profile")
        return value


def _layer(text: str, source: str, expect_name: str | None) -> _Layer:
    data, lines = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ProfileError(source, 1, "", "a profile is a mapping (name:, os:, ...)")
    layer = _Layer(str(data.get("name", expect_name or "")), source, data, _Origins(lines, source))
    if expect_name is not None and "name" in data and data["name"] != expect_name:
        raise layer.origins.error(
            ("name",), f"'{data['name']}' must match the file name '{expect_name}'"
        )
    return layer


def _overlay(
    base: dict[str, Any], child: dict[str, Any], path: Path_, origins: _Origins, theirs: _Origins
) -> dict[str, Any]:
    """`child` over `base`: maps merge deeply, lists and scalars replace, null removes."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        here = (*path, key)
        if not path and key in OWN_KEYS:
            continue
        if value is None:
            out.pop(key, None)
            origins.replace(here, _Origins(_Lines(), theirs.leaf))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            origins.at[here] = theirs.of(here)
            out[key] = _overlay(out[key], value, here, origins, theirs)
        else:
            out[key] = copy.deepcopy(value)
            origins.replace(here, theirs)
    return out


def _norm(value: Any) -> Any:
    """A value as compared: scalars as the text they become, containers element-wise."""
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return None if value is None else _stringify(value)


def as_text(value: Any) -> str:
    """A setting's value on one line: scalars as they are written, containers as JSON."""
    normed = _norm(value)
    if normed is None:
        return "null"
    return normed if isinstance(normed, str) else json.dumps(normed, separators=(", ", ": "))


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def lookup(data: Any, setting: str) -> tuple[bool, Any]:
    """(found, value) of a dotted setting; keys may hold dots themselves (sysctl names)."""
    if setting == "":
        return True, data
    if not isinstance(data, dict):
        return False, None
    for key in sorted(data, key=len, reverse=True):
        if setting == key:
            return True, data[key]
        if setting.startswith(f"{key}."):
            found, value = lookup(data[key], setting[len(key) + 1 :])
            if found:
                return found, value
    return False, None


def changes(child: Any, base: Any, path: Path_ = ()) -> list[Path_]:
    """Paths where `child` (a layer as written) changes a value `base` sets. Adding a key or
    list items is not a change; replacing or removing one is (lists replace, so a list that
    drops any of the base's items changes the whole list)."""
    out: list[Path_] = []
    for key, value in child.items():
        here = (*path, key)
        if (not path and key in META_KEYS) or key not in base:
            continue
        old = base[key]
        if value is None:
            out.append(here)
        elif isinstance(value, dict) and isinstance(old, dict):
            out.extend(changes(value, old, here))
        elif isinstance(value, list) and isinstance(old, list):
            if any(item not in _norm(value) for item in _norm(old)):
                out.append(here)
        elif _norm(value) != _norm(old):
            out.append(here)
    return out


def _check_deviations(layer: _Layer, base: dict[str, Any], merged: dict[str, Any]) -> None:
    """Every change to the base is declared, and every declaration is a true change: the
    table `tune show` prints is then the whole of what a profile departs from."""
    declared = layer.data.get("deviations") or []
    settings = [str(d["setting"]) for d in declared]
    for i, dev in enumerate(declared):
        setting = str(dev["setting"])
        found, old = lookup(base, setting)
        if not found:
            raise layer.origins.error(
                ("deviations", i, "setting"), f"{layer.base} sets no {setting}: nothing to deviate"
            )
        present, new = lookup(merged, setting)
        new = new if present else None
        if _norm(dev["base"]) != _norm(old):
            raise layer.origins.error(
                ("deviations", i, "base"),
                f"{layer.base} sets {setting} to {as_text(old)}, not {as_text(dev['base'])}",
            )
        if _norm(dev["value"]) != _norm(new):
            raise layer.origins.error(
                ("deviations", i, "value"),
                f"this profile sets {setting} to {as_text(new)}, not {as_text(dev['value'])}",
            )
        if _norm(old) == _norm(new):
            raise layer.origins.error(
                ("deviations", i, "setting"),
                f"{setting} is {layer.base}'s value ({as_text(old)}): not a deviation",
            )
    for path in changes(layer.data, base):
        name = dotted(path)
        if not any(name == s or name.startswith(f"{s}.") for s in settings):
            found, old = lookup(base, name)
            new = lookup(merged, name)[1]
            raise layer.origins.error(
                path,
                f"changes {layer.base}'s value ({as_text(old)} -> {as_text(new)}) without "
                f"declaring it: add a `deviations:` entry with setting: {name}, base:, value: "
                "and reason:",
            )


BaseFinder = Callable[[str], Path | None]


@dataclass
class _Resolved:
    data: dict[str, Any]
    origins: _Origins
    deviations: list[dict[str, Any]]
    checks: list[tuple[_Layer, dict[str, Any], dict[str, Any]]]


def _resolve(layer: _Layer, find_base: BaseFinder, chain: tuple[str, ...]) -> _Resolved:
    """`layer` merged onto its bases, and the deviation checks each level owes."""
    devs = layer.data.get("deviations")
    errors = sorted(_DEVIATIONS.iter_errors(devs or []), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0], layer.origins, ("deviations",))
    own = [dict(d) for d in devs or []]
    base_name = layer.base
    if base_name is None:
        if own:
            raise layer.origins.error(
                ("deviations",), "deviations are from a base profile: add `extends:`"
            )
        return _Resolved(copy.deepcopy(layer.data), layer.origins, own, [])
    here = (*chain, layer.name)
    where = layer.origins.of(("extends",))
    if base_name in here:
        raise ProfileError(
            *where, "extends", f"inheritance cycle: {' -> '.join((*here, base_name))}"
        )
    path = find_base(base_name)
    if path is None:
        raise ProfileError(
            *where,
            "extends",
            f"base profile {base_name!r} not found (chain: {' -> '.join((*here, base_name))})",
        )
    base = _resolve(_read(path), find_base, here)
    origins = base.origins
    merged = _overlay(base.data, layer.data, (), origins, layer.origins)
    for key in OWN_KEYS:
        merged.pop(key, None)
        if key in layer.data:
            merged[key] = copy.deepcopy(layer.data[key])
            origins.replace((key,), layer.origins)
    declared = {str(d.get("setting")) for d in own}
    inherited = [d for d in base.deviations if str(d.get("setting")) not in declared]
    merged["extends"] = base_name
    origins.leaf = layer.source
    checks = [*base.checks, (layer, base.data, merged)]
    return _Resolved(merged, origins, [*inherited, *own], checks)


def _read(path: Path) -> _Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(str(path), 0, "", f"cannot read: {exc}") from None
    return _layer(text, str(path), path.stem if path.suffix in (".yaml", ".yml") else None)


def base_finder(dirs: Sequence[Path]) -> BaseFinder:
    """Bases are looked up by name in `dirs`, in order (a site's own base wins)."""

    def find(name: str) -> Path | None:
        if not validators.is_valid("profile_name", name):
            return None
        for d in dirs:
            for suffix in (".yaml", ".yml"):
                if (d / f"{name}{suffix}").is_file():
                    return d / f"{name}{suffix}"
        return None

    return find


def _default_dirs(source: str) -> list[Path]:
    """The profile's own directory, then the profiles the package ships (where ncp-base is)."""
    own = Path(source).parent
    return [own, SHIPPED] if own.is_dir() else [SHIPPED]


def load_text(
    text: str,
    source: str,
    *,
    expect_name: str | None = None,
    search: Sequence[Path] | None = None,
) -> tpb.TuningProfile:
    """Parse, merge onto the bases (`extends:`), validate the merged result, check that every
    change to a base is declared, and build the TuningProfile."""
    layer = _layer(text, source, expect_name)
    finder = base_finder(search if search is not None else _default_dirs(source))
    resolved = _resolve(layer, finder, ())
    data, origins = resolved.data, resolved.origins
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: origins.of(tuple(e.absolute_path)))
    if errors:
        raise _schema_error(errors[0], origins)
    for own, base, merged in resolved.checks:
        _check_deviations(own, base, merged)
    _semantic_checks(data, origins)
    data["deviations"] = [
        {
            "setting": str(d["setting"]),
            "base": as_text(d["base"]),
            "value": as_text(d["value"]),
            "reason": str(d["reason"]),
        }
        for d in resolved.deviations
    ]
    if not data["deviations"]:
        del data["deviations"]
    profile = tpb.TuningProfile()
    json_format.ParseDict(_to_proto_dict(data), profile)
    profile.source = source
    return profile


def load_file(path: str | Path, search: Sequence[Path] | None = None) -> tpb.TuningProfile:
    """The profile in `path`, merged onto its bases (looked up in `search`, by default the
    file's own directory and then the shipped profiles)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(str(p), 0, "", f"cannot read: {exc}") from None
    expect = p.stem if p.suffix in (".yaml", ".yml") else None
    return load_text(text, str(p), expect_name=expect, search=search)


def resolved_dict(path: str | Path, search: Sequence[Path] | None = None) -> dict[str, Any]:
    """The merged profile as YAML data (what `tune show --resolved` prints), after the same
    checks `load_file` makes."""
    profile = load_file(path, search)
    out = json_format.MessageToDict(profile, preserving_proto_field_name=True)
    out.pop("source", None)
    return out
