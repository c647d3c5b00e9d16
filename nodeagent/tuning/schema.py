"""The JSON Schema of a golden profile, built from the allow-lists in `validators`.

One source for both: a pattern tightened in `validators` tightens load-time validation too.
`nodeagent tune schema` prints it for editors (YAML language servers take a JSON Schema).
Every object is closed (`additionalProperties: false`) so a misspelt key is an error that
names the key, not a setting silently left at its default (cloud-init's schema rule).
"""

from __future__ import annotations

from typing import Any

from nodeagent.tuning.gpu_driver import MODES as GPU_DRIVER_MODES
from nodeagent.tuning.validators import KINDS


def _s(kind: str) -> dict[str, Any]:
    spec = KINDS[kind]
    return {"type": "string", "pattern": f"^(?:{spec.pattern})$", "maxLength": spec.max_len}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": list(required),
    }


def _list(item: dict[str, Any], unique: bool = True) -> dict[str, Any]:
    return {"type": "array", "items": item, "uniqueItems": unique}


_UINT = {"type": "integer", "minimum": 0, "maximum": 1 << 31}


def _map(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "propertyNames": _s(key), "additionalProperties": value}


def _scalar_of(kind: str) -> dict[str, Any]:
    """An integer, or a string of `kind` (integers are checked again once stringified)."""
    return {"anyOf": [{"type": "integer", "minimum": 0}, _s(kind)]}


SELECTOR = _obj(
    {
        "gpu_models": _list(_s("glob")),
        "gpu_count": _UINT,
        "system_vendors": _list(_s("glob")),
        "system_products": _list(_s("glob")),
        "cpu_vendors": _list(_s("glob")),
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
    }
)

EXPECTED_HARDWARE = _obj(
    {
        "gpu_model": _s("glob"),
        "gpu_count": _UINT,
        "compute_rails": _UINT,
        "rail_rate_gbps": {"type": "number", "minimum": 0, "maximum": 3200},
        "rail_link_layer": _s("link_layer"),
        "nvme_count": _UINT,
        "gbps_per_gpu": {"type": "number", "minimum": 0, "maximum": 3200},
        "north_south_adapters": _UINT,
        "gpus_per_rail": {"type": "integer", "minimum": 1, "maximum": 16},
        "gpu_numa_affinity": {"type": "boolean"},
    }
)

BIOS = _obj(
    {
        "intents": _obj(
            {
                "performance_profile": _s("performance_profile"),
                "c_states": _s("toggle"),
                "sub_numa_clustering": _s("toggle"),
                "aspm": _s("toggle"),
                "virtualization": _s("toggle"),
                "iommu": _s("toggle"),
                "sriov": _s("toggle"),
                "turbo": _s("toggle"),
            }
        ),
        "attributes": _map(
            "bios_attribute", {"anyOf": [{"type": ["integer", "boolean"]}, _s("bios_value")]}
        ),
        "apply_time": _s("apply_time"),
    }
)

OS = _obj(
    {
        "kernel_cmdline": _list(_s("cmdline_token")),
        "sysctl": _map("sysctl_key", _scalar_of("sysctl_value")),
        "cpu_governor": _s("governor"),
        "transparent_hugepages": _s("thp"),
        "transparent_hugepages_defrag": _s("thp_defrag"),
        "hugepages": _obj(
            {"size_kib": {"enum": [2048, 1048576]}, "count": _UINT}, required=("size_kib", "count")
        ),
        "numa_balancing": {"type": "boolean"},
        "modules": _list(_s("module")),
        "module_options": _map("module", _map("module_param", _scalar_of("module_value"))),
        "services": _list(_s("service")),
        "disable_pcie_acs": {"type": "boolean"},
        "memlock": _scalar_of("memlock"),
        "nvme_raid": _obj(
            {
                "device": _s("md_device"),
                "level": {"enum": [0]},
                "member_model": _s("glob"),
                "members": {"type": "integer", "minimum": 2, "maximum": 64},
                "mount_point": _s("mount_point"),
                "filesystem": _s("filesystem"),
                "chunk_kib": {"enum": [64, 128, 256, 512, 1024]},
            },
            required=("device", "level", "member_model", "members", "mount_point", "filesystem"),
        ),
        "max_cstate": {"type": "integer", "minimum": 0, "maximum": 9},
        "pcie_aspm_policy": _s("aspm_policy"),
    }
)

