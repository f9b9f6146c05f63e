"""OpenTelemetry traces across the mesh: W3C trace context on every hop, spans when exporting.

Every call carries a `traceparent` (W3C trace context) beside x-request-id, and a request's id
is its trace id: the server takes the trace id of the caller's traceparent as the request id,
so a log line (`request_id`) and a span find each other in any tracing backend. A new request
id (services.common.context.new_request_id) is 32 hex digits, a valid trace id.

Exporting is off by default and configured the standard way: OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) sends spans over OTLP/gRPC, OTEL_TRACES_EXPORTER=console
prints them; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the process (the service's name
by default), OTEL_TRACES_SAMPLER chooses the sampler, OTEL_BSP_* tune the batching, and
OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turns it off. With exporting off no span is
made: a call costs the traceparent's parse and format only.

Spans, when on: one per RPC on each side (SERVER in the interceptor, CLIENT in the channels),
one for work that outlives a call (`background`: a verification resumed after a restart, the
outbox relay's publish, a notice applied at a gateway), and one per store transaction
(`store_span`). Work that outlives a call continues the trace of the call that started it,
by the trace id stored with it.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable, Coroutine, Mapping
from contextlib import nullcontext
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from services.common.config import ConfigError

__all__ = [
    "TRACEPARENT_METADATA_KEY",
    "Span",
    "background",
    "configure",
    "enabled",
    "end_client_span",
    "exporter_name",
    "is_trace_id",
    "outbound_traceparent",
    "record",
    "server_span",
    "set_status_code",
    "shutdown",
    "spanned",
    "start_client_span",
    "store_span",
    "trace_id_of",
    "traceparent_of",
]

TRACEPARENT_METADATA_KEY = "traceparent"
_HEX = frozenset("0123456789abcdef")

# Set by configure(): the tracer while spans are exported, None while they are not.
_tracer: trace.Tracer | None = None
_provider: Any = None
_NO_SPAN = nullcontext()  # reusable: what a span is while not exporting


def exporter_name(env: Mapping[str, str] | None = None) -> str | None:
    """What OTEL_* ask to export to: "otlp", "console", or None (off, the default)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen in {"none", ""}:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return "otlp" if chosen == "" and endpoint else None
    if chosen not in {"otlp", "console"}:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={chosen!r}: idmesh exports spans to otlp, console or none"
        )
    return chosen


def configure(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Start exporting spans if OTEL_* ask for it (see the module's doc); whether it does."""
    global _tracer, _provider
    exporter = exporter_name(env)
    if exporter is None:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    environ = os.environ if env is None else env
    resource = Resource.create(
        {SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name}
    )  # OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create
    provider = TracerProvider(resource=resource)
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("idmesh")
    return True


def shutdown() -> None:
    """Export what is buffered and stop (at the process's end)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


# --- trace context on the wire ---------------------------------------------------------------


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 lowercase hex digits) of a well-formed W3C traceparent, else None."""
    if not traceparent or len(traceparent) < 55:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    trace_id, span_id, flags = parts[1].lower(), parts[2].lower(), parts[3].lower()
    if len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2:
        return None
    if not _HEX.issuperset(trace_id + span_id + flags):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id


def is_trace_id(value: str) -> bool:
    return len(value) == 32 and _HEX.issuperset(value) and value != "0" * 32


def outbound_traceparent(request_id: str) -> str:
    """The traceparent of a call made now: the current span's when spans are made, else one
    that carries the request id as the trace id (a new parent span id, not sampled)."""
    if _tracer is not None:
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            return traceparent_of(current)
    trace_id = request_id if is_trace_id(request_id) else f"{random.getrandbits(128):032x}"
    return f"00-{trace_id}-{random.getrandbits(64) | 1:016x}-00"


def _remote_parent(traceparent: str | None, trace_id: str | None) -> Any:
    """An OpenTelemetry context whose parent is the caller's span (traceparent), or a span of
    trace trace_id (work resumed from a stored trace id), or none (a new trace)."""
    if traceparent and trace_id_of(traceparent):
        parts = traceparent.split("-")
        span_context = SpanContext(
            trace_id=int(parts[1], 16),
            span_id=int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3], 16) & 1),
        )
    elif trace_id and is_trace_id(trace_id):
        span_context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=random.getrandbits(64) | 1,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    else:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context), otel_context.Context())


