"""`nodeagent labels` and `nodeagent fabric` on modelled roots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodeagent.cli.common import EXIT_ERROR, EXIT_OK
from nodeagent.cli.main import main
from nodeagent.labels import sinks
from tests.labels.conftest import LabelsOf
from tests.rootcopy import record

OCI_KEYS = ("oci.oraclecloud.com/rdma.hpc_island_id", "oci.oraclecloud.com/rdma.local_block_id")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_is_the_flat_label_map(
    capsys: pytest.CaptureFixture[str], machine_root: Callable[..., Path], labels_of: LabelsOf
) -> None:
    code, out, _ = run(capsys, "labels", "--root", str(machine_root("dgx-h100")))
    assert code == EXIT_OK
    assert json.loads(out) == labels_of("dgx-h100")


def test_nfd_writes_under_the_root_and_remembers(
    capsys: pytest.CaptureFixture[str], root_copy: Callable[..., Path]
) -> None:
    root = root_copy("oci-bm-gpu-h100-8")
    code, out, _ = run(capsys, "labels", "--root", str(root), "-o", "nfd", "--expiry", "120")
    target = sinks.feature_file_path(str(root))
    assert code == EXIT_OK and out.startswith(f"wrote {target}: ")
    first = sinks.parse_feature_file(target.read_text())
    assert first[OCI_KEYS[0]] == "aeycajoqlss" and "# +expiry-time=" in target.read_text()
    # The metadata service goes away: the file's real values stay, and so do the tiers.
    record(
        root,
        "oci",
        {
            "probe": "oci",
            "version": 1,
            "available": False,
            "error": "metadata service unreachable: timed out",
        },
    )
    code, _, err = run(capsys, "labels", "--root", str(root), "-o", "nfd")
    again = sinks.parse_feature_file(target.read_text())
    assert {k: again[k] for k in OCI_KEYS} == {k: first[k] for k in OCI_KEYS}
    assert again["topology.nodeagent.io/tier-0"] == "qcnp7nxaaiz"
    assert again["topology.nodeagent.io/tier-2"] == "aeycajoqlss"
    assert "warning: oci: metadata service unreachable" in err
    # Without memory (a fresh node), the placeholders.
    code, out, _ = run(capsys, "labels", "--root", str(root), "-o", "nfd", "--print")
    printed = sinks.parse_feature_file(out)
    assert printed[OCI_KEYS[1]] == "no-imds-data"
    assert printed["topology.nodeagent.io/tier-0"] == "unknown"


def test_print_and_features_dir(
    capsys: pytest.CaptureFixture[str], machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    root = str(machine_root("cpu-node"))
    code, out, _ = run(capsys, "labels", "--root", root, "-o", "nfd", "--print")
    assert code == EXIT_OK and sinks.parse_feature_file(out)["gpu.nodeagent.io/count"] == "0"
    assert not (Path(root) / sinks.FEATURES_DIR).exists()
    code, _, _ = run(capsys, "labels", "--root", root, "-o", "nfd", "--features-dir", str(tmp_path))
    assert (tmp_path / "nodeagent").is_file()


def test_kubespray_vars_with_assignment_and_taints(
    capsys: pytest.CaptureFixture[str], machine_root: Callable[..., Path]
) -> None:
    root = str(machine_root("rtx-pro-6000"))
    _, out, _ = run(
        capsys,
        "labels",
        "--root",
        root,
        "-o",
        "kubespray",
        "--pool",
        "inference",
        "--profile",
        "rtx-v1",
        "--families",
        "own,platform",
    )
    doc = yaml.safe_load(out)
    assert doc["node_taints"] == ["nodeagent.io/validating=true:NoSchedule"]
    assert doc["node_labels"]["nodeagent.io/pool"] == "inference"
    assert doc["node_labels"]["truefoundry.com/nodepool"] == "inference"
    assert doc["node_labels"]["nodeagent.io/profile"] == "rtx-v1"
    _, out, _ = run(
        capsys,
        "labels",
        "--root",
        root,
        "-o",
        "kubespray",
        "--domain",
        "x.io",
        "--taint",
        "",
        "--taint",
        "dedicated=gpu:NoExecute",
    )
    doc = yaml.safe_load(out)
    assert doc["node_taints"] == ["dedicated=gpu:NoExecute"]
    assert "gpu.x.io/count" in doc["node_labels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domain", "Not_A_Domain"], "'labels.domain'"),
        (["--families", "own,cloudy"], "unknown cloudy"),
        (["--taint", "bad"], "not key[=value]:Effect"),
        (["--expiry", "5"], "at least 60"),
        (["--previous", "/nonexistent/labels.json"], "--previous /nonexistent/labels.json"),
        (["--config", "/nonexistent/labels.toml"], "no such file"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    capsys: pytest.CaptureFixture[str],
    machine_root: Callable[..., Path],
    args: list[str],
    message: str,
) -> None:
    code, out, err = run(capsys, "labels", "--root", str(machine_root("cpu-node")), *args)
    assert code == EXIT_ERROR and out == ""
    assert err.startswith("nodeagent: error: ") and message in err and err.count("\n") == 1


def test_fabric_table_json_and_recording(
    capsys: pytest.CaptureFixture[str], machine_root: Callable[..., Path], tmp_path: Path
) -> None:
    root = str(machine_root("oci-bm-gpu-h100-8"))
    code, out, _ = run(capsys, "fabric", "--root", root)
    assert code == EXIT_OK
    assert "tier-0=qcnp7nxaaiz (tier-0 from cloud)" in out
    assert "Rails     16 of 16 active, slowest 200 Gb/s" in out
    code, out, err = run(capsys, "fabric", "--root", root, "-o", "json", "--record", str(tmp_path))
    doc = json.loads(out)
    assert doc["tiers"]["tier_1"] == "qc4pbhxoqqf" and len(doc["observation"]["rails"]) == 16
    saved = json.loads((tmp_path / ".nodeagent/probes/oci.json").read_text())
    assert saved["rdmaTopologyData"]["customerLocalBlock"].endswith("qcnp7nxaaiz")
    assert "recorded" in err
