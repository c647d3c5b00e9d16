"""The node's addresses, default route and MTUs, read from the kernel over netlink.

Kubespray needs an address to reach each node (`ansible_host`) and the one its
components bind (`ip`, `access_ip`); the host name a node chose is not one. The agent
reports what the kernel says and the inventory picks from it. pyroute2 is imported
only here, so `nodeagent discover` keeps its start-up time; the daemon reads it in a
short-lived child (`read_network_in_child`), because pyroute2 loads some 20 MB that a
process asking every few minutes should not keep for ever.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from typing import Any

from nodeagent.api.v1 import inventory_pb2 as ipb

IFF_UP = 0x1


def read_network() -> ipb.NodeNetwork:
    """Interfaces (loopback left out) with their addresses, MTU and state, and the
    default route's interface and source address. OSError when netlink fails."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]  # lazy: 0.1 s of import

    out = ipb.NodeNetwork()
    with IPRoute() as ipr:
        links = {link["index"]: link for link in ipr.get_links()}
        by_index: dict[int, ipb.InterfaceAddresses] = {}
        for index, link in sorted(links.items()):
            name = str(link.get("IFLA_IFNAME") or "")
            if name == "lo" or not name:
                continue
            by_index[index] = out.interfaces.add(
                name=name, mtu=int(link.get("IFLA_MTU") or 0), up=bool(link["flags"] & IFF_UP)
            )
        for addr in ipr.get_addr():
            owner = by_index.get(addr["index"])
            value = addr.get("IFA_ADDRESS")
            if owner is not None and value:
                owner.addresses.append(f"{value}/{addr['prefixlen']}")
        route = _default_route(ipr)
    if route is not None:
        oif, prefsrc, version = route
        chosen = by_index.get(oif)
        if chosen is not None:
            out.default_route_interface = chosen.name
            out.default_route_address = prefsrc or first_usable(chosen.addresses, version)
    return out


def read_network_in_child(timeout: float = 20.0) -> ipb.NodeNetwork:
    """read_network() in `python -m nodeagent.hardware.addresses`: OSError when it fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nodeagent.hardware.addresses"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"reading the addresses took over {timeout:g} s") from None
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"reading the addresses failed: {last[0][:300]}")
    out = ipb.NodeNetwork()
    out.ParseFromString(done.stdout)
    return out


def _default_route(ipr: Any) -> tuple[int, str, int] | None:
    """(interface index, preferred source, IP version) of the default route, IPv4 first."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        for route in ipr.get_default_routes(family=family):
            oif = route.get("RTA_OIF")
            if oif:
                return int(oif), str(route.get("RTA_PREFSRC") or ""), version
    return None


def usable(address: str) -> bool:
    """An address another host can reach the node at: not loopback, link-local,
    multicast or unspecified."""
    ip = ipaddress.ip_interface(address).ip
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def first_usable(addresses: list[str] | Any, version: int = 0) -> str:
    """The first usable address (without its prefix), of one IP version when given."""
    for address in addresses:
        iface = ipaddress.ip_interface(address)
        if (not version or iface.version == version) and usable(address):
            return str(iface.ip)
    return ""


if __name__ == "__main__":  # the daemon's child: the message, serialised, on stdout
    sys.stdout.buffer.write(read_network().SerializeToString(deterministic=True))
