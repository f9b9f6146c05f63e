"""Outbound gRPC channels: keepalive options, the retry policy, and the metadata every hop
carries.

Every call sends the current request id (or a new one) and this process's identity. Deadlines
are not propagated by gRPC Python: callers pass `timeout=` themselves.

Every call also says when it was sent (x-idmesh-sent-at): the server's load shedding measures from
it how long calls wait before reaching a handler (services.common.overload).

The channel retries, by gRPC's service-config retry policy, the calls that are safe to repeat
(reads, and writes idempotent by nature or by key: IDEMPOTENT_METHODS) when they fail
UNAVAILABLE, a few times with a short backoff, within the call's deadline. Anything else is the
caller's decision (the gateway's verification loop, the relay, the notice consumer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import grpc

from services.common.context import (
    REQUEST_ID_METADATA_KEY,
    SENT_AT_METADATA_KEY,
    current_request_id,
    new_request_id,
)
from services.common.identity import IDENTITY_METADATA_KEY, Caller
from services.common.tls import TlsFiles
from services.common.tracing import (
    TRACEPARENT_METADATA_KEY,
    Span,
    end_client_span,
    outbound_traceparent,
    start_client_span,
    trace_id_of,
    traceparent_of,
)

KEEPALIVE_OPTIONS: Sequence[tuple[str, int | str]] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Callers retry with their own backoff; the channel's reconnect backoff (up to 120 s by
    # default) must not add to it after a peer comes back.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
# The server side: accept the clients' pings above.
SERVER_KEEPALIVE_OPTIONS: Sequence[tuple[str, int | str]] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)


# Calls safe to repeat: (service, methods); an empty tuple means every method of the service.
IDEMPOTENT_METHODS: Sequence[tuple[str, Sequence[str]]] = (
    ("grpc.health.v1.Health", ("Check",)),
    # VerifySubscriber is idempotent by its request id; Publish by event id; Ack is monotonic.
    ("idmesh.registry.v1.RegistryService", ("VerifySubscriber", "CheckNumberReassigned")),
    (
        "idmesh.registry.v1.RegistryAdminService",
        ("GetSubscriber", "ListMessengers", "ListAuditRecords", "RegisterMessenger"),
    ),
    ("idmesh.notifier.v1.NotifierService", ("Publish", "Ack", "GetDeliveryStatus")),
    (
        "idmesh.gateway.v1.GatewayService",
        ("GetIdentification", "CheckAccess", "CheckNumberReassigned"),
    ),
    ("idmesh.gateway.v1.GatewayAdminService", ("ResolveOperator",)),
)
RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config() -> str:
    """The channels' gRPC service config (JSON): the retry policy of IDEMPOTENT_METHODS."""
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_METHODS
        for method in methods
    ]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": dict(RETRY_POLICY)}]})


def _with_metadata(details: Any, identity: Caller | None) -> tuple[Any, Span | None]:
    """The call's details with idmesh's metadata added, and its CLIENT span (None when spans
    are not exported)."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    given = metadata.get(REQUEST_ID_METADATA_KEY)
    # The caller's own trace context wins: its request id, else its traceparent's trace id.
    request_id = (
        str(given)
        if given
        else trace_id_of(str(metadata.get(TRACEPARENT_METADATA_KEY) or ""))
        or current_request_id()
        or new_request_id()
    )
    if not given:
        metadata.add(REQUEST_ID_METADATA_KEY, request_id)
    span = start_client_span(_method_name(details.method))
    if TRACEPARENT_METADATA_KEY not in metadata:
        traceparent = traceparent_of(span) if span else outbound_traceparent(request_id)
        metadata.add(TRACEPARENT_METADATA_KEY, traceparent)
    if identity is not None and IDENTITY_METADATA_KEY not in metadata:
        metadata.add(IDENTITY_METADATA_KEY, identity.uri)
    if SENT_AT_METADATA_KEY not in metadata:
        metadata.add(SENT_AT_METADATA_KEY, sent_at())
    return details._replace(metadata=metadata), span


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


def _ending(span: Span | None, call: Any) -> Any:
    """call, with span ended (and given the call's status) once the call is done."""
    if span is not None:
        call.add_done_callback(lambda done: _tasks.spawn(_end_span(span, done)))
    return call


async def _end_span(span: Span, call: Any) -> None:
    try:
        name = (await call.code()).name  # done: answers at once
    except Exception:  # cancelled before it had a status
        name = "CANCELLED"
    end_client_span(span, name)


class _Tasks:
    """Tasks spawned from callbacks, kept referenced until they finish."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._running.add(task)
        task.add_done_callback(self._running.discard)


_tasks = _Tasks()


def sent_at() -> str:
    """The value of the x-idmesh-sent-at metadata for a call sent now."""
    return f"{time.time():.6f}"


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, identity: Caller | None) -> None:
        self._identity = identity

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details, span = _with_metadata(details, self._identity)
        return _ending(span, await continuation(details, request))


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, identity: Caller | None) -> None:
        self._identity = identity

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        details, span = _with_metadata(details, self._identity)
        return _ending(span, await continuation(details, request))


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, identity: Caller | None) -> None:
        self._identity = identity

    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        details, span = _with_metadata(details, self._identity)
        return _ending(span, await continuation(details, request_iterator))


def open_channel(
    target: str,
    *,
    identity: Caller | None,
    tls: TlsFiles | None = None,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """A channel to target ("host:port") that sends the request id on every call.

    With tls, the channel is mutual TLS and the certificate is the caller's identity (identity
    is then only what this process expects to be, and is not sent). Without it (development
    only), identity travels in metadata. `options` add to (and override) the keepalive,
    reconnect and retry defaults."""
    merged: dict[str, int | str] = dict(KEEPALIVE_OPTIONS)
    merged["grpc.enable_retries"] = 1
    merged["grpc.service_config"] = service_config()
    merged.update(options)
    if tls is not None:
        return grpc.aio.secure_channel(
            target,
            tls.channel_credentials(),
            options=list(merged.items()),
            interceptors=[_UnaryUnary(None), _UnaryStream(None), _StreamUnary(None)],
        )
    return grpc.aio.insecure_channel(
        target,
        options=list(merged.items()),
        # grpc.aio files each interceptor under the first call kind it implements only, so each
        # kind needs its own object.
        interceptors=[_UnaryUnary(identity), _UnaryStream(identity), _StreamUnary(identity)],
    )
