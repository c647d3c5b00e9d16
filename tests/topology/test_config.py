"""Fabric and label configuration: strict TOML validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodeagent.labels import config
from nodeagent.tomlconfig import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "labels.toml"
    path.write_text(text)
    return config.load(path)


def test_full_file(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """
[labels]
domain = "example.com"
families = ["own", "platform"]
pool = "train-a"
expiry_seconds = 900
taints = ["{domain}/validating=true:NoSchedule", "gpu=true:NoExecute"]

[fabric]
node_name = "n1"
expected_rails = 8
expected_rate_gbps = 400

[fabric.rails]
netdevs = ["ibp*"]
devices = ["mlx5_[0-7]"]

[fabric.static]
fabric = "east"
block = "b1"
rack = "r12"

[fabric.lldp]
enabled = "on"
socket = "/run/lldpd.socket"

[fabric.oci]
enabled = "off"
timeout_seconds = 1
""",
    )
    assert cfg.labels.domain == "example.com" and cfg.labels.families == ("own", "platform")
    assert cfg.labels.resolved_taints() == [
        "example.com/validating=true:NoSchedule",
        "gpu=true:NoExecute",
    ]
    f = cfg.fabric
    assert (f.node_name, f.expected_rails, f.expected_rate_gbps) == ("n1", 8, 400.0)
    assert f.rails.netdevs == ("ibp*",) and f.rails.configured
    assert (f.static.fabric, f.static.block, f.static.rack) == ("east", "b1", "r12")
    assert (f.lldp.enabled, f.lldp.socket, f.oci.enabled, f.oci.timeout_seconds) == (
        "on",
        "/run/lldpd.socket",
        "off",
        1.0,
    )


def test_defaults_without_a_file() -> None:
    cfg = config.Config()
    assert cfg.labels.families == ("own", "nfd", "gfd", "oci")
    assert cfg.labels.resolved_taints() == ["nodeagent.io/validating=true:NoSchedule"]
    assert not cfg.fabric.rails.configured and cfg.fabric.oci.enabled == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[labels]\ndomian = 'x.io'\n", "unknown key 'labels.domian'"),
        ("[fabric]\nexpected_rails = 'eight'\n", "'fabric.expected_rails' must be int"),
        ("[fabric]\nexpected_rails = -1\n", "must not be negative"),
        ("[fabric.lldp]\nenabled = 'yes'\n", "'fabric.lldp.enabled' must be one of auto, on, off"),
        ("[fabric.rails]\nnetdevs = 'ibp*'\n", "'fabric.rails.netdevs' must be a list of str"),
        ("[fabric.static]\nrack = 'rack 12'\n", "'fabric.static.rack' must be a label value"),
        ("[labels]\ndomain = 'Example.COM'\n", "'labels.domain'"),
        ("[labels]\nfamilies = ['gfd', 'cloud']\n", "unknown cloud"),
        ("[labels]\nexpiry_seconds = 10\n", "at least 60"),
        ("[labels]\ntaints = ['no-effect']\n", "not key[=value]:Effect"),
        ("[labels]\ntaints = ['a=b:Sometimes']\n", "effect must be one of"),
        ("[label]\n", "unknown table 'label'"),
        ("[fabric\n", "not valid TOML"),
        ("fabric = 3\n", "'fabric' must be a table"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, text)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "absent.toml")
