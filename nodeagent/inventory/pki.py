"""The inventory's certificate authority and the identities it issues.

Nodes and admins authenticate with client certificates signed by this CA. The
subject says who: CN is the node id or admin name, OU the kind (`node`) or the
admin role (`viewer`, `operator`, `admin`). Keys are EC P-256; the CA key is
written 0600 and a node's private key never leaves the node (it sends a CSR).
Agents pin the CA by the SHA-256 of its SubjectPublicKeyInfo, as kubeadm's
`--discovery-token-ca-cert-hash` does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodeagent.api.auth import NODE, ROLES
from nodeagent.tlsutil import cert_pem, key_pem, make_csr, new_key, spki_hash, write_private

__all__ = [
    "NODE",
    "ROLES",
    "CertificateAuthority",
    "PkiError",
    "cert_pem",
    "key_pem",
    "load_csr",
    "make_csr",
    "new_key",
    "serial_hex",
    "write_private",
]


class PkiError(ValueError):
    """A certificate or CSR problem; the message is safe to show (no key material)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose signature verifies (its sender holds the key) and whose key is strong."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PkiError("csr_pem is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise PkiError("the CSR signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.key_size < 256:
        raise PkiError("the CSR key must be EC P-256 or stronger")
    return csr


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert, self.key = cert, key
        self.pem = cert_pem(cert)
        self.pin = spki_hash(cert)

    @classmethod
    def load_or_create(
        cls,
        cert_path: Path,
        key_path: Path,
        *,
        create: bool = True,
        name: str = "nodeagent inventory CA",
    ) -> CertificateAuthority:
        if cert_path.exists() and key_path.exists():
            if key_path.stat().st_mode & 0o077:
                raise PkiError(f"{key_path} is readable by others; chmod 600 it")
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{key_path}: the CA key must be an EC key")
            return cls(cert, key)
        if not create:
            raise PkiError(f"no CA at {cert_path} / {key_path}")
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, key_pem(key))
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(cert_pem(cert))
        return cls(cert, key)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        days: float,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, hostnames: list[str], days: float = 365) -> tuple[bytes, bytes]:
        """A serving certificate for the inventory; returns (cert PEM, key PEM)."""
        key = new_key()
        sans: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
        cert = self._issue(subject, key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        return cert_pem(cert), key_pem(key)

    def sign_csr(self, csr_pem: bytes, name: str, kind: str, days: float) -> x509.Certificate:
        """Sign a CSR for `name`; the subject is ours to set, not the requester's."""
        public_key = load_csr(csr_pem).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nodeagent"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        return self._issue(subject, public_key, days, ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_client(self, name: str, kind: str, days: float = 365) -> tuple[bytes, bytes]:
        """A client identity made here (admins); returns (cert PEM, key PEM)."""
        if kind not in (NODE, *ROLES):
            raise PkiError(f"role must be one of {', '.join(ROLES)}")
        key = new_key()
        cert = self.sign_csr(make_csr(key, name), name, kind, days)
        return cert_pem(cert), key_pem(key)
