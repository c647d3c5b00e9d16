"""Who may call what: one authoriser, by certificate role, for every gRPC service we serve.

The inventory and the agent's TCP API both authenticate callers by client
certificate: CN names the node id or the admin, OU its kind (`node`) or admin role
(`viewer`, `operator`, `admin`). Each service gives this module its permission
table, one entry per method; a method missing from the table is a start-up error,
never an open door. Values from callers are checked with `validate_text` before
they reach a store, a file or a log line.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import ServiceDescriptor

ROLES = ("viewer", "operator", "admin")
NODE = "node"
VIEW = frozenset({"viewer", "operator", "admin"})
OPERATE = frozenset({"operator", "admin"})
ADMIN = frozenset({"admin"})
# method -> the kinds allowed to call it; None: no certificate needed (enrolment, health)
Permissions = Mapping[str, frozenset[str] | None]


class RoleError(ValueError):
    """A certificate that carries no nodeagent role."""


@dataclass(frozen=True)
class Principal:
    kind: str  # node | viewer | operator | admin
    name: str  # node id or admin name
    serial: int = 0

    @property
    def actor(self) -> str:
        return f"node:{self.name}" if self.kind == NODE else f"admin:{self.name}"


def principal_of(cert: x509.Certificate) -> Principal:
    def first(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    kind = first(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if kind not in (NODE, *ROLES):
        raise RoleError(f"certificate has no nodeagent role (OU={kind!r})")
    return Principal(kind, first(NameOID.COMMON_NAME), cert.serial_number)


@lru_cache(maxsize=65536)
def _principal_from_pem(pem: bytes) -> Principal:
    return principal_of(x509.load_pem_x509_certificate(pem))


LOCAL_ROOT = Principal("admin", "root@local")

# the caller of the RPC being served: set by the Authorizer before the servicer runs
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def caller() -> Principal:
    """The authenticated caller of the current RPC (only for methods that need one)."""
    principal = principal_var.get()
    assert principal is not None, "caller() in a method that needs no certificate"
    return principal


def check_covers(service: ServiceDescriptor, permissions: Permissions) -> None:
    """Refuse to serve a service whose table misses a method: no default-open RPC."""
    missing = [m.name for m in service.methods if m.name not in permissions]
    if missing:
        raise RuntimeError(f"{service.full_name}: no permission entry for {', '.join(missing)}")


class Authorizer:
    """The `authorize` hook of api.handlers.service_handler for one permission table."""

    def __init__(
        self,
        permissions: Permissions,
        is_revoked: Callable[[int], bool] | None = None,
        *,
        trust_local: bool = False,
    ) -> None:
        self.permissions = permissions
        self.is_revoked = is_revoked
        self.trust_local = trust_local

    async def __call__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        allowed = self.permissions[method]
        if self.trust_local and context.peer().startswith("unix:"):
            # the agent's unix socket is root-only (0600 in a 0700 directory): its caller
            # is root on this node, who may do anything the agent can
            principal_var.set(LOCAL_ROOT)
            return
        pems = context.auth_context().get("x509_pem_cert")
        principal = None
        if pems:
            try:
                principal = _principal_from_pem(bytes(pems[0]))
            except ValueError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if principal is not None and self.is_revoked and self.is_revoked(principal.serial):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate {principal.serial:x} of {principal.actor} has been revoked",
            )
        principal_var.set(principal)
        if allowed is None:
            return
        if principal is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs a client certificate issued by this inventory",
            )
        assert principal is not None
        if principal.kind not in allowed:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal.kind} {principal.name!r} may not call {method}",
            )


def validate_text(value: str, what: str, limit: int = 253) -> str:
    """A caller's string fit for a store, a file or a log line: bounded, no control characters."""
    if len(value) > limit or not value.isprintable():
        raise ValueError(f"{what}: at most {limit} printable characters")
    return value
