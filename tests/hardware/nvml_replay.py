"""A stand-in for the pynvml module that replays an NVML recording.

NVML cannot run on a machine without NVIDIA GPUs, so the live probe code is
exercised against this replay of recorded real data (`nvidia-smi -q` output of
real servers, converted to the recording format). It raises the same exception
classes pynvml does: NotSupported for a field the recording lacks, GpuIsLost
for every call on a lost device, LibraryNotFound at init when asked to.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    value = 999


class NVMLError_NotSupported(NVMLError):
    value = 3


class NVMLError_LibraryNotFound(NVMLError):
    value = 12


class NVMLError_GpuIsLost(NVMLError):
    value = 15


NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_TEMPERATURE_GPU = 0
_ARCH = {"ampere": 7, "ada-lovelace": 8, "hopper": 9, "blackwell": 10}
_ECC_KEYS = {
    (0, 0): "corrected_volatile",
    (1, 0): "uncorrected_volatile",
    (0, 1): "corrected_aggregate",
    (1, 1): "uncorrected_aggregate",
}


class ReplayNvml:
    """Module-like object: pass it as `nvml=` to `nvml.read_live`."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVML_MEMORY_ERROR_TYPE_CORRECTED = NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = NVML_AGGREGATE_ECC
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(
        self, recording: dict[str, Any], *, init_error: bool = False, lost: set[int] | None = None
    ) -> None:
        self.rec = recording
        self.init_error = init_error
        self.lost = lost or set()
        self.calls = 0
        self.initialised = False

    # --- system ---
    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self.rec["driver_version"])

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        major, minor = str(self.rec["cuda_driver_version"]).split(".")
        return int(major) * 1000 + int(minor) * 10

    def nvmlSystemGetNVMLVersion(self) -> str:
        if not self.rec.get("nvml_version"):
            raise NVMLError_NotSupported()
        return str(self.rec["nvml_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    # --- per device ---
    def _dev(self, h: int, key: str | None = None) -> Any:
        self.calls += 1
        if h in self.lost:
            raise NVMLError_GpuIsLost("GPU is lost")
        dev = self.rec["devices"][h]
        if key is None:
            return dev
        if key not in dev:
            raise NVMLError_NotSupported("Not Supported")
        return dev[key]

    def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
        bus = str(self.rec["devices"][h]["pci_bus_id"])  # answered even for a lost GPU
        domain, _, rest = bus.partition(":")
        return SimpleNamespace(busId=f"{int(domain, 16):08X}:{rest.upper()}")

    def nvmlDeviceGetName(self, h: int) -> str:
        return str(self._dev(h, "name"))

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return str(self._dev(h, "uuid"))

    def nvmlDeviceGetSerial(self, h: int) -> str:
        return str(self._dev(h, "serial"))

    def nvmlDeviceGetBoardPartNumber(self, h: int) -> str:
        return str(self._dev(h, "board_part_number"))

    def nvmlDeviceGetVbiosVersion(self, h: int) -> bytes:
        return str(self._dev(h, "vbios_version")).encode()  # older pynvml returned bytes

    def nvmlDeviceGetModuleId(self, h: int) -> int:
        return int(self._dev(h, "module_id"))

    def nvmlDeviceGetArchitecture(self, h: int) -> int:
        return _ARCH[self._dev(h, "architecture")]

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        major, minor = str(self._dev(h, "compute_capability")).split(".")
        return int(major), int(minor)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=self._dev(h, "memory_total_bytes"), free=0, used=0)

    def nvmlDeviceGetPersistenceMode(self, h: int) -> int:
        return int(self._dev(h, "persistence_mode"))

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        mode = int(self._dev(h, "mig_mode"))
        return [mode, mode]

    def nvmlDeviceGetEccMode(self, h: int) -> list[int]:
        mode = int(self._dev(h, "ecc_mode"))
        return [mode, mode]

    def nvmlDeviceGetTotalEccErrors(self, h: int, err: int, counter: int) -> int:
        counts = self._dev(h, "ecc_errors")
        key = _ECC_KEYS[(err, counter)]
        if key not in counts:
            raise NVMLError_NotSupported()
        return int(counts[key])

    def nvmlDeviceGetRemappedRows(self, h: int) -> tuple[int, int, int, int]:
        r = self._dev(h, "remapped_rows")
        return r["correctable"], r["uncorrectable"], int(r["pending"]), int(r["failure"])

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        states = self._dev(h, "nvlink_states")
        if link >= len(states):
            raise NVMLError_NotSupported()
        return int(states[link])

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return int(self._dev(h, "temperature_celsius"))

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return round(float(self._dev(h, "power_draw_watts")) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return round(float(self._dev(h, "power_limit_watts")) * 1000)

    def _pcie(self, h: int, key: str) -> int:
        pcie = self._dev(h, "pcie")
        if key not in pcie:
            raise NVMLError_NotSupported()
        return int(pcie[key])

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return self._pcie(h, "current_generation")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return self._pcie(h, "max_generation")

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return self._pcie(h, "current_width")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return self._pcie(h, "max_width")

    # --- NVSwitch fabric (pynvml fills a ctypes struct passed by reference) ---
    class c_nvmlGpuFabricInfo_t:
        state = 0

    @staticmethod
    def byref(obj: Any) -> Any:
        return obj

    def nvmlDeviceGetGpuFabricInfo(self, h: int, info: Any) -> int:
        states = {"not-supported": 0, "not-started": 1, "in-progress": 2, "completed": 3}
        info.state = states[self._dev(h, "fabric_state")]
        return 0
