"""Preflight checks that look at the network: ports the kubelet needs, the registries the
cluster pulls from, and the fleet (is this hostname taken?).

Listening sockets come from /proc/net/tcp{,6} through the HostRoot (so a modelled root
can carry them); registries are tried with a plain TCP connect and a short timeout, all
at once, so a dead registry costs one timeout, not one per registry.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nodeagent.api.v1 import preflight_pb2 as ppb
from nodeagent.host import HostReadError, HostRoot

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def listening_ports(root: HostRoot) -> set[int]:
    ports = set()
    for table in ("proc/net/tcp", "proc/net/tcp6"):
        try:
            lines = root.read_text(table).splitlines()[1:]
        except HostReadError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == LISTEN and ":" in cols[1]:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def check_ports(root: HostRoot, wanted: Sequence[int]) -> list[ppb.PreflightCheck]:
    busy = sorted(set(wanted) & listening_ports(root))
    if busy:
        shown = ", ".join(map(str, busy))
        return [
            ppb.PreflightCheck(
                name="ports",
                status=ppb.CHECK_FAIL,
                message=f"in use: {shown}",
                remedy=f"stop what listens there (ss -ltnp 'sport = :"
                f"{busy[0]}'): the kubelet needs 10250 and "
                "kube-proxy 10256",
            )
        ]
    return [
        ppb.PreflightCheck(
            name="ports", status=ppb.CHECK_PASS, message=f"free: {', '.join(map(str, wanted))}"
        )
    ]


def _split(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return target.strip("[]"), 443
    return host.strip("[]"), int(port)


def _reach(target: str, timeout: float) -> str:
    """'' when a TCP connection opens, else why not."""
    host, port = _split(target)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return f"{target}: {exc.strerror or exc}"


def check_registries(registries: Sequence[str], timeout: float) -> ppb.PreflightCheck:
    if not registries:
        return ppb.PreflightCheck(
            name="registries",
            status=ppb.CHECK_SKIP,
            message="no registries configured (--registry)",
        )
    with ThreadPoolExecutor(max_workers=min(len(registries), 16)) as pool:
        failures = [f for f in pool.map(lambda r: _reach(r, timeout), registries) if f]
    if failures:
        return ppb.PreflightCheck(
            name="registries",
            status=ppb.CHECK_FAIL,
            message="unreachable: " + "; ".join(failures),
            remedy="open the firewall to the registries (or point "
            "Kubespray's *_image_repo at the site's internal "
            "registry on air-gapped sites)",
        )
    return ppb.PreflightCheck(
        name="registries", status=ppb.CHECK_PASS, message=f"reachable: {', '.join(registries)}"
    )


def fleet_lookup(
    address: str,
    identity_dir: Path,
    timeout: float = 5.0,
) -> Callable[[str], list[str]]:
    """Ask the inventory, as this node (its enrolment identity), which other nodes carry a
    hostname."""

    def lookup(hostname: str) -> list[str]:
        from nodeagent.api import channels
        from nodeagent.api.v1 import inventory_pb2 as ipb
        from nodeagent.api.v1 import inventory_pb2_grpc

        ca, cert, key = (
            (identity_dir / f).read_bytes() for f in ("ca.crt", "node.crt", "node.key")
        )
        with channels.secure_channel(address, ca, cert, key) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            resp = stub.CheckHostname(ipb.CheckHostnameRequest(hostname=hostname), timeout=timeout)
        return list(resp.node_ids)

    return lookup
