"""InfiniBand probe: each port's first-hop switch (leaf) and that leaf's uplinks (spines).

Node-local and light: per ACTIVE InfiniBand port, three infiniband-diags queries over
the directed route to the first hop (`-D 0,1`, the second number being the local port)
instead of a fabric sweep:

    smpquery -C <dev> -P <port> -D nodeinfo 0,1   # NodeType, SystemGuid, Guid, LocalPort
    smpquery -C <dev> -P <port> -D nodedesc 0,1   # the leaf's NodeDescription
    iblinkinfo -C <dev> -P <port> -D 0,1 -a --switches-only -l
        # partial scan one hop around the leaf, switches only, one line per link:
        # the leaf's ports and every switch one hop away (its spines)

The tools need /dev/infiniband/umad* (root); SMPs are refused in VMs, on SR-IOV VFs
and under an M_Key. On the live root the commands run; elsewhere the recording at
`.nodeagent/probes/infiniband.json` is replayed. The recording keeps the tools' text so
replay runs the same parsers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NotRequired, Required, TypedDict

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.probes.recording import Probe, RecordingHeader
from nodeagent.host import HostRoot

NAME = "infiniband"
DEFAULT_TIMEOUT = 5.0
ACTIVE = "ACTIVE"
Query = Literal["nodeinfo", "nodedesc", "iblinkinfo"]
_FIELD_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 ]*?):\.+(.*)$")
_DESC_RE = re.compile(r"^Node Description:\.+(.*)$", re.MULTILINE)
# iblinkinfo line mode (rdma-core infiniband-diags/iblinkinfo.c, print_port):
# 0x<guid> "<desc>" <lid> <port>[<ext>] ==(<width> <speed> <state>/<phys>)==>  <remote>
_LINK_RE = re.compile(
    r'^(?:[<>] )?0x(?P<guid>[0-9a-fA-F]+)\s+"(?P<desc>[^"]*)"\s+(?P<lid>\d+)\s+(?P<port>\d+)'
    r"\[[ 0-9]*\]\s+==\(\s*(?P<link>[^)]*?)\s*\)==>\s*(?P<remote>.*)$"
)
_REMOTE_RE = re.compile(
    r'^0x(?P<guid>[0-9a-fA-F]+)\s+(?P<lid>\d+)\s+(?P<port>\d+)\[[ 0-9]*\]\s+"(?P<desc>[^"]*)"'
)


class PortRecord(TypedDict, total=False):
    """One port's query outputs, as the tools printed them."""

    device: Required[str]
    port: Required[int]
    errors: Required[list[str]]
    nodeinfo: str
    nodedesc: str
    iblinkinfo: str


class InfinibandRecording(RecordingHeader, total=False):
    ports: list[PortRecord]


class Link(TypedDict):
    """One `iblinkinfo -l` line; a port with nothing attached has no remote_* keys."""

    guid: str
    desc: str
    lid: int
    port: int
    link: str
    remote_guid: NotRequired[str]
    remote_lid: NotRequired[int]
    remote_port: NotRequired[int]
    remote_desc: NotRequired[str]


class Switch(TypedDict):
    id: str
    name: str
    port: str


class Leaf(Switch):
    guid: str


class FirstHop(TypedDict):
    leaf: Leaf | None
    spines: list[Switch]
    errors: list[str]


@dataclass(frozen=True)
class Options:
    ports: tuple[tuple[str, int], ...] | None = None  # (device, port); None: every ACTIVE one
    timeout: float = DEFAULT_TIMEOUT


def record(
    root: HostRoot, inv: pb.HardwareInventory, options: Options
) -> InfinibandRecording | None:
    """The queries for the ports asked for; None when there is no port to ask about."""
    ports = options.ports
    if ports is None:
        ports = active_ports(inv)
        if not ports:
            return None
    return read_live(ports, timeout=options.timeout)


PROBE: Probe[InfinibandRecording, Options] = Probe(NAME, record, Options())


def active_ports(inv: pb.HardwareInventory) -> tuple[tuple[str, int], ...]:
    """Every ACTIVE InfiniBand port: those that have a first hop to ask about."""
    return tuple(
        (dev.name, port.port)
        for dev in inv.rdma_devices
        for port in dev.ports
        if port.link_layer == "infiniband" and port.state == ACTIVE
    )


