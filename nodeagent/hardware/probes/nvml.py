"""NVML probe (pynvml from nvidia-ml-py): what only the driver knows.

On the live root it reads NVML; on any other root it replays the recording at
`.nodeagent/probes/nvml.json`. Both give the same NvmlRecording (the recording
format), so replay exercises exactly what live discovery produces. A field NVML
does not support on a GPU is left out. No library or no driver is
`available: false`, which discovery treats as "sysfs only", not as an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Required, TypedDict, cast

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware import parse
from nodeagent.hardware.probes.recording import Probe, RecordingHeader
from nodeagent.host import HostRoot

NAME = "nvml"
DRIVER_VERSION = "proc/driver/nvidia/version"
MAX_NVLINKS = 18  # H100/H200/B200; NVML raises past the last link
_ARCHITECTURES = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada-lovelace",
    9: "hopper",
    10: "blackwell",
}
_FABRIC_STATES = {0: "not-supported", 1: "not-started", 2: "in-progress", 3: "completed"}


class RemappedRows(TypedDict):
    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


class PcieLink(TypedDict, total=False):
    current_generation: int
    max_generation: int
    current_width: int
    max_width: int


class NvmlDevice(TypedDict, total=False):
    """One GPU; a lost one may have no `pci_bus_id` (then its index places it)."""

    index: Required[int]
    pci_bus_id: str  # sysfs form, 0000:1b:00.0
    lost: bool
    name: str
    uuid: str
    serial: str
    board_part_number: str
    vbios_version: str
    module_id: int
    architecture: str
    compute_capability: str  # "9.0"
    memory_total_bytes: int
    persistence_mode: bool
    mig_mode: bool
    ecc_mode: bool
    ecc_errors: dict[str, int]  # by pb.EccErrors field name
    remapped_rows: RemappedRows
    nvlink_states: list[bool]
    temperature_celsius: float
    power_draw_watts: float
    power_limit_watts: float
    pcie: PcieLink
    fabric_state: str


class NvmlRecording(RecordingHeader, total=False):
    driver_version: str
    cuda_driver_version: str  # "12.7"
    nvml_version: str
    devices: list[NvmlDevice]


def record(root: HostRoot, inv: pb.HardwareInventory, options: None) -> NvmlRecording:
    """NVML now, unless the driver is not loaded."""
    if not root.exists(DRIVER_VERSION):
        # Without nvidia.ko NVML cannot answer; skip loading it (and its import).
        return _unavailable("NVIDIA driver not loaded")
    return read_live()


PROBE: Probe[NvmlRecording, None] = Probe(NAME, record, None)


def read_live(nvml: Any = None) -> NvmlRecording:
    """Read NVML now. `nvml` is the pynvml module (a replaying stand-in in tests)."""
    if nvml is None:
        try:
            import pynvml
        except ImportError as exc:  # the package is a dependency; a broken install is possible
            return _unavailable(f"pynvml not importable: {exc}")
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return _unavailable(str(exc))
    try:
        data: NvmlRecording = {"probe": NAME, "version": 1, "available": True, "error": ""}
        data["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _optional(nvml, nvml.nvmlSystemGetCudaDriverVersion_v2)
        data["cuda_driver_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
        data["nvml_version"] = _text(_optional(nvml, nvml.nvmlSystemGetNVMLVersion) or "")
        data["devices"] = [_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
        return data
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _unavailable(error: str) -> NvmlRecording:
    return {"probe": NAME, "version": 1, "available": False, "error": error, "devices": []}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(nvml: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function; a field this GPU or driver lacks gives None.

    GpuIsLost is not swallowed: it concerns the whole device.
    """
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        if isinstance(exc, nvml.NVMLError_GpuIsLost):
            raise
        return None


def _device(nvml: Any, index: int) -> NvmlDevice:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        pci = nvml.nvmlDeviceGetPciInfo(handle)
    except nvml.NVMLError_GpuIsLost:
        return {"index": index, "lost": True}  # no bus id: merged by NVML index (PCI order)
    dev: dict[str, Any] = {"index": index, "pci_bus_id": parse.normalize_bdf(_text(pci.busId))}
    try:
        _fill_device(nvml, handle, dev)
    except nvml.NVMLError_GpuIsLost:
        dev["lost"] = True
    return cast(NvmlDevice, dev)  # filled key by key, each only when NVML answered