# --- spans -----------------------------------------------------------------------------------


class _Span:
    """A span as a context manager, sync or async: started and made current on entry, ended on
    exit (an exception recorded unless a status was set already)."""

    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_span", "_token")

    def __init__(
        self, name: str, kind: SpanKind, parent: Any, attributes: Mapping[str, Any] | None
    ) -> None:
        self._name, self._kind, self._parent, self._attributes = name, kind, parent, attributes

    def __enter__(self) -> Span:
        assert _tracer is not None
        self._span = _tracer.start_span(
            self._name, context=self._parent, kind=self._kind, attributes=self._attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, self._parent))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        span = self._span
        otel_context.detach(self._token)
        if exc is not None:
            status = getattr(span, "status", None)
            if status is None or status.status_code is StatusCode.UNSET:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self.__exit__(kind, exc, tb)


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, rpc = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}


def server_span(method: str, traceparent: str | None, request_id: str) -> Any:
    """The SERVER span of an RPC (a no-op context when not exporting)."""
    if _tracer is None:
        return _NO_SPAN
    return _Span(
        method.lstrip("/"),
        SpanKind.SERVER,
        _remote_parent(traceparent, request_id),
        _rpc_attributes(method),
    )


def start_client_span(method: str) -> Span | None:
    """The CLIENT span of an outbound call, under the current span, or None when not exporting;
    end it with end_client_span when the call is done."""
    if _tracer is None:
        return None
    return _tracer.start_span(
        method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
    )


def traceparent_of(span: Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def end_client_span(span: Span, code_name: str) -> None:
    span.set_attribute("rpc.grpc.status_code", code_name)
    if code_name != "OK":
        span.set_status(Status(StatusCode.ERROR, code_name))
    span.end()


def background(name: str, trace_id: str | None, **attributes: Any) -> Any:
    """A span for work that outlives a call, in the trace of the call that started it (the
    trace id stored with the work); under the current span if one is open."""
    if _tracer is None:
        return _NO_SPAN
    current = trace.get_current_span().get_span_context()
    if current.is_valid and (trace_id is None or f"{current.trace_id:032x}" == trace_id):
        parent = otel_context.get_current()
    else:
        parent = _remote_parent(None, trace_id)
    return _Span(name, SpanKind.INTERNAL, parent, attributes or None)


def record(name: str, trace_id: str | None, start_ns: int, **attributes: Any) -> None:
    """A span of trace trace_id that began at start_ns (time.time_ns()) and ends now: work done
    for several traces at once (a batch of notices applied in one transaction), one span each."""
    if _tracer is None or not trace_id or not is_trace_id(trace_id):
        return
    span = _tracer.start_span(
        name,
        context=_remote_parent(None, trace_id),
        kind=SpanKind.INTERNAL,
        attributes=attributes or None,
        start_time=start_ns,
    )
    span.end()


def store_span(name: str) -> Any:
    """A span around a store transaction, under the current span (none outside a trace)."""
    if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return _NO_SPAN
    return _Span(name, SpanKind.INTERNAL, otel_context.get_current(), None)


_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"}
)


P = ParamSpec("P")
R = TypeVar("R")


def spanned(
    name: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A coroutine function run in a store span (store_span(name))."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None:
                return await fn(*args, **kwargs)
            with store_span(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


def set_status_code(code_name: str) -> None:
    """Record an RPC's gRPC status on the current span."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code_name)
    # A refusal of a request (a client's error) is not the server's failure.
    if code_name in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code_name))
    else:
        span.set_status(Status(StatusCode.OK))
