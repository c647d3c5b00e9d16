"""What a node sends cannot forge a line in the log of a real `nodeagent inventory serve`."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc

from nodeagent import tlsutil
from nodeagent.api import channels
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.api.v1 import inventory_pb2_grpc
from tests.inventory.test_resilience import InventoryProcess

FORGED = "FORGED ERROR inventory: database wiped"


def _register(inv: InventoryProcess, token: str, inventory: pb.HardwareInventory) -> str:
    """Register and say how it went: the node id, or the refusal's status code."""
    key = tlsutil.new_key()
    with channels.secure_channel(inv.bootstrap, inv.ca().pem) as ch:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        request = ipb.RegisterRequest(
            token=token, csr_pem=tlsutil.make_csr(key, "n").decode(), inventory=inventory
        )
        try:
            return str(stub.Register(request, timeout=10).node_id)
        except grpc.RpcError as exc:
            return str(exc.code())


def test_untrusted_strings_stay_on_their_line(
    scratch: Path, dgx_inventory: pb.HardwareInventory
) -> None:
    inv = InventoryProcess(scratch, f"sqlite:///{scratch / 'inv.db'}").start()
    try:
        secret = inv.admin().CreateToken(ipb.CreateTokenRequest(), timeout=10).secret
        node = pb.HardwareInventory()
        node.CopyFrom(dgx_inventory)
        node.system.hostname = f"edge-01\n{FORGED}"
        # accepted or refused: either way the hostname must not break its line
        _register(inv, secret, node)
        # a refused token's id part is logged (the secret part never is)
        refused = _register(inv, f"abcdef\r\n{FORGED}\u2028x.{'s' * 32}", dgx_inventory)
        assert refused == str(grpc.StatusCode.UNAUTHENTICATED)
    finally:
        inv.kill(signal.SIGTERM)
    text = (scratch / "inventory.log").read_text()
    assert not [ln for ln in text.splitlines() if ln.startswith("FORGED")], text
    assert f"registration refused (token abcdef\\r\\n{FORGED}\\u2028x.<redacted>)" in text, text
