"""OCI probe: RDMA placement from the instance metadata service (IMDS v2).

`GET <base>/opc/v2/host/rdmaTopologyData` with `Authorization: Bearer Oracle` gives
the OCIDs of the HPC island, network block and local block the host is cabled into,
and the host's own id (what oracle-quickstart/oci-hpc-oke's labeler reads). Off
outside OCI: `auto` asks only when the DMI chassis asset tag says `OracleCloud.com`,
so other machines never wait on a link-local address. Short timeouts, no proxies
(169.254.169.254 is link-local). On any other root than `/` the recording at
`.nodeagent/probes/oci.json` is replayed:

    {"probe": "oci", "version": 1, "available": bool, "error": str,
     "rdmaTopologyData": {"customerHPCIslandId": ..., ...}}
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from nodeagent.hardware.probes import recording
from nodeagent.host import HostRoot

NAME = "oci"
DEFAULT_BASE_URL = "http://169.254.169.254"
DEFAULT_TIMEOUT = 2.0
PATH = "/opc/v2/host/rdmaTopologyData"
ASSET_TAG = "sys/class/dmi/id/chassis_asset_tag"
OCI_ASSET_TAG = "OracleCloud.com"
MAX_BYTES = 64 * 1024
FIELDS = {  # rdmaTopologyData key -> CloudPlacement field
    "customerHPCIslandId": "hpc_island",
    "customerNetworkBlock": "network_block",
    "customerLocalBlock": "local_block",
    "customerHostId": "host",
}


def on_oci(root: HostRoot) -> bool:
    """OCI marks its instances in DMI; reading it costs nothing and needs no network."""
    return root.attr(ASSET_TAG) == OCI_ASSET_TAG


def probe(
    root: HostRoot,
    *,
    enabled: str = "auto",
    base_url: str = DEFAULT_BASE_URL,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any] | None:
    """Metadata for the root, or None when the probe is off (or not recorded).

    `enabled`: "auto" (ask on OCI only), "on" (always ask) or "off".
    """
    if enabled == "off":
        return None
    if not root.is_live:
        return recording.load(root, NAME)
    if enabled == "auto" and not on_oci(root):
        return None
    return read_live(base_url=base_url, timeout=timeout)


def read_live(
    *, base_url: str = DEFAULT_BASE_URL, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
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


def _unavailable(error: str) -> dict[str, Any]:
    return {"probe": NAME, "version": 1, "available": False, "error": error, "rdmaTopologyData": {}}


def placement(data: dict[str, Any] | None) -> dict[str, Any]:
    """{"available", "error", "hpc_island", "network_block", "local_block", "host"}.

    A field that is missing or not a string is left empty: the labels then say
    `no-imds-data` for it rather than guessing.
    """
    if data is None:
        return {"available": False, "error": "not probed"}
    topology = data.get("rdmaTopologyData")
    topology = topology if isinstance(topology, dict) else {}
    out: dict[str, Any] = {
        "available": bool(data.get("available", True)) and bool(topology),
        "error": str(data.get("error") or ""),
    }
    if not out["available"] and not out["error"]:
        out["error"] = "no rdmaTopologyData"
    for key, field in FIELDS.items():
        value = topology.get(key)
        out[field] = value.strip() if isinstance(value, str) else ""
    return out
