"""OCI keys (oci.oraclecloud.com/rdma.*), with oracle-quickstart/oci-hpc-oke's rules.

Each value is the last 11 characters of the OCID in rdmaTopologyData, or
`no-imds-data` when the metadata has none; a real value already on the node is never
replaced by that placeholder (the labeler keeps it while the metadata is unreachable),
which is why this family takes the previous labels.
"""

from __future__ import annotations

from collections.abc import Mapping

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.topology.tiers import ocid_suffix

PREFIX = "oci.oraclecloud.com"
PLACEHOLDER = "no-imds-data"
KEYS = {  # label -> CloudPlacement field
    f"{PREFIX}/rdma.hpc_island_id": "hpc_island",
    f"{PREFIX}/rdma.network_block_id": "network_block",
    f"{PREFIX}/rdma.local_block_id": "local_block",
    f"{PREFIX}/rdma.host_id": "host",
}


def labels(cloud: fpb.CloudPlacement, previous: Mapping[str, str]) -> dict[str, str]:
    if cloud.provider != "oci":
        return {}
    out = {}
    for key, field in KEYS.items():
        value = ocid_suffix(getattr(cloud, field)) if cloud.available else ""
        if not value:
            kept = previous.get(key, "")
            value = kept if kept and kept != PLACEHOLDER else PLACEHOLDER
        out[key] = value
    return out