def _fill_device(nvml: Any, h: Any, dev: dict[str, Any]) -> None:
    def get(key: str, fn: Callable[..., Any], *args: Any, conv: Callable[..., Any] = _text) -> Any:
        value = _optional(nvml, fn, h, *args)
        if value is not None:
            dev[key] = conv(value)
        return value

    get("name", nvml.nvmlDeviceGetName)
    get("uuid", nvml.nvmlDeviceGetUUID)
    get("serial", nvml.nvmlDeviceGetSerial)
    get("board_part_number", nvml.nvmlDeviceGetBoardPartNumber)
    get("vbios_version", nvml.nvmlDeviceGetVbiosVersion)
    get("module_id", nvml.nvmlDeviceGetModuleId, conv=int)
    arch = _optional(nvml, nvml.nvmlDeviceGetArchitecture, h)
    if arch in _ARCHITECTURES:
        dev["architecture"] = _ARCHITECTURES[arch]
    get(
        "compute_capability",
        nvml.nvmlDeviceGetCudaComputeCapability,
        conv=lambda cc: f"{cc[0]}.{cc[1]}",
    )
    get("memory_total_bytes", nvml.nvmlDeviceGetMemoryInfo, conv=lambda m: int(m.total))
    get("persistence_mode", nvml.nvmlDeviceGetPersistenceMode, conv=bool)
    get("mig_mode", nvml.nvmlDeviceGetMigMode, conv=lambda m: bool(m[0]))
    get("ecc_mode", nvml.nvmlDeviceGetEccMode, conv=lambda m: bool(m[0]))
    if dev.get("ecc_mode") is not None:
        counts = {}
        for key, err, counter in (
            ("corrected_volatile", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC),
            (
                "uncorrected_volatile",
                nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                nvml.NVML_VOLATILE_ECC,
            ),
            ("corrected_aggregate", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_AGGREGATE_ECC),
            (
                "uncorrected_aggregate",
                nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                nvml.NVML_AGGREGATE_ECC,
            ),
        ):
            value = _optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, h, err, counter)
            if value is not None:
                counts[key] = int(value)
        dev["ecc_errors"] = counts
    rows = _optional(nvml, nvml.nvmlDeviceGetRemappedRows, h)
    if rows is not None:
        corr, unc, pending, failure = rows
        dev["remapped_rows"] = {
            "correctable": int(corr),
            "uncorrectable": int(unc),
            "pending": bool(pending),
            "failure": bool(failure),
        }
    links = []
    for link in range(MAX_NVLINKS):
        state = _optional(nvml, nvml.nvmlDeviceGetNvLinkState, h, link)
        if state is None:
            break
        links.append(bool(state))
    if links:
        dev["nvlink_states"] = links
    get("temperature_celsius", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU, conv=float)
    get("power_draw_watts", nvml.nvmlDeviceGetPowerUsage, conv=lambda mw: mw / 1000.0)
    get("power_limit_watts", nvml.nvmlDeviceGetEnforcedPowerLimit, conv=lambda mw: mw / 1000.0)
    pcie = {}
    for key, fn in (
        ("current_generation", nvml.nvmlDeviceGetCurrPcieLinkGeneration),
        ("max_generation", nvml.nvmlDeviceGetMaxPcieLinkGeneration),
        ("current_width", nvml.nvmlDeviceGetCurrPcieLinkWidth),
        ("max_width", nvml.nvmlDeviceGetMaxPcieLinkWidth),
    ):
        value = _optional(nvml, fn, h)
        if value is not None:
            pcie[key] = int(value)
    if pcie:
        dev["pcie"] = pcie
    fabric_fn = getattr(nvml, "nvmlDeviceGetGpuFabricInfo", None)
    info_type = getattr(nvml, "c_nvmlGpuFabricInfo_t", None)
    if fabric_fn is not None and info_type is not None:
        info = info_type()
        if _optional(nvml, fabric_fn, h, nvml.byref(info)) is not None:
            dev["fabric_state"] = _FABRIC_STATES.get(int(info.state), "")
