"""An Ansible dynamic inventory backed by the inventory service (`ansible-playbook -i SCRIPT`).

`nodeagent admin export kubespray --script FILE` writes a small executable that calls
`main` here with the cluster name and the connection it was exported with; the
environment (NODEAGENT_INVENTORY, NODEAGENT_ADMIN_CERT, NODEAGENT_ADMIN_KEY,
NODEAGENT_ADMIN_CA) overrides those, so one script serves any admin with a viewer
certificate. `--list` prints every group with `_meta.hostvars`, so Ansible never calls
`--host` once per host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV = {
    "inventory": "NODEAGENT_INVENTORY",
    "cert": "NODEAGENT_ADMIN_CERT",
    "key": "NODEAGENT_ADMIN_KEY",
    "ca": "NODEAGENT_ADMIN_CA",
}


def fetch(stub: Any, cluster: str, timeout: float) -> tuple[dict[str, Any], int, list[str]]:
    """(inventory, node count, warnings) from the ExportKubespray stream."""
    from nodeagent.api.v1 import inventory_pb2 as ipb

    pieces, count, warnings = [], 0, []
    for i, part in enumerate(
        stub.ExportKubespray(ipb.ExportKubesprayRequest(cluster=cluster), timeout=timeout)
    ):
        if i == 0:
            count, warnings = part.nodes, list(part.warnings)
        pieces.append(part.inventory_json)
    return json.loads(b"".join(pieces)), count, warnings


def _settings(defaults: Mapping[str, str]) -> dict[str, str]:
    return {name: os.environ.get(var) or defaults.get(name, "") for name, var in ENV.items()}


def main(argv: Sequence[str], cluster: str, defaults: Mapping[str, str]) -> int:
    import grpc

    from nodeagent.api import channels
    from nodeagent.api.v1 import inventory_pb2_grpc
    from nodeagent.inventory.kubespray import to_script_list

    parser = argparse.ArgumentParser(description=f"Ansible inventory of cluster {cluster!r}")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true")
    mode.add_argument("--host")
    args = parser.parse_args(argv)
    cfg = _settings(defaults)
    try:
        creds = {name: Path(cfg[name]).read_bytes() for name in ("cert", "key", "ca")}
    except OSError as exc:
        print(
            f"nodeagent inventory: credentials: {exc} (set {', '.join(ENV.values())})",
            file=sys.stderr,
        )
        return 1
    channel = channels.secure_channel(cfg["inventory"], creds["ca"], creds["cert"], creds["key"])
    try:
        with channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            inventory, _, _ = fetch(stub, cluster, timeout=120)
    except grpc.RpcError as exc:
        print(f"nodeagent inventory: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.list:
        json.dump(to_script_list(inventory), sys.stdout, separators=(",", ":"))
    else:
        json.dump(inventory["all"]["hosts"].get(args.host, {}), sys.stdout)
    sys.stdout.write("\n")
    return 0


def script(cluster: str, defaults: Mapping[str, str]) -> str:
    """The executable written by `admin export kubespray --script`."""
    return (
        f"#!{sys.executable}\n"
        f'"""Ansible dynamic inventory of Kubespray cluster {cluster!r}, from the nodeagent\n'
        "inventory service. Use: ansible-playbook -i THIS_FILE ... The environment\n"
        f'({", ".join(ENV.values())}) overrides the connection below."""\n'
        "import sys\n\n"
        "from nodeagent.cli.ansible_inventory import main\n\n"
        f"sys.exit(main(sys.argv[1:], cluster={cluster!r}, defaults={dict(defaults)!r}))\n"
    )
