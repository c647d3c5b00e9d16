"""The admin's connection to the inventory service, shared by every `nodeagent admin` command.

The command modules hold only what is particular to their objects: here is the one place
that reads the admin's certificate flags, opens the mTLS channel, turns a failed RPC into
the one line the user reads, and prints a reply in the format `-o` asked for.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, CliError, add_output

CREDENTIALS = ("cert", "key", "ca")
# What the service makes node ids of (uuid4): such a word names a node without a lookup.
NODE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def add_connection_flags(admin: argparse.ArgumentParser) -> None:
    """The flags of `nodeagent admin` itself; the environment gives their defaults, so an
    admin sets the connection once per shell (the exported Ansible script reads the same)."""
    env = os.environ.get
    admin.add_argument("--inventory", default=env("NODEAGENT_INVENTORY", "localhost:7444"))
    admin.add_argument("--cert", default=env("NODEAGENT_ADMIN_CERT"))
    admin.add_argument("--key", default=env("NODEAGENT_ADMIN_KEY"))
    admin.add_argument("--ca", default=env("NODEAGENT_ADMIN_CA"))
    admin.add_argument("--timeout", type=float, default=30)
    add_output(admin)  # here and on every leaf: `admin -o json nodes list` = `... list -o json`


@dataclass(frozen=True)
class AdminClient:
    """The connection flags of one command; the certificate files are read only when a
    call is made, so a command's own usage errors come first."""

    address: str
    cert: str | None
    key: str | None
    ca: str | None
    timeout: float
    output: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        return cls(args.inventory, args.cert, args.key, args.ca, args.timeout, args.output)

    def channel(self) -> Any:
        """A new mTLS channel; the caller closes it (`with`)."""
        from nodeagent.api import channels

        pem = {}
        for name in CREDENTIALS:
            value = getattr(self, name)
            if not value:
                raise CliError(f"--{name} is required (or NODEAGENT_ADMIN_{name.upper()})")
            try:
                pem[name] = Path(value).read_bytes()
            except OSError as exc:
                raise CliError(f"--{name}: {exc}") from None
        return channels.secure_channel(self.address, pem["ca"], pem["cert"], pem["key"])

    @contextmanager
    def inventory_stub(self) -> Iterator[Any]:
        """The InventoryService for a stream the caller reads (and whose errors it sorts)
        itself; the channel closes on leaving."""
        from nodeagent.api.v1 import inventory_pb2_grpc

        with self.channel() as channel:
            yield inventory_pb2_grpc.InventoryServiceStub(channel)

    def call(self, method: str, request: Any) -> Any:
        """A failed call becomes the one line main() prints, with the RPC's status."""
        from nodeagent.api.v1 import inventory_pb2_grpc

        return self._unary(inventory_pb2_grpc.InventoryServiceStub, method, request)

    def call_fleet(self, method: str, request: Any) -> Any:
        """The fleet's own service (topology exports, node labels), on the same port."""
        from nodeagent.api.v1 import fleet_pb2_grpc

        return self._unary(fleet_pb2_grpc.FleetServiceStub, method, request)

    def _unary(self, stub: Callable[[Any], Any], method: str, request: Any) -> Any:
        import grpc

        with self.channel() as channel:
            try:
                return getattr(stub(channel), method)(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                raise CliError(f"{method}: {exc.code().name}: {exc.details()}") from None

    def list_nodes(self, **filters: Any) -> list[Any]:
        """Every node (ListNodes page by page), with the filters of ListNodesRequest."""
        from nodeagent.api.v1 import inventory_pb2 as ipb

        found: list[Any] = []
        token = ""
        while True:
            resp = self.call(
                "ListNodes", ipb.ListNodesRequest(page_size=1000, page_token=token, **filters)
            )
            found.extend(resp.nodes)
            token = resp.next_page_token
            if not token:
                return found

    def resolve_nodes(self, words: list[str]) -> list[str]:
        """The node id each word names: a full id as it is (no lookup: a deleted node's
        certificates are still listed by it), else the one node whose hostname is the word
        or whose id starts with it. None, or several, is an error naming the candidates.
        The fleet is listed once for all the words."""
        if all(NODE_ID.fullmatch(w) for w in words):
            return list(words)
        nodes = self.list_nodes()
        return [w if NODE_ID.fullmatch(w) else _match_node(w, nodes) for w in words]

    def emit(self, msg: Any, rows: list[list[str]], headers: list[str]) -> int:
        """The reply as `-o` asked: the message itself for json and yaml, else the rows.
        Returns the exit code, 0: printing the reply is most commands' last act."""
        from nodeagent.cli import render

        if self.output == "json":
            print(render.to_json(msg))
        elif self.output == "yaml":
            sys.stdout.write(render.to_yaml(msg))
        else:
            print(render.table(rows, headers))
        return EXIT_OK


def _match_node(word: str, nodes: list[Any]) -> str:
    """The id of the one node `word` names among `nodes` (hostname or id prefix)."""
    if not word:
        raise CliError("a node is named by its id, a unique prefix of it, or its hostname")
    exact = [n for n in nodes if n.id == word]
    if exact:
        return str(exact[0].id)
    folded = word.casefold()
    found = {n.id: n for n in nodes if n.hostname.casefold() == folded or n.id.startswith(folded)}
    if len(found) == 1:
        return str(next(iter(found)))
    if not found:
        raise CliError(f"no node has the id, id prefix or hostname {word!r}")
    from nodeagent.names import shown

    listed = ", ".join(f"{n.id} ({shown(n.hostname)})" for n in list(found.values())[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    raise CliError(f"{word!r} names {len(found)} nodes: {listed}{more}; give more of the id")
