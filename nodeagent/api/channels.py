"""Client channels to the inventory: TLS always, a client certificate after enrolment."""

from __future__ import annotations

from typing import Any

import grpc

KEEPALIVE = [
    # heartbeats are a few hundred bytes: bandwidth-delay probing (a ping after each read
    # of data) only doubles the frames, and the inventory's CPU, on every beat
    ("grpc.http2.bdp_probe", 0),
    ("grpc.keepalive_time_ms", 60000),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 120000),
]


def credentials(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def secure_channel(
    address: str, ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.Channel:
    return grpc.secure_channel(address, credentials(ca_pem, cert_pem, key_pem), KEEPALIVE)


def secure_aio_channel(
    address: str,
    ca_pem: bytes,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    server_name: str = "",
) -> Any:
    """`server_name`: the name the certificate must carry when `address` is one of the
    addresses a name resolved to (a replica picked from several A records)."""
    options = (
        [*KEEPALIVE, ("grpc.ssl_target_name_override", server_name)] if server_name else KEEPALIVE
    )
    return grpc.aio.secure_channel(address, credentials(ca_pem, cert_pem, key_pem), options)