def read_live(
    ports: Iterable[tuple[str, int]], *, timeout: float = DEFAULT_TIMEOUT
) -> InfinibandRecording:
    """Run the queries now; a missing tool makes the probe unavailable, a failed query
    is that port's error."""
    data: InfinibandRecording = {"probe": NAME, "version": 1, "available": True, "error": ""}
    records = []
    for device, port in ports:
        base = ["-C", device, "-P", str(port)]
        rec: PortRecord = {"device": device, "port": port, "errors": []}
        commands: dict[Query, list[str]] = {
            "nodeinfo": ["smpquery", *base, "-D", "nodeinfo", "0,1"],
            "nodedesc": ["smpquery", *base, "-D", "nodedesc", "0,1"],
            "iblinkinfo": ["iblinkinfo", *base, "-D", "0,1", "-a", "--switches-only", "-l"],
        }
        for key, cmd in commands.items():
            try:
                done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
            except FileNotFoundError:
                return {
                    **data,
                    "available": False,
                    "ports": [],
                    "error": f"{cmd[0]} not found (install infiniband-diags)",
                }
            except subprocess.TimeoutExpired:
                rec["errors"].append(f"{key}: no answer within {timeout:g} s")
                continue
            text = done.stdout.decode("utf-8", "replace")
            if done.returncode != 0:
                err = done.stderr.decode("utf-8", "replace").strip().splitlines()
                rec["errors"].append(f"{key}: {err[-1] if err else f'exit {done.returncode}'}")
            rec[key] = text
        records.append(rec)
    data["ports"] = records
    return data


def parse_nodeinfo(text: str) -> dict[str, str]:
    """`smpquery nodeinfo` fields: {"NodeType": "Switch", "SystemGuid": "0x...", ...}."""
    out = {}
    for line in text.splitlines():
        m = _FIELD_RE.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def parse_nodedesc(text: str) -> str:
    """`smpquery nodedesc`: the description after the dot padding."""
    m = _DESC_RE.search(text)
    return m.group(1).strip() if m else ""


def parse_iblinkinfo(text: str) -> list[Link]:
    """`iblinkinfo -l` lines, in the order printed."""
    links = []
    for line in text.splitlines():
        m = _LINK_RE.match(line.rstrip())
        if not m:
            continue
        link: Link = {
            "guid": m.group("guid").lower().rjust(16, "0"),
            "desc": m.group("desc").strip(),
            "lid": int(m.group("lid")),
            "port": int(m.group("port")),
            "link": " ".join(m.group("link").split()),
        }
        remote = _REMOTE_RE.match(m.group("remote"))
        if remote:
            link["remote_guid"] = remote.group("guid").lower().rjust(16, "0")
            link["remote_lid"] = int(remote.group("lid"))
            link["remote_port"] = int(remote.group("port"))
            link["remote_desc"] = remote.group("desc").strip()
        links.append(link)
    return links


def _guid(text: str) -> str:
    """`0xfc6a1c0300e5a8c0` -> bare lower-case hex, 16 digits; '' for zero or garbage."""
    try:
        value = int(text, 16)
    except ValueError:
        return ""
    return f"{value:016x}" if value else ""


def first_hop(rec: PortRecord) -> FirstHop:
    """The leaf and spines one port record shows.

    The leaf id is its SystemGuid (node GUID when that is zero); spines, by GUID, are
    the switches the scan printed that the leaf links to, each with the spine port the
    leaf's first uplink to it lands on.
    """
    errors = [str(e) for e in rec.get("errors") or []]
    info = parse_nodeinfo(str(rec.get("nodeinfo") or ""))
    out: FirstHop = {"leaf": None, "spines": [], "errors": errors}
    if not info:
        if not errors:
            errors.append("nodeinfo: no NodeInfo fields in the output")
        return out
    if info.get("NodeType", "").lower() != "switch":
        errors.append(
            f"first hop is a {info.get('NodeType') or 'node of unknown type'}, not a switch"
        )
        return out
    guid = _guid(info.get("Guid", ""))
    leaf_id = _guid(info.get("SystemGuid", "")) or guid
    if not leaf_id:
        errors.append("nodeinfo: no SystemGuid or Guid")
        return out
    name = parse_nodedesc(str(rec.get("nodedesc") or ""))
    out["leaf"] = {"id": leaf_id, "guid": guid, "name": name, "port": info.get("LocalPort", "")}
    leaf_guids = {guid, _guid(info.get("PortGuid", ""))} - {""}
    links = parse_iblinkinfo(str(rec.get("iblinkinfo") or ""))
    # Spines: switches the scan printed that the leaf links to. Intersecting the two
    # keeps out the leaf's CAs (not printed with --switches-only) and any switch the
    # scan reached two hops out (not linked to the leaf).
    printed = {lk["guid"]: lk["desc"] for lk in links if lk["guid"] not in leaf_guids}
    uplink_port: dict[str, str] = {}
    for lk in sorted(links, key=lambda lk: lk["port"]):
        if lk["guid"] in leaf_guids and lk.get("remote_guid") in printed:
            uplink_port.setdefault(lk["remote_guid"], str(lk["remote_port"]))
    out["spines"] = [
        {"id": g, "name": printed[g], "port": uplink_port[g]} for g in sorted(uplink_port)
    ]
    return out


def neighbours(data: InfinibandRecording | None) -> dict[tuple[str, int], FirstHop]:
    """{(device, port): first_hop(...)} for every port in a recording."""
    out: dict[tuple[str, int], FirstHop] = {}
    if not data or not data.get("available", True):
        return out
    for rec in data.get("ports") or []:
        if not isinstance(rec, dict):
            continue
        try:
            key = (str(rec["device"]), int(rec["port"]))
        except (KeyError, TypeError, ValueError):
            continue
        out[key] = first_hop(rec)
    return out
