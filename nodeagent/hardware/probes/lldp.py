"""LLDP probe: the Ethernet (RoCE) neighbours lldpd has heard, per local netdev.

On the live root it runs `lldpcli -f json0 show neighbors` (through the daemon's
control socket, `-u`, when one is configured); on any other root it replays
`.nodeagent/probes/lldp.json`. The recording keeps lldpcli's own JSON, so replay runs
the same parser as live reading.

`json0` is used because its shape is fixed (lists everywhere); plain `-f json` turns
lists into objects when there is one interface. LLDP sees one hop only: the leaf.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any, TypedDict

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.hardware.probes.recording import Probe, RecordingHeader
from nodeagent.host import HostRoot

NAME = "lldp"
DEFAULT_TIMEOUT = 5.0


class LldpRecording(RecordingHeader, total=False):
    lldpcli: object  # what lldpcli printed, parsed leniently by neighbours()


class Neighbour(TypedDict):
    chassis_id: str
    chassis_name: str
    port_id: str
    port_descr: str


@dataclass(frozen=True)
class Options:
    socket: str = ""  # lldpd's control socket; '' for lldpcli's default
    lldpcli: str = "lldpcli"
    timeout: float = DEFAULT_TIMEOUT


def record(root: HostRoot, inv: pb.HardwareInventory, options: Options) -> LldpRecording:
    """lldpd knows its neighbours whatever the rails are: it is always asked."""
    return read_live(socket=options.socket, lldpcli=options.lldpcli, timeout=options.timeout)


PROBE: Probe[LldpRecording, Options] = Probe(NAME, record, Options())


def read_live(
    *, socket: str = "", lldpcli: str = "lldpcli", timeout: float = DEFAULT_TIMEOUT
) -> LldpRecording:
    """Ask lldpd now. No lldpcli, no daemon or a timeout is `available: false`, not an error."""
    cmd = [lldpcli, *(["-u", socket] if socket else []), "-f", "json0", "show", "neighbors"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return _unavailable(f"{lldpcli} not found (install lldpd)")
    except subprocess.TimeoutExpired:
        return _unavailable(f"lldpcli did not answer within {timeout:g} s")
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return _unavailable(f"lldpcli failed: {reason[-1] if reason else done.returncode}")
    try:
        output = json.loads(done.stdout)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _unavailable(f"lldpcli printed no JSON: {exc}")
    return {"probe": NAME, "version": 1, "available": True, "error": "", "lldpcli": output}


def _unavailable(error: str) -> LldpRecording:
    return {"probe": NAME, "version": 1, "available": False, "error": error, "lldpcli": {}}


def neighbours(data: LldpRecording | None) -> dict[str, list[Neighbour]]:
    """{netdev: [Neighbour, ...]} from a recording.

    Tolerates missing pieces (a neighbour without a system name still has a chassis
    id); an entry without a chassis id cannot name a switch and is skipped.
    """
    out: dict[str, list[Neighbour]] = {}
    if not data or not data.get("available", True):
        return out
    for top in _list(_get(data.get("lldpcli"), "lldp")):
        for iface in _list(_get(top, "interface")):
            name = _text(_get(iface, "name"))
            chassis = _first(_get(iface, "chassis"))
            port = _first(_get(iface, "port"))
            chassis_id = _value(_get(chassis, "id")).lower()
            if not name or not chassis_id:
                continue
            out.setdefault(name, []).append(
                {
                    "chassis_id": chassis_id,
                    "chassis_name": _value(_get(chassis, "name")),
                    "port_id": _value(_get(port, "id")),
                    "port_descr": _value(_get(port, "descr")),
                }
            )
    return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _list(obj: Any) -> list[Any]:
    if isinstance(obj, list):
        return obj
    return [obj] if isinstance(obj, dict) else []


def _first(obj: Any) -> Any:
    items = _list(obj)
    return items[0] if items else None


def _value(obj: Any) -> str:
    """json0 wraps every leaf value as [{"value": ...}] (ids add a "type")."""
    return _text(_get(_first(obj), "value"))


def _text(obj: Any) -> str:
    return obj.strip() if isinstance(obj, str) else ""
