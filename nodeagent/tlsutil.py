"""Keys, CSRs and CA pinning shared by the agent and the inventory service.

The agent trusts the inventory's CA only after its SubjectPublicKeyInfo hash
matches the pin given at bootstrap (`--ca-hash sha256:...`, as kubeadm's
discovery-token-ca-cert-hash): the CA certificate is read from the TLS handshake
without verification, then checked against the pin, then used to verify
everything that follows.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nodeagent.fsutil import write_atomic


class PinError(ValueError):
    """The server did not present a CA matching the pin."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """A key or token file: 0600 from the start, in a 0700 directory when it makes one."""
    write_atomic(path, data, mode=0o600, dir_mode=0o700)


def spki_hash(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """`sha256:<hex>` of the SubjectPublicKeyInfo (kubeadm's CA pin format)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def fetch_pinned_ca(address: str, pin: str, timeout: float = 10.0) -> bytes:
    """The CA certificate (PEM) the server at host:port presents, if it matches `pin`."""
    if not pin.startswith("sha256:") or len(pin) != 71:
        raise PinError(f"CA pin must be sha256:<64 hex digits>, got {pin[:20]!r}")
    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # verified below, against the pin
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=host.strip("[]")) as tls,
    ):
        chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
        ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    for der in ders:
        cert = x509.load_der_x509_certificate(der)
        if spki_hash(cert) == pin:
            return cert_pem(cert)
    raise PinError(
        f"{address} presented no CA certificate matching {pin[:23]}...; "
        "wrong address, wrong --ca-hash, or someone in the middle"
    )
