"""Where labels go: flat JSON, an NFD local feature file, Kubespray host vars.

The NFD file is NFD's `local` source format (source/local/local.go): `key=value` lines,
`#` comments, and an `# +expiry-time=<RFC3339>` directive after which NFD drops the
lines, so the labels vanish if nodeagent stops refreshing the file. NFD ignores files
over 64 KiB and names starting with `.`: the file is written as `.nodeagent.tmp` in
the same directory and renamed over `nodeagent`, so NFD never reads half a file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from nodeagent import fsutil

FEATURES_DIR = "etc/kubernetes/node-feature-discovery/features.d"
FEATURE_FILE = "nodeagent"
MAX_FEATURE_FILE = 65536


def to_json(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(labels), indent=2, sort_keys=True) + "\n"


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def nfd_feature_file(labels: Mapping[str, str], now: dt.datetime, expiry_seconds: int) -> str:
    """The feature file text; ValueError when NFD would ignore it for its size."""
    expires = rfc3339(now + dt.timedelta(seconds=expiry_seconds))
    lines = [
        "# Node labels from nodeagent (nodeagent labels -o nfd); rewritten while it runs.",
        f"# +expiry-time={expires}",
        *(f"{key}={value}" for key, value in sorted(labels.items())),
    ]
    text = "\n".join(lines) + "\n"
    if len(text.encode()) > MAX_FEATURE_FILE:
        raise ValueError(
            f"feature file would be {len(text.encode())} bytes; NFD ignores files "
            f"over {MAX_FEATURE_FILE}"
        )
    return text


def parse_feature_file(text: str) -> dict[str, str]:
    """Labels in a feature file, as NFD reads them (comments and directives skipped)."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        out[key] = value if sep else "true"
    return out


def feature_file_path(root_path: str) -> Path:
    return Path(root_path) / FEATURES_DIR / FEATURE_FILE


def write_atomic(path: Path, text: str) -> None:
    """The NFD feature file: through a dot-file NFD ignores, renamed into place."""
    fsutil.write_atomic(path, text, mode=0o644)


def kubespray_host_vars(labels: Mapping[str, str], taints: Sequence[str]) -> str:
    """Kubespray host vars: `node_labels` (a dict) and `node_taints` (key=value:Effect)."""
    doc = {"node_labels": dict(sorted(labels.items())), "node_taints": list(taints)}
    return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200))
