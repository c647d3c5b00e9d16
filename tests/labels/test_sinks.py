"""Sinks: the NFD local feature file (format, expiry, atomic write) and Kubespray vars."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from nodeagent import fsutil
from nodeagent.labels import sinks

LABELS = {
    "gpu.nodeagent.io/count": "8",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/cuda.driver-version.revision": "",
}
NOW = dt.datetime(2026, 11, 29, 5, 30, 0, 123456, tzinfo=dt.UTC)


def test_feature_file_format_and_expiry() -> None:
    text = sinks.nfd_feature_file(LABELS, NOW, 600)
    assert text.splitlines() == [
        "# Node labels from nodeagent (nodeagent labels -o nfd); rewritten while it runs.",
        "# +expiry-time=2026-11-29T05:40:00Z",
        "gpu.nodeagent.io/count=8",
        "nvidia.com/cuda.driver-version.revision=",
        "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
    ]
    # parsed back as NFD's local source reads it: split at the first '='
    assert sinks.parse_feature_file(text) == LABELS
    assert sinks.parse_feature_file("# +no-label\nflag\n\n  a=b=c  \n") == {
        "flag": "true",
        "a": "b=c",
    }
    other_zone = dt.datetime(2026, 11, 29, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert sinks.rfc3339(other_zone) == "2026-11-29T05:30:00Z"


def test_feature_file_over_nfd_limit_is_refused() -> None:
    many = {f"x.nodeagent.io/k{i}": "v" * 63 for i in range(1000)}
    with pytest.raises(ValueError, match="NFD ignores files over 65536"):
        sinks.nfd_feature_file(many, NOW, 600)


def test_atomic_write_goes_through_a_dot_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "features.d" / "nodeagent"
    renames: list[tuple[str, str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((os.path.basename(src), os.path.basename(dst), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)  # the one atomic writer sinks use
    sinks.write_atomic(target, "old\n")
    sinks.write_atomic(target, "new\n")
    # NFD skips names starting with '.'; the file is complete before it becomes visible
    assert renames == [
        (".nodeagent.tmp", "nodeagent", "old\n"),
        (".nodeagent.tmp", "nodeagent", "new\n"),
    ]
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["nodeagent"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_kubespray_host_vars() -> None:
    text = sinks.kubespray_host_vars(LABELS, ["nodeagent.io/validating=true:NoSchedule"])
    doc = yaml.safe_load(text)
    assert doc == {
        "node_labels": LABELS,
        "node_taints": ["nodeagent.io/validating=true:NoSchedule"],
    }
    assert all(isinstance(v, str) for v in doc["node_labels"].values())  # "8" stays a string
    assert "'8'" in text
