"""OCI probe: RDMA placement from the instance metadata service (IMDS v2).

`GET <base>/opc/v2/host/rdmaTopologyData` with `Authorization: Bearer Oracle` gives
the OCIDs of the HPC island, network block and local block the host is cabled into,
and the host's own id (what oracle-quickstart/oci-hpc-oke's labeler reads). Off
outside OCI: `auto` asks only when the DMI chassis asset tag says `OracleCloud.com`,
so other machines never wait on a link-local address. Short timeouts, no proxies
(169.254.169.254 is link-local). On any other root than `/` the recording at
`.nodeagent/probes/oci.json` is replayed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TypedDict

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.probes.recording import Probe, RecordingHeader
from nodeagent.host import HostRoot

NAME = "oci"
DEFAULT_BASE_URL = "http://169.254.169.254"
DEFAULT_TIMEOUT = 2.0
PATH = "/opc/v2/host/rdmaTopologyData"
ASSET_TAG = "sys/class/dmi/id/chassis_asset_tag"
OCI_ASSET_TAG = "OracleCloud.com"
MAX_BYTES = 64 * 1024


class OciRecording(RecordingHeader, total=False):
    rdmaTopologyData: dict[str, object]  # the metadata service's answer, as it was


class Placement(TypedDict):
    """The fields of a CloudPlacement."""

    available: bool
    error: str
    hpc_island: str
    network_block: str
    local_block: str
    host: str


@dataclass(frozen=True)
class Options:
    oci_only: bool = True  # ask only when DMI says this is an OCI instance
    base_url: str = DEFAULT_BASE_URL
    timeout: float = DEFAULT_TIMEOUT


def on_oci(root: HostRoot) -> bool:
    """OCI marks its instances in DMI; reading it costs nothing and needs no network."""
    return root.attr(ASSET_TAG) == OCI_ASSET_TAG


def record(root: HostRoot, inv: pb.HardwareInventory, options: Options) -> OciRecording | None:
    """The metadata, or None off OCI (unless asked anyway): nothing to ask there."""
    if options.oci_only and not on_oci(root):
        return None
    return read_live(base_url=options.base_url, timeout=options.timeout)


PROBE: Probe[OciRecording, Options] = Probe(NAME, record, Options())


def read_live(
    *, base_url: str = DEFAULT_BASE_URL, timeout: float = DEFAULT_TIMEOUT
) -> OciRecording:
    """One GET; every failure (refused, timeout, HTTP error, not JSON) is `available: false`."""
    request = urllib.request.Request(
        base_url.rstrip("/") + PATH, headers={"Authorization": "Bearer Oracle"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return _unavailable(f"metadata answered HTTP {exc.code} for {PATH}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return _unavailable(f"metadata service unreachable: {reason}")
    if len(body) > MAX_BYTES:
        return _unavailable(f"metadata answer larger than {MAX_BYTES} bytes")
    try:
        topology = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _unavailable(f"metadata answer is not JSON: {exc}")
    if not isinstance(topology, dict):
        return _unavailable("metadata answer is not a JSON object")
    return {
        "probe": NAME,
        "version": 1,
        "available": True,
        "error": "",
        "rdmaTopologyData": topology,
    }


def _unavailable(error: str) -> OciRecording:
    return {"probe": NAME, "version": 1, "available": False, "error": error, "rdmaTopologyData": {}}


def placement(data: OciRecording) -> Placement:
    """Where the recording places the host.

    A field that is missing or not a string is left empty: the labels then say
    `no-imds-data` for it rather than guessing.
    """
    topology = data.get("rdmaTopologyData")
    topology = topology if isinstance(topology, dict) else {}
    available = bool(data.get("available", True)) and bool(topology)
    error = str(data.get("error") or "")
    if not available and not error:
        error = "no rdmaTopologyData"

    def field(key: str) -> str:
        value = topology.get(key)
        return value.strip() if isinstance(value, str) else ""

    return {
        "available": available,
        "error": error,
        "hpc_island": field("customerHPCIslandId"),
        "network_block": field("customerNetworkBlock"),
        "local_block": field("customerLocalBlock"),
        "host": field("customerHostId"),
    }
