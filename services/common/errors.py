"""The base of every service's domain errors.

Domains raise subclasses of DomainError; each service maps its subclasses to gRPC status codes in
one table (see services.common.interceptors.ErrorTable), applied in one place.
"""

from __future__ import annotations

from collections.abc import Mapping


class DomainError(Exception):
    """A refusal a person can act on: `message` says what is wrong and what to do.

    `trailers` are extra trailing metadata for the caller (for example a valid range).
    """

    def __init__(self, message: str, *, trailers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.trailers: dict[str, str] = dict(trailers or {})


class InvalidInput(DomainError):
    """Malformed input: nothing was changed. Shared because every service validates input."""


class Unauthenticated(DomainError):
    """The caller did not say who it is."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""
