"""What this node sees of the fabric: its compute rails with their first-hop switches,
cloud placement and static placement, in one FabricObservation.

The only impure part of topology/: it runs the fabric probes (live on `/`, replayed
from a root's recordings elsewhere). A probe that fails leaves its rails without a
leaf and says why in `errors`; the other sources still count.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.probes import infiniband, lldp, oci
from nodeagent.hardware.probes.recording import OptionsT, Probe, Recordings, RecordingT
from nodeagent.host import HostRoot
from nodeagent.topology import rails as rails_mod
from nodeagent.topology.config import FabricConfig, LldpConfig, OciConfig, ProbeConfig


def observe(
    root: HostRoot,
    inv: pb.HardwareInventory,
    config: FabricConfig,
    recordings: Recordings | None = None,
) -> fpb.FabricObservation:
    """The observation of `root`; `recordings`, when given, receives what each probe read."""
    obs = fpb.FabricObservation(node=config.node_name or inv.system.hostname)
    obs.rails.extend(rails_mod.select(inv, config.rails))
    read = _Reader(root, inv, recordings)
    _attach_lldp(read, obs, config.lldp)
    _attach_infiniband(read, obs, config.infiniband)
    _attach_cloud(read, obs, config.oci)
    s = config.static
    obs.static_placement.CopyFrom(fpb.StaticPlacement(fabric=s.fabric, block=s.block, rack=s.rack))
    obs.rails_expected = config.expected_rails or len(obs.rails)
    obs.rate_expected_gbps = config.expected_rate_gbps or max(
        (r.rate_gbps for r in obs.rails), default=0.0
    )
    return obs


@dataclass(frozen=True)
class _Reader:
    """Reads probes for one observation, keeping what they read when asked to."""

    root: HostRoot
    inv: pb.HardwareInventory
    recordings: Recordings | None

    def __call__(self, probe: Probe[RecordingT, OptionsT], options: OptionsT) -> RecordingT | None:
        return probe.read(self.root, self.inv, options, self.recordings)


def _wanted(switch: str, auto: bool) -> bool:
    return switch == "on" or (switch == "auto" and auto)


def _attach_lldp(read: _Reader, obs: fpb.FabricObservation, c: LldpConfig) -> None:
    ethernet = [r for r in obs.rails if r.link_layer == "ethernet" and r.netdev]
    if not _wanted(c.enabled, bool(ethernet)):
        return
    data = read(
        lldp.PROBE, lldp.Options(socket=c.socket, lldpcli=c.lldpcli, timeout=c.timeout_seconds)
    )
    if data is not None and not data.get("available", True):
        obs.errors.append(f"lldp: {data.get('error') or 'unavailable'}")
    heard = lldp.neighbours(data)
    for rail in ethernet:
        found = heard.get(rail.netdev) or []
        if not found:
            continue
        if len(found) > 1:
            obs.errors.append(f"lldp: {rail.netdev} hears {len(found)} neighbours; using the first")
        n = found[0]
        rail.leaf.CopyFrom(
            fpb.SwitchRef(id=n["chassis_id"], name=n["chassis_name"], port=n["port_id"])
        )
        rail.neighbour_source = "lldp"


def _attach_infiniband(read: _Reader, obs: fpb.FabricObservation, c: ProbeConfig) -> None:
    ib = [r for r in obs.rails if r.link_layer == "infiniband" and r.device and r.active]
    if not _wanted(c.enabled, bool(ib)):
        return
    ports = tuple((r.device, r.port) for r in ib)
    data = read(infiniband.PROBE, infiniband.Options(ports=ports, timeout=c.timeout_seconds))
    if data is not None and not data.get("available", True):
        obs.errors.append(f"infiniband: {data.get('error') or 'unavailable'}")
    hops = infiniband.neighbours(data)
    for rail in ib:
        hop = hops.get((rail.device, rail.port))
        if hop is None:
            continue
        obs.errors.extend(f"infiniband {rail.name}: {e}" for e in hop["errors"])
        leaf = hop["leaf"]
        if leaf is None:
            continue
        rail.leaf.CopyFrom(fpb.SwitchRef(id=leaf["id"], name=leaf["name"], port=leaf["port"]))
        rail.spines.extend(
            fpb.SwitchRef(id=s["id"], name=s["name"], port=s["port"]) for s in hop["spines"]
        )
        rail.neighbour_source = "infiniband"


def _attach_cloud(read: _Reader, obs: fpb.FabricObservation, c: OciConfig) -> None:
    if c.enabled == "off":
        return
    options = oci.Options(
        oci_only=c.enabled == "auto", base_url=c.base_url, timeout=c.timeout_seconds
    )
    data = read(oci.PROBE, options)
    if data is None:
        return
    place = oci.placement(data)
    obs.cloud.CopyFrom(fpb.CloudPlacement(provider="oci", **place))
    if not place["available"]:
        obs.errors.append(f"oci: {place['error']}")
