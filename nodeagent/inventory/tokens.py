"""Bootstrap tokens: `<id>.<secret>`, like kubeadm's.

The id is a lookup key; the secret (128 bits from the OS's CSPRNG) is stored
only as its SHA-256 (a fast hash is right for a random secret: there is nothing
to brute-force) and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{32})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class TokenError(ValueError):
    pass


def generate() -> tuple[str, str, str]:
    """Return (id, full token, secret hash)."""
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return token_id, f"{token_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(token: str) -> tuple[str, str]:
    """(id, secret) of a well-formed token; anything else is rejected without detail."""
    m = _TOKEN_RE.match(token.strip())
    if not m:
        raise TokenError("malformed bootstrap token (expected <6 chars>.<32 chars>)")
    return m.group(1), m.group(2)


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def redact(token: str) -> str:
    """What may appear in a log: the id, never the secret."""
    return token.split(".", 1)[0] + ".<redacted>" if "." in token else "<redacted>"
