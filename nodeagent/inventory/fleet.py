"""FleetService: the fabric as the whole fleet sees it, and the labels of any node.

Nodes report their fabric observation (compute rails, leaf and spine switches, cloud
placement); an export groups every node's latest report with the same pure function the
benchmarks measure (`topology.fleet.group_fleet`), keeps each node's tiers as its
last-good value for the next grouping (one broken cable does not relabel a node), and
renders the Kueue Topology or Slurm topology.conf. Node labels are derived here with the
agent's own derivation, from the stored inventory, tiers and assignment.

A report speaks only for its sender: the name inside the observation is dropped, and the
grouping names each node after its own record, so no node can place another. Every text
field must be printable and bounded before it is stored. A node whose recorded host name
is not an RFC 1123 name, or is shared with another live node, is left out of the grouping
(by id in the Slurm export's comments) until that is fixed; retired nodes are left out.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from nodeagent import names
from nodeagent.api.auth import validate_text
from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import fleet_pb2, fleet_pb2_grpc
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory.store import NotFound, Store
from nodeagent.labels.config import LabelConfig
from nodeagent.labels.derive import derive
from nodeagent.labels.inputs import Assignment, LabelInputs
from nodeagent.topology.export import kueue_topology, slurm_topology
from nodeagent.topology.fleet import group_fleet

FORMATS = ("kueue", "slurm", "json")
MAX_REPEATED = 256  # rails, spines of a rail, probe errors: far above any real server
MAX_TEXT = 253
MAX_ERROR_TEXT = 1024  # probe error lines, not names
_ERROR_FIELDS = frozenset({"errors", "error"})


def check_observation(obs: Message, path: str = "observation") -> None:
    """Refuse (ValueError: INVALID_ARGUMENT, naming the field) any string in a report that
    is not printable or is too long, and any list too long, before it is stored.

    Switch names (LLDP system names, InfiniBand node descriptions) may hold spaces, ';' or
    '/': they are kept as the fabric states them, since they reach only the JSON export
    and labels, which escape or sanitise them; topology.conf carries node names and tier
    values only, which are checked or rewritten there.
    """
    for field, value in obs.ListFields():
        where = f"{path}.{field.name}"
        limit = MAX_ERROR_TEXT if field.name in _ERROR_FIELDS else MAX_TEXT
        values = list(value) if field.is_repeated else [value]
        if len(values) > MAX_REPEATED:
            raise ValueError(f"{where}: at most {MAX_REPEATED} entries")
        for i, item in enumerate(values):
            at = f"{where}[{i}]" if field.is_repeated else where
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                check_observation(item, at)
            elif field.type == FieldDescriptor.TYPE_STRING:
                validate_text(item, at, limit)


def report(store: Store, node_id: str, obs: fpb.FabricObservation) -> fpb.FabricTiers:
    """Store the caller's observation as its own: the name the node put in it is dropped."""
    own = fpb.FabricObservation()
    own.CopyFrom(obs)
    own.ClearField("node")
    check_observation(own)
    with store.tx() as cur:
        cur.execute(store.q("SELECT hostname FROM nodes WHERE id = ?"), (node_id,))
        if cur.fetchone() is None:
            raise NotFound(node_id)
        cur.execute(
            store.q(
                "INSERT INTO fabric (node_id, observation, updated_at) "
                "VALUES (?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "observation = excluded.observation, "
                "updated_at = excluded.updated_at"
            ),
            (node_id, json_format.MessageToJson(own, indent=None), time.time()),
        )
        cur.execute(store.q("SELECT tiers FROM fabric WHERE node_id = ?"), (node_id,))
        tiers = cur.fetchone()[0]
    return json_format.Parse(tiers, fpb.FabricTiers()) if tiers else fpb.FabricTiers()


