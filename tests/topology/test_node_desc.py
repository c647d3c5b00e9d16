"""The HCA NodeDescription writer, against a throwaway root."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.host import HostRoot
from nodeagent.topology.node_desc import Change, desired, set_node_descriptions


def _root(tmp: Path, descs: dict[str, str]) -> HostRoot:
    for dev, text in descs.items():
        d = tmp / "sys" / "class" / "infiniband" / dev
        d.mkdir(parents=True)
        (d / "node_desc").write_text(text + "\n")
    (tmp / "sys" / "class" / "infiniband" / "mlx5_9").mkdir()  # no node_desc: skipped
    return HostRoot(tmp)


def test_writes_hostname_and_device_once(tmp_path: Path) -> None:
    root = _root(
        tmp_path,
        {"mlx5_0": "MT4129 ConnectX7   Mellanox Technologies", "mlx5_1": "gpu-node-07 mlx5_1"},
    )
    changes = set_node_descriptions(root, "gpu-node-07")
    assert changes == [
        Change("mlx5_0", "MT4129 ConnectX7   Mellanox Technologies", "gpu-node-07 mlx5_0")
    ]
    node_desc = tmp_path / "sys/class/infiniband/mlx5_0/node_desc"
    assert node_desc.read_text() == "gpu-node-07 mlx5_0"
    assert set_node_descriptions(root, "gpu-node-07") == []  # idempotent


def test_template_and_64_byte_limit(tmp_path: Path) -> None:
    root = _root(tmp_path, {"mlx5_0": ""})
    set_node_descriptions(root, "n1", "{hostname}/{device} rack7")
    assert (tmp_path / "sys/class/infiniband/mlx5_0/node_desc").read_text() == "n1/mlx5_0 rack7"
    assert len(desired("h" * 80, "mlx5_0").encode()) == 64
    with pytest.raises(ValueError, match="no hostname"):
        set_node_descriptions(root, "")