SUPPORT = _obj(
    {
        "kernels": _list(_s("glob")),
        "nvidia_drivers": _list(_s("glob")),
        "cuda": _list(_s("glob")),
        "nic_firmware": _list(
            _obj(
                {"model": _s("glob"), "versions": _list(_s("glob"))}, required=("model", "versions")
            ),
            unique=False,
        ),
        "os": _list(_s("glob")),
        "vbios": _list(_s("glob")),
        "firmware_bundles": _list(_s("glob")),
        "rdma_stack": {"enum": ["inbox", "ofed"]},
        "ofed_versions": _list(_s("glob")),
    }
)

# The acceptance checks a profile may name (nodeagent.acceptance.registry has the same names;
# tests/acceptance checks that the two agree): this layer sits below the checks.
ACCEPTANCE_CHECKS = (
    "gpu-state",
    "dcgm-diag",
    "nccl-allreduce",
    "rdma-bandwidth",
    "nvme-health",
    "nvme-read",
    "rdma-link",
    "memory-edac",
)
ACCEPTANCE_LEVELS = ("quick", "standard", "long")
_POSITIVE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1e9}
_FIO_SIZE = {"type": "string", "pattern": "^[1-9][0-9]{0,5}[KMG]?$"}

ACCEPTANCE = _obj(
    {
        "required_level": {"enum": list(ACCEPTANCE_LEVELS)},
        "on_failure": {"enum": ["quarantine", "fail"]},
        "required_checks": _list({"enum": list(ACCEPTANCE_CHECKS)}),
        "gpu": _obj(
            {
                "max_temperature_celsius": {"type": "number", "minimum": 1, "maximum": 125},
                "max_idle_power_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "persistence_mode": {"type": "boolean"},
            }
        ),
        "nccl": _obj({"min_busbw_gbytes": _POSITIVE, "max_bytes": _FIO_SIZE}),
        "rdma": _obj(
            {
                "min_rate_gbps": {"type": "number", "exclusiveMinimum": 0, "maximum": 3200},
                "min_bw_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "max_error_growth": _UINT,
            }
        ),
        "nvme": _obj(
            {
                "min_seq_read_mbytes": _POSITIVE,
                "min_rand_read_iops": _POSITIVE,
                "runtime_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                "size": _FIO_SIZE,
            }
        ),
        "memory": _obj({"max_corrected_growth": _UINT}),
        "timeouts": {
            "type": "object",
            "propertyNames": {"enum": list(ACCEPTANCE_CHECKS)},
            "additionalProperties": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        },
    }
)

_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
# A deviation's values are compared with the settings they name, so any YAML value may stand
# there; null is the value of a setting the profile removes.
_ANY = {"type": ["string", "integer", "number", "boolean", "null", "array", "object"]}

DEVIATION = _obj(
    {"setting": _s("setting_path"), "base": _ANY, "value": _ANY, "reason": _TEXT},
    required=("setting", "base", "value", "reason"),
)

PROFILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nodeagent.io/schemas/golden-profile.json",
    "title": "nodeagent golden-image profile",
    **_obj(
        {
            "name": _s("profile_name"),
            "description": {"type": "string", "maxLength": 500},
            "selector": SELECTOR,
            "expected_hardware": EXPECTED_HARDWARE,
            "bios": BIOS,
            "os": OS,
            "support": SUPPORT,
            "extends": _s("profile_name"),
            "abstract": {"type": "boolean"},
            "reference": _TEXT,
            "sources": _map("setting_path", _TEXT),
            "deviations": _list(DEVIATION, unique=False),
            "acceptance": ACCEPTANCE,
            "gpu_driver": {"enum": list(GPU_DRIVER_MODES)},
            "on_drift": {"enum": ["report", "apply"]},
        },
        required=("name", "os"),
    ),
}