def _named(rows: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(host name -> row, node id -> why left out): a node is named by its own record, and
    only by a host name that is valid and no other live node claims (which of two is the
    real one cannot be told, so neither takes the other's place)."""
    by_name: dict[str, list[Any]] = {}
    left_out = {}
    for row in rows:
        if names.is_hostname(row[1]):
            by_name.setdefault(row[1], []).append(row)
        else:
            left_out[row[0]] = "host name is not a lower-case RFC 1123 name"
    for same in by_name.values():
        if len(same) > 1:
            left_out |= dict.fromkeys((r[0] for r in same), "host name shared with another node")
    return {n: same[0] for n, same in by_name.items() if len(same) == 1}, left_out


def group(store: Store, cluster: str) -> tuple[fpb.FabricTopology, dict[str, str]]:
    """Group the fleet (or one cluster) and store each node's tiers as its last-good value.

    Returns the topology (keyed by node name) and node id -> why it was left out.
    """
    with store.tx() as cur:
        where = " AND n.cluster = ?" if cluster else ""
        cur.execute(
            store.q(
                "SELECT n.id, n.hostname, f.observation, f.tiers FROM fabric f "
                f"JOIN nodes n ON n.id = f.node_id WHERE n.state <> ?{where}"
            ),
            (ipb.NodeState.RETIRED, cluster) if cluster else (ipb.NodeState.RETIRED,),
        )
        rows = cur.fetchall()
    named, left_out = _named(rows)
    observations, previous, ids = [], {}, {}
    for name, (node_id, _, obs_json, tiers_json) in named.items():
        obs = json_format.Parse(obs_json, fpb.FabricObservation())
        obs.node = name
        observations.append(obs)
        ids[name] = node_id
        if tiers_json:
            previous[name] = json_format.Parse(tiers_json, fpb.FabricTiers())
    topology = group_fleet(observations, previous)
    now = time.time()
    with store.tx() as cur:
        for name, tiers in topology.nodes.items():
            text = json_format.MessageToJson(tiers, indent=None)
            if text == (named[name][3] or ""):
                continue  # unchanged: the replicas' poll for changed tiers skips it
            cur.execute(
                store.q("UPDATE fabric SET tiers = ?, tiers_at = ? WHERE node_id = ?"),
                (text, now, ids[name]),
            )
    return topology, left_out


def node_labels(store: Store, node_id: str, domain: str) -> dict[str, str]:
    with store.tx() as cur:
        cur.execute(store.q("SELECT inventory, pool, profile FROM nodes WHERE id = ?"), (node_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(node_id)
        cur.execute(store.q("SELECT observation, tiers FROM fabric WHERE node_id = ?"), (node_id,))
        fabric = cur.fetchone()
    inv = json_format.Parse(row[0], pb.HardwareInventory()) if row[0] else pb.HardwareInventory()
    obs = json_format.Parse(fabric[0], fpb.FabricObservation()) if fabric else None
    tiers = json_format.Parse(fabric[1], fpb.FabricTiers()) if fabric and fabric[1] else None
    inputs = LabelInputs(
        inventory=inv,
        tiers=tiers or fpb.FabricTiers(),
        observation=obs or fpb.FabricObservation(),
        assignment=Assignment(pool=row[1], profile=row[2]),
    )
    return derive(inputs, LabelConfig(domain=domain or LabelConfig().domain))


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, store: Store, me: Any) -> None:
        self.store = store
        self.me = me  # () -> the calling Principal

    async def ReportFabric(
        self,
        request: fleet_pb2.ReportFabricRequest,
        context: grpc.aio.ServicerContext,
    ) -> fleet_pb2.ReportFabricResponse:
        me = self.me()
        if request.node_id and request.node_id != me.name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate is for node {me.name}, not {request.node_id}",
            )
        tiers = await self.store.run(report, self.store, me.name, request.observation)
        return fleet_pb2.ReportFabricResponse(tiers=tiers)

    async def ExportTopology(
        self,
        request: fleet_pb2.ExportTopologyRequest,
        context: grpc.aio.ServicerContext,
    ) -> fleet_pb2.ExportTopologyResponse:
        fmt = request.format or "json"
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if len(request.cluster) > 253 or len(request.domain) > 253:
            raise ValueError("cluster and domain: at most 253 characters")
        topology, left_out = await self.store.run(group, self.store, request.cluster)
        if fmt == "kueue":
            text = yaml.safe_dump(kueue_topology(request.domain or "nodeagent.io"), sort_keys=False)
        elif fmt == "slurm":
            text = slurm_topology(dict(topology.nodes)) + "".join(
                f"# left out ({why}): node {node_id}\n" for node_id, why in sorted(left_out.items())
            )
        else:
            text = json.dumps(
                json_format.MessageToDict(topology, preserving_proto_field_name=True),
                indent=2,
                sort_keys=True,
            )
        return fleet_pb2.ExportTopologyResponse(text=text, topology=topology)

    async def GetNodeLabels(
        self, request: fleet_pb2.GetNodeLabelsRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.NodeLabels:
        if len(request.domain) > 253:
            raise ValueError("domain: at most 253 characters")
        labels = await self.store.run(node_labels, self.store, request.node_id, request.domain)
        return fleet_pb2.NodeLabels(node_id=request.node_id, labels=labels)
