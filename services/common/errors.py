"""The base of every service's domain errors, and what a refusal tells the caller.

Domains raise subclasses of DomainError; each service maps its subclasses to gRPC status codes in
one table (see services.common.interceptors.ErrorTable), applied in one place. The same place
attaches the google.rpc details every refusal carries (the error model of Google APIs):

- ErrorInfo: `reason` (a stable UPPER_SNAKE name, documented in the ErrorReason enum of
  protos/idmesh/common/v1/errors.proto), domain "idmesh", and `metadata` (for example
  attempts_left, field, state);
- RetryInfo: `retry_after` (on RESOURCE_EXHAUSTED, and on UNAVAILABLE when the store cannot be
  reached: StoreUnavailable);
- BadRequest: one field violation naming `field` (on INVALID_ARGUMENT).

Each class says its reason once (the class attribute); a raise site may give a narrower one.
Messages never echo more than a short prefix of a caller's value: quote() shortens it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

ERROR_DOMAIN = "idmesh"
# The most characters of a caller's value a refusal repeats (quote()).
QUOTE_LIMIT = 32
# A field path at the start of a message: "user_id", "events[2].event_id", "rows[0].line".
_LEADING_FIELD = re.compile(r"^([a-z][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z][a-z0-9_]*(?:\[\d+\])?)*)[ :]")


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of value shortened to its first `limit` characters, saying how long it was:
    quote("abc") == "'abc'"; a 1 MB value becomes "'xxxx...' (1048576 characters)"."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class DomainError(Exception):
    """A refusal a person can act on: `message` says what is wrong and what to do.

    reason: the stable machine-readable reason (ErrorInfo.reason); the class's REASON unless
    given. field: the request field at fault (BadRequest, and ErrorInfo metadata "field").
    retry_after: when to try again (RetryInfo). metadata: more ErrorInfo metadata (string
    values). trailers: extra trailing metadata, for the few values clients read from trailers.
    """

    REASON: ClassVar[str] = "UNSPECIFIED"  # every concrete error class names its own
    # The field at fault, when not given, is the field path the message starts with.
    FIELD_FROM_MESSAGE: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str | None = None,
        retry_after: timedelta | None = None,
        metadata: Mapping[str, object] | None = None,
        trailers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.REASON
        if field is None and self.FIELD_FROM_MESSAGE:
            leading = _LEADING_FIELD.match(message)
            field = leading.group(1) if leading else ""
        self.field = field
        self.retry_after = retry_after
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        if field is not None:
            self.metadata.setdefault("field", field)
        self.trailers: dict[str, str] = dict(trailers or {})


class InvalidInput(DomainError):
    """Malformed input: nothing was changed. Shared because every service validates input.

    The house style starts the message with the field it is about ("phone_number is empty: ...",
    "events[2].event_id is ..."); that leading path is the field unless `field` is given."""

    REASON = "INVALID_FIELD"
    FIELD_FROM_MESSAGE = True


class Unauthenticated(DomainError):
    """The caller did not say who it is."""

    REASON = "UNAUTHENTICATED"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    REASON = "CALLER_NOT_ALLOWED"


class StoreUnavailable(DomainError):
    """The service's database cannot be reached now (connection refused or lost, a server
    starting up, in recovery or shutting down, no pooled connection in time; for SQLite a
    file locked past the busy timeout, unwritable or gone): a transient fault, not a bug.
    Answered UNAVAILABLE with RetryInfo; nothing of the call was committed."""

    REASON = "STORE_UNAVAILABLE"
    RETRY_AFTER = timedelta(seconds=1)

    def __init__(self, message: str, *, retry_after: timedelta | None = None) -> None:
        super().__init__(message, retry_after=retry_after or self.RETRY_AFTER)


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection was lost while the transaction was committing: it may or may not have
    been committed. Answered UNAVAILABLE with RetryInfo: the caller retries with the same
    idempotency key, and the retry finds what happened (the stored outcome, or nothing)."""

    REASON = "COMMIT_OUTCOME_UNKNOWN"
