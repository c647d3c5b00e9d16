"""Label families: owners' formulas, switching families off, the GPU Operator deny rule,
and validity of every label whatever the inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent import label_syntax
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.host import HostRoot
from nodeagent.labels import derive as derive_mod
from nodeagent.labels import gfd, nfd, ownership
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.derive import derive
from nodeagent.labels.features import NodeFeatures, read_features
from nodeagent.labels.inputs import Assignment, LabelInputs
from tests.labels.conftest import LabelsOf
from tests.rootcopy import rewrite

NFD = "feature.node.kubernetes.io"


def test_nfd_pci_whitelists_and_rdma_rules() -> None:
    features = NodeFeatures(
        pci=frozenset(
            {
                ("030200", "10de"),
                ("038000", "1002"),
                ("0b4000", "1014"),
                ("120000", "1da3"),
                ("020700", "15b3"),
                ("010802", "144d"),
                ("060400", "8086"),
            }
        ),
        modules=frozenset({"ib_uverbs", "rdma_ucm", "mlx5_ib"}),
    )
    assert nfd.labels(features) == {
        f"{NFD}/pci-0302_10de.present": "true",  # display 03xx
        f"{NFD}/pci-0380_1002.present": "true",
        f"{NFD}/pci-0b40_1014.present": "true",  # co-processor
        f"{NFD}/pci-1200_1da3.present": "true",  # processing accelerator (Gaudi)
        f"{NFD}/pci-10de.present": "true",  # GPU Operator: 0302
        f"{NFD}/pci-15b3.present": "true",  # GPU Operator: 02 (0207 InfiniBand)
        f"{NFD}/rdma.capable": "true",
        f"{NFD}/rdma.available": "true",  # ib_uverbs and rdma_ucm both loaded
    }
    only_one = NodeFeatures(pci=frozenset(), modules=frozenset({"ib_uverbs"}))
    assert nfd.labels(only_one) == {}


def test_rdma_available_read_from_proc_modules(root_copy: Callable[..., Path]) -> None:
    root = root_copy("cpu-node")
    modules = (root / "proc/modules").read_text()
    assert "rdma_ucm" not in modules
    rewrite(root, "proc/modules", modules + "rdma_ucm 32768 0 - Live 0x0000000000000000\n")
    assert nfd.labels(read_features(HostRoot(root)))[f"{NFD}/rdma.available"] == "true"


@pytest.mark.parametrize(
    ("cc", "family"),
    [
        ((1, 3), "tesla"),
        ((2, 1), "fermi"),
        ((3, 7), "kepler"),
        ((5, 2), "maxwell"),
        ((6, 0), "pascal"),
        ((7, 0), "volta"),
        ((7, 2), "volta"),
        ((7, 5), "turing"),
        ((8, 0), "ampere"),
        ((8, 6), "ampere"),
        ((8, 9), "ada-lovelace"),
        ((9, 0), "hopper"),
        ((10, 0), "blackwell"),
        ((12, 0), "blackwell"),
        ((13, 0), "rubin"),
        ((4, 0), "undefined"),
        ((11, 0), "undefined"),
    ],
)
def test_gfd_family_table(cc: tuple[int, int], family: str) -> None:
    assert gfd.family(*cc) == family


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
        ("NVIDIA H200", "NVIDIA-H200"),
        ("Tesla (R)  V100:PCIE/16GB", "Tesla-R-V100PCIE16GB"),
    ],
)
def test_gfd_product_sanitise(name: str, product: str) -> None:
    assert gfd.sanitise(name) == product


def _nvidia_inventory(*classes: str, driver: str = "", cuda: str = "") -> pb.HardwareInventory:
    inv = pb.HardwareInventory()
    for i, cls in enumerate(classes):
        inv.gpus.add(index=i, vendor="nvidia", vendor_id="10de", pci_class=cls, model="NVIDIA L40S")
    inv.software.nvidia_driver_version, inv.software.cuda_driver_version = driver, cuda
    return inv


def test_gfd_mode_versions_and_machine() -> None:
    labels = gfd.labels(_nvidia_inventory("030000", "030000", driver="535.54", cuda="12.02"))
    assert labels["nvidia.com/gpu.mode"] == "graphics"
    assert labels["nvidia.com/cuda.driver-version.revision"] == ""  # X.Y: empty revision
    assert labels["nvidia.com/cuda.runtime-version.full"] == "12.2"
    assert labels["nvidia.com/gpu.machine"] == "unknown"  # no DMI product name
    assert "nvidia.com/gpu.memory" not in labels and "nvidia.com/gpu.family" not in labels
    mixed = gfd.labels(_nvidia_inventory("030000", "030200", driver="garbage"))
    assert mixed["nvidia.com/gpu.mode"] == "unknown"
    assert not any(k.startswith("nvidia.com/cuda.") for k in mixed)
    assert gfd.labels(pb.HardwareInventory()) == {}


def test_gpu_operator_keys_are_never_written(
    labels_of: LabelsOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    owned = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.deploy.driver": "false",
        "nvidia.com/gpu.deploy.operands": "false",
        "nvidia.com/gpu-driver-upgrade-state": "upgrade-done",
        "nvidia.com/mig.config": "all-1g.10gb",
        "nvidia.com/gpu.workload.config": "vm-passthrough",
        "nvidia.com/device-plugin.config": "x",
    }
    kept, dropped = ownership.drop_owned({**owned, "nvidia.com/gpu.count": "8"})
    assert kept == {"nvidia.com/gpu.count": "8"} and dropped == sorted(owned)
    # even if a family produced them, derive() drops them
    real = gfd.labels
    monkeypatch.setattr(derive_mod.gfd, "labels", lambda inv: {**real(inv), **owned})
    labels = labels_of("dgx-h100")
    assert not set(owned) & set(labels) and labels["nvidia.com/gpu.count"] == "8"


def test_families_switch_off_and_on(labels_of: LabelsOf) -> None:
    only_nfd = labels_of("oci-bm-gpu-h100-8", LabelConfig(families=("nfd",)))
    assert only_nfd and all(k.startswith(f"{NFD}/") for k in only_nfd)
    no_compat = labels_of("oci-bm-gpu-h100-8", LabelConfig(families=("own",)))
    assert not any(k.startswith(("nvidia.com/", "oci.", "feature.")) for k in no_compat)
    assert no_compat["topology.nodeagent.io/tier-0"] == "qcnp7nxaaiz"
    plain = labels_of("dgx-h100", assignment=Assignment(pool="train-a"))
    assert not any(k.startswith("truefoundry.com/") for k in plain)  # opt-in only
    platform = labels_of(
        "dgx-h100", LabelConfig(families=("platform",)), Assignment(pool="train-a")
    )
    assert platform == {
        "truefoundry.com/nodepool": "train-a",
        "truefoundry.com/gpu_type": "NVIDIA-H100-80GB-HBM3",
    }
    assert labels_of("cpu-node", LabelConfig(families=("platform",))) == {}


def test_domain_and_assignment(labels_of: LabelsOf) -> None:
    labels = labels_of(
        "cpu-node",
        LabelConfig(domain="fleet.example.com"),
        Assignment(pool="cpu pool #1", profile="cpu-v2", tuning="applied"),
    )
    assert labels["gpu.fleet.example.com/count"] == "0"
    assert labels["topology.fleet.example.com/tier-0"] == "unknown"
    assert labels["fleet.example.com/pool"] == "cpu-pool-1"  # sanitised
    assert labels["fleet.example.com/profile"] == "cpu-v2"
    assert labels["fleet.example.com/tuning"] == "applied"
    assert not any("nodeagent.io" in k for k in labels)


TEXT = st.text(max_size=100)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=TEXT,
    vendor=TEXT,
    cc=TEXT,
    driver=TEXT,
    cuda=TEXT,
    product=TEXT,
    pool=TEXT,
    profile=TEXT,
    tuning=TEXT,
    nic=TEXT,
    fabric=TEXT,
    ocid=TEXT,
    classes=st.lists(
        st.tuples(
            st.text("0123456789abcdef", min_size=6, max_size=6),
            st.text("0123456789abcdef", min_size=4, max_size=4),
        ),
        max_size=4,
    ),
)
def test_no_input_yields_an_invalid_label(
    model: str,
    vendor: str,
    cc: str,
    driver: str,
    cuda: str,
    product: str,
    pool: str,
    profile: str,
    tuning: str,
    nic: str,
    fabric: str,
    ocid: str,
    classes: list[tuple[str, str]],
) -> None:
    inv = pb.HardwareInventory()
    inv.gpus.add(
        vendor=vendor,
        vendor_id="10de",
        model=model,
        compute_capability=cc,
        architecture=model[:10],
        pci_class="030200",
        memory_bytes=len(model) << 30,
    )
    inv.software.nvidia_driver_version, inv.software.cuda_driver_version = driver, cuda
    inv.system.product = product
    inv.rdma_devices.add(name="mlx5_0", model=nic)
    inp = LabelInputs(
        inv,
        assignment=Assignment(pool, profile, tuning),
        features=NodeFeatures(frozenset(classes), frozenset()),
    )
    inp.observation.rails.add(name="r", device="mlx5_0", link_layer=nic, active=True)
    inp.observation.cloud.provider = "oci"
    inp.observation.cloud.available = True
    inp.observation.cloud.local_block = ocid
    inp.tiers.tier_0, inp.tiers.fabric = fabric, fabric
    labels = derive(inp, LabelConfig(families=("own", "nfd", "gfd", "oci", "platform")))
    assert label_syntax.problems(labels) == []
