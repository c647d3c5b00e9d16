"""Load a profile file: YAML with line numbers -> JSON Schema -> TuningProfile.

PyYAML's composer keeps a mark on every node; walking the node tree ourselves (instead of
`safe_load`) gives each key path its line, so a schema error names file, line and key the
way `cloud-init schema` does. The walk also refuses duplicate keys, which PyYAML would
silently resolve to the last one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from google.protobuf import json_format

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.tuning import validators
from nodeagent.tuning.schema import PROFILE_SCHEMA

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


def _schema_error(err: jsonschema.ValidationError, lines: _Lines, source: str) -> ProfileError:
    path: Path_ = tuple(err.absolute_path)
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
        return ProfileError(
            source,
            lines.of(path),
            _dotted((*path, missing.group(1) if missing else "?")),
            "required key is missing",
        )
    elif err.validator == "pattern":
        message = f"{err.instance!r} is not allowed here (pattern {err.validator_value})"
    return ProfileError(source, lines.of(path), _dotted(path), message)


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _semantic_checks(data: dict[str, Any], lines: _Lines, source: str) -> None:
    """Rules a schema cannot say: value kinds after stringifying, conflicts between keys."""
    os_ = data.get("os", {})

    def fail(path: Path_, message: str) -> None:
        raise ProfileError(source, lines.of(path), _dotted(path), message)

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


def load_text(text: str, source: str, *, expect_name: str | None = None) -> tpb.TuningProfile:
    data, lines = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ProfileError(source, 1, "", "a profile is a mapping (name:, os:, ...)")
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: lines.of(tuple(e.absolute_path)))
    if errors:
        raise _schema_error(errors[0], lines, source)
    if expect_name is not None and data["name"] != expect_name:
        raise ProfileError(
            source,
            lines.of(("name",)),
            "name",
            f"'{data['name']}' must match the file name '{expect_name}'",
        )
    _semantic_checks(data, lines, source)
    profile = tpb.TuningProfile()
    json_format.ParseDict(_to_proto_dict(data), profile)
    profile.source = source
    return profile


def load_file(path: str | Path) -> tpb.TuningProfile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(str(p), 0, "", f"cannot read: {exc}") from None
    return load_text(text, str(p), expect_name=p.stem if p.suffix in (".yaml", ".yml") else None)
