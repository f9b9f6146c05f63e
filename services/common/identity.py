"""Who is calling: a typed Caller parsed from a SPIFFE-style identity URI.

    spiffe://idmesh.local/messenger/<id>            a messenger's gateway (service role)
    spiffe://idmesh.local/messenger/<id>/frontend   a messenger's front end
    spiffe://idmesh.local/messenger/<id>/admin      a messenger's operations staff
    spiffe://idmesh.local/operator/<id>             an operator's registry (service role)
    spiffe://idmesh.local/operator/<id>/admin       an operator's own systems
    spiffe://idmesh.local/notifier                  the notifier

Until mutual TLS lands the identity travels in the request metadata key IDENTITY_METADATA_KEY,
read in one place (the server interceptor); with mTLS it comes from the peer certificate's URI SAN.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from services.common.errors import Forbidden, InvalidInput, Unauthenticated, quote

TRUST_DOMAIN = "idmesh.local"
IDENTITY_METADATA_KEY = "x-idmesh-identity"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class Kind(StrEnum):
    MESSENGER = "messenger"
    OPERATOR = "operator"
    NOTIFIER = "notifier"


class Role(StrEnum):
    SERVICE = "service"
    ADMIN = "admin"
    FRONTEND = "frontend"


@dataclass(frozen=True, slots=True)
class Caller:
    kind: Kind
    id: str
    role: Role = Role.SERVICE

    @property
    def uri(self) -> str:
        path = f"{self.kind}" if self.kind is Kind.NOTIFIER else f"{self.kind}/{self.id}"
        if self.role is not Role.SERVICE:
            path += f"/{self.role}"
        return f"spiffe://{TRUST_DOMAIN}/{path}"

    def __str__(self) -> str:
        return self.uri


def validate_id(value: str, what: str) -> str:
    if not _ID.match(value or ""):
        raise InvalidInput(
            f"{what} {quote(value)} is not valid: use 1 to 64 lowercase letters, digits and '-'"
        )
    return value


def parse_identity(uri: str) -> Caller:
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        raise Unauthenticated(f"identity {quote(uri)} is not in the trust domain {TRUST_DOMAIN}")
    parts = uri[len(prefix) :].split("/")
    try:
        kind = Kind(parts[0])
    except ValueError:
        raise Unauthenticated(
            f"identity {quote(uri)} names an unknown kind {quote(parts[0])}"
        ) from None
    if kind is Kind.NOTIFIER:
        if len(parts) != 1:
            raise Unauthenticated(f"identity {quote(uri)} is not a notifier identity")
        return Caller(kind, "notifier")
    if len(parts) not in (2, 3) or not _ID.match(parts[1]):
        raise Unauthenticated(f"identity {quote(uri)} does not name a valid {kind} id")
    role = Role.SERVICE
    if len(parts) == 3:
        try:
            role = Role(parts[2])
        except ValueError:
            raise Unauthenticated(
                f"identity {quote(uri)} names an unknown role {quote(parts[2])}"
            ) from None
        if role is Role.SERVICE:
            raise Unauthenticated(f"identity {quote(uri)}: the service role has no suffix")
    return Caller(kind, parts[1], role)


_current_caller: ContextVar[Caller | None] = ContextVar("idmesh_caller", default=None)


def set_current_caller(caller: Caller | None) -> None:
    _current_caller.set(caller)


def current_caller() -> Caller | None:
    return _current_caller.get()


def require_caller(kind: Kind, role: Role = Role.SERVICE, *, id: str | None = None) -> Caller:
    """The caller of the current RPC, which must be of this kind and role (and, given `id`,
    that very messenger or operator: a service answers only its own)."""
    caller = _current_caller.get()
    if caller is None:
        raise Unauthenticated(
            f"no caller identity: this call is for a {kind} ({role} role); "
            f"send the {IDENTITY_METADATA_KEY} metadata"
        )
    if caller.kind is not kind or caller.role is not role:
        raise Forbidden(f"{caller.uri} may not call this: it is for a {kind} ({role} role)")
    if id is not None and caller.id != id:
        raise Forbidden(
            f"{caller.uri} may not call this: it serves {kind} {id!r} ({role} role) only"
        )
    return caller
