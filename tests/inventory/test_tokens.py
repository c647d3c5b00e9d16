"""Bootstrap tokens: the exact form accepted, what a log may show of one, and that no
refusal path of a live registration logs a secret."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import inventory_pb2 as ipb
from nodeagent.inventory import tokens
from testbed.variants import variant
from tests.inventory.conftest import ServiceThread, register

GOOD = "abc123." + "s" * 32


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        (GOOD, "abc123.<redacted>"),
        ("abc123.secret.more", "abc123.<redacted>"),
        ("no-dot-at-all-" + "s" * 32, "<redacted>"),
        ("", "<redacted>"),
        (".leading", ".<redacted>"),
    ],
)
def test_redact_shows_the_id_and_never_the_secret(token: str, shown: str) -> None:
    assert tokens.redact(token) == shown


def test_generated_tokens_split_back_and_match_their_hash() -> None:
    token_id, full, secret_hash = tokens.generate()
    assert tokens.split(full) == (token_id, full.split(".")[1])
    assert tokens.matches(full.split(".")[1], secret_hash)
    assert not tokens.matches("x" * 32, secret_hash)
    assert len(full) == 39 and secret_hash == tokens.hash_secret(full.split(".")[1])


@pytest.mark.parametrize(
    "token",
    [
        GOOD + "x",  # trailing junk after the secret
        "x" + GOOD,
        GOOD[:-1],
        "ABC123." + "s" * 32,
        "abc12." + "s" * 33,
        GOOD.replace(".", ":"),
        GOOD + "\nabc123." + "t" * 32,
    ],
)
def test_split_accepts_only_the_exact_form(token: str) -> None:
    with pytest.raises(tokens.TokenError, match="malformed bootstrap token"):
        tokens.split(token)


def test_surrounding_whitespace_is_tolerated() -> None:
    assert tokens.split(f"  {GOOD}\n") == ("abc123", "s" * 32)


def test_no_refusal_path_logs_a_secret(
    service_factory: Callable[..., ServiceThread],
    database: str,
    dgx_inventory: pb.HardwareInventory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service_factory(database)
    admin = svc.admin()
    used = admin.CreateToken(ipb.CreateTokenRequest()).secret
    register(svc, used, variant(dgx_inventory, 1))
    revoked = admin.CreateToken(ipb.CreateTokenRequest())
    admin.RevokeToken(ipb.RevokeTokenRequest(id=revoked.token.id))
    fresh = admin.CreateToken(ipb.CreateTokenRequest()).secret
    unknown = "zzzzzz." + "q" * 32
    attempts = [
        (used, variant(dgx_inventory, 2)),  # used up
        (revoked.secret, variant(dgx_inventory, 3)),  # revoked
        (unknown, variant(dgx_inventory, 4)),  # unknown
        (fresh, variant(dgx_inventory, 1)),  # a valid token on an enrolled node
        (GOOD + "junk", variant(dgx_inventory, 5)),  # malformed
    ]
    caplog.set_level(logging.DEBUG)
    for token, hw in attempts:
        with pytest.raises(grpc.RpcError):
            register(svc, token, hw)
    text = caplog.text
    for token, _ in attempts:
        secret = token.split(".", 1)[1]
        assert secret not in text, f"the secret of {tokens.redact(token)} is in the log"
    assert text.count("registration refused") >= 4
