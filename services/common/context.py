"""Per-request context carried across hops: the request id, which is the trace id (an
OpenTelemetry trace id when the caller sends a W3C traceparent: services.common.tracing).

The server interceptor sets it from the incoming metadata (or a new one); outbound channels
(services.common.channels) send it on, so one request id follows a request through the mesh.
Work that outlives the request (a verification resumed after a restart, the outbox relay, the
notice consumer) runs under the trace id it stored with the work (`traced`), so the calls it
makes carry the id of the request that started it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from services.common import tracing

REQUEST_ID_METADATA_KEY = "x-request-id"
# When the caller sent the call (seconds since the epoch, as text): the server's limiter
# measures from it how long calls wait before reaching a handler (services.common.overload).
SENT_AT_METADATA_KEY = "x-idmesh-sent-at"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_request_id: ContextVar[str | None] = ContextVar("idmesh_request_id", default=None)
# The fields a use case adds to its RPC's one log line (see log_with_rpc).
_rpc_fields: ContextVar[RpcFields | None] = ContextVar("idmesh_rpc_fields", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def is_valid_request_id(value: str) -> bool:
    """1 to 64 letters, digits and '.', '_', ':', '-' (what the interceptor accepts)."""
    return bool(_VALID.match(value))


def accept_request_id(value: str | None) -> str:
    """The caller's request id if it is well formed, else a new one."""
    return value if value and _VALID.match(value) else new_request_id()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)


def current_request_id() -> str | None:
    return _request_id.get()


def trace_id_now() -> str:
    """The trace id to store with work started now: the current request's id, or a new one."""
    return current_request_id() or new_request_id()


@contextmanager
def traced(trace_id: str | None, span: str = "background", **attributes: Any) -> Iterator[None]:
    """Run a block under trace_id: outbound calls send it as the request id (and in their
    traceparent), and log lines carry it as `request_id`; when spans are exported, the block is
    a span named `span` in that trace. Without one (work stored before trace ids were kept), a
    new one."""
    trace_id = accept_request_id(trace_id)
    token = _request_id.set(trace_id)
    try:
        with (
            structlog.contextvars.bound_contextvars(request_id=trace_id),
            tracing.background(span, trace_id, **attributes),
        ):
            yield
    finally:
        _request_id.reset(token)


class RpcFields:
    """One RPC's fields for its canonical log line: added to by log_with_rpc while the RPC
    runs, written and closed by the server interceptor when it ends."""

    __slots__ = ("fields", "open")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.open = True

    def close(self) -> dict[str, Any]:
        """The fields, and no more of them: a task the RPC started that outlives it logs its
        own lines (log_with_rpc answers False to it)."""
        self.open = False
        return self.fields


def start_rpc_fields() -> RpcFields:
    """For the server interceptor: the fields of the RPC starting in this context."""
    fields = RpcFields()
    _rpc_fields.set(fields)
    return fields


def log_with_rpc(**fields: Any) -> bool:
    """Put fields in the current RPC's canonical log line (the server interceptor's `rpc`
    line), instead of a log line of their own: one line per RPC carries what the use case did.
    False outside an RPC, or after it ended (nothing is kept): the caller logs a line of its
    own then."""
    current = _rpc_fields.get()
    if current is None or not current.open:
        return False
    current.fields.update(fields)
    return True
