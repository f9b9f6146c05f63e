"""The one server interceptor every service installs.

Per RPC it:
- reads the call's metadata once (request id, sent-at time, and the development identity);
- accepts or creates the request id and binds it, with the method and caller, into
  structlog.contextvars (so every log line of the RPC carries them);
- resolves the caller's identity (IdentityResolver) and hands it to handlers via
  services.common.identity.current_caller();
- maps domain errors to status codes through the service's ErrorTable, in this one place, with
  the google.rpc details of the refusal (ErrorInfo always; RetryInfo on RESOURCE_EXHAUSTED;
  BadRequest on INVALID_ARGUMENT: see services.common.errors); an unexpected exception is
  logged and answered INTERNAL with the request id, never UNKNOWN;
- refuses a request (each message of a request stream) with a field over its size bound before
  any work (services.common.bounds);
- writes one canonical log line: method, status code, duration, and the fields the use case
  added with services.common.context.log_with_rpc (what it did: one line per RPC).

A unary call beyond the concurrency limit (services.common.overload) is refused first of all,
before any of that: RESOURCE_EXHAUSTED with its ErrorInfo and RetryInfo built once per retry
delay, counted in the metrics, logged only in the limiter's summary line (rpc.shed). Under
overload most calls take this path, and its cost decides how far past its capacity a process
still answers in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from services.common.bounds import check_bounds
from services.common.context import (
    REQUEST_ID_METADATA_KEY,
    SENT_AT_METADATA_KEY,
    RpcFields,
    accept_request_id,
    is_valid_request_id,
    set_request_id,
    start_rpc_fields,
)
from services.common.errors import (
    ERROR_DOMAIN,
    DomainError,
    Forbidden,
    InvalidInput,
    StoreUnavailable,
    Unauthenticated,
)
from services.common.identity import (
    IDENTITY_METADATA_KEY,
    Caller,
    parse_identity,
    set_current_caller,
)
from services.common.metrics import observe_rpc
from services.common.overload import ConcurrencyLimiter, Overloaded, limited
from services.common.ratelimit import RateLimited
from services.common.status import STATUS_DETAILS_KEY
from services.common.tracing import (
    TRACEPARENT_METADATA_KEY,
    server_span,
    set_status_code,
    trace_id_of,
)

log = structlog.get_logger("idmesh.rpc")


@dataclass(frozen=True, slots=True)
class CallMetadata:
    """What the interceptor reads from a call's metadata, in one walk (the first value of each
    key): the request id, the caller's send time, the development identity header."""

    request_id: str | None = None
    sent_at: str | None = None
    identity: str | None = None
    traceparent: str | None = None  # W3C trace context (services.common.tracing)


# Who is calling: from the transport (tls.tls_identity) or, in development, the metadata.
IdentityResolver = Callable[[grpc.aio.ServicerContext[Any, Any], CallMetadata], Caller | None]

_COMMON_ERRORS: dict[type[BaseException], grpc.StatusCode] = {
    NotImplementedError: grpc.StatusCode.UNIMPLEMENTED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    # the database cannot be reached now (or a commit's outcome was lost): transient, retry
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


class ErrorTable:
    """A service's domain error types -> gRPC status codes (the most specific class wins)."""

    def __init__(self, table: Mapping[type[BaseException], grpc.StatusCode]) -> None:
        self._table = {**_COMMON_ERRORS, **table}

    def code_for(self, exc: BaseException) -> grpc.StatusCode | None:
        for klass in type(exc).__mro__:
            code = self._table.get(klass)
            if code is not None:
                return code
        return None


def metadata_identity(
    context: grpc.aio.ServicerContext[Any, Any], metadata: CallMetadata
) -> Caller | None:
    """The development identity resolver: the caller names itself in request metadata."""
    return None if metadata.identity is None else parse_identity(metadata.identity)


def read_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> CallMetadata:
    """The call's metadata that the interceptor uses, in one walk."""
    request_id = sent_at = identity = traceparent = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA_KEY:
            request_id = request_id if request_id is not None else str(value)
        elif key == SENT_AT_METADATA_KEY:
            sent_at = sent_at if sent_at is not None else str(value)
        elif key == IDENTITY_METADATA_KEY:
            identity = identity if identity is not None else str(value)
        elif key == TRACEPARENT_METADATA_KEY:
            traceparent = traceparent if traceparent is not None else str(value)
    return CallMetadata(request_id, sent_at, identity, traceparent)


def request_id_of(metadata: CallMetadata) -> str:
    """The call's request id: the caller's if it sent a well-formed one, else the trace id of
    its traceparent (so that log lines and spans share it), else a new one."""
    request_id = metadata.request_id
    if request_id is None or not is_valid_request_id(request_id):
        request_id = trace_id_of(metadata.traceparent)
    return accept_request_id(request_id)


def _sent_at(metadata: CallMetadata) -> float | None:
    """When the caller says it sent the call (x-idmesh-sent-at), if it says so legibly."""
    if metadata.sent_at is None:
        return None
    try:
        return float(metadata.sent_at)
    except ValueError:
        return None


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        errors: ErrorTable,
        identity: IdentityResolver = metadata_identity,
        limiter: ConcurrencyLimiter | None = None,
    ) -> None:
        self._errors = errors
        self._identity = identity
        self._limiter = limiter
        # method -> (the servicer's handler, its wrapped handler)
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        # a refusal (one object per retry delay) -> its message and trailers
        self._shed_replies: dict[int, tuple[Overloaded, str, tuple[tuple[str, Any], ...]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # The wrapped handler is built once per method (the request id is read per call, from
        # the call's metadata): the common path allocates no handler and no closure.
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_handler(handler, method)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            limiter = self._limiter if self._limiter is not None and limited(method) else None
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, streaming=False, limiter=limiter),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, streaming=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # bidirectional streams: none in idmesh's APIs

    def _enter(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request_id: str,
        metadata: CallMetadata,
    ) -> None:
        set_request_id(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        caller = self._identity(context, metadata)
        set_current_caller(caller)
        if caller is not None:
            structlog.contextvars.bind_contextvars(caller=caller.uri)

    async def _fail(
        self, exc: BaseException, context: grpc.aio.ServicerContext[Any, Any], request_id: str
    ) -> grpc.StatusCode:
        """Abort the RPC for exc (raises grpc's abort exception)."""
        code = self._errors.code_for(exc)
        if isinstance(exc, DomainError) and code is not None:
            await _abort(context, code, exc, request_id)
        if isinstance(exc, NotImplementedError):  # a generated servicer's method not overridden
            await _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                DomainError(
                    "this method is not implemented by this server", reason="UNIMPLEMENTED"
                ),
                request_id,
            )
        log.error("rpc.unexpected_error", exc_info=exc)
        await _abort(
            context,
            grpc.StatusCode.INTERNAL,
            DomainError(f"internal error; quote request id {request_id}", reason="INTERNAL"),
            request_id,
        )
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(
        self, method: str, started: float, code: grpc.StatusCode, fields: RpcFields
    ) -> None:
        elapsed = time.perf_counter() - started
        observe_rpc(method, code.name, elapsed)
        set_status_code(code.name)
        line = fields.close()
        line["status"] = code.name
        line["duration_ms"] = round(elapsed * 1000, 3)
        log.info("rpc", **line)
        structlog.contextvars.unbind_contextvars("request_id", "method", "caller")

    def _wrap_unary(
        self,
        behavior: Callable[..., Awaitable[Any]],
        method: str,
        *,
        streaming: bool,
        limiter: ConcurrencyLimiter | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        """A unary response; streaming: the request is a stream (each message is checked)."""

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = read_metadata(context)
            if limiter is not None:
                limiter.arrived(method, context.peer(), _sent_at(metadata))
            if limiter is not None and not limiter.try_acquire():
                # refused before any work: nothing changed
                await self._shed(context, method, limiter, started)
            code = grpc.StatusCode.OK
            fields = start_rpc_fields()
            request_id = request_id_of(metadata)
            with server_span(method, metadata.traceparent, request_id):
                try:
                    self._enter(context, method, request_id, metadata)
                    if streaming:
                        request = _bounded(request)
                    else:
                        check_bounds(request)
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    if _is_abort(exc):
                        code = _context_code(context)
                        raise
                    code = self._errors.code_for(exc) or grpc.StatusCode.INTERNAL
                    await self._fail(exc, context, request_id)
                finally:
                    if limiter is not None:  # admitted
                        limiter.release(time.perf_counter() - started)
                    self._finish(method, started, code, fields)

        return wrapped

    async def _shed(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        limiter: ConcurrencyLimiter,
        started: float,
    ) -> None:
        """Refuse a call beyond the limit, cheaply (see the module's doc); raises grpc's abort
        exception."""
        refusal = limiter.refusal(method)
        reply = self._shed_replies.get(id(refusal))
        if reply is None or reply[0] is not refusal:
            if len(self._shed_replies) > 256:
                self._shed_replies.clear()
            status = status_details(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            trailers = ((STATUS_DETAILS_KEY, status.SerializeToString()),)
            reply = self._shed_replies[id(refusal)] = (refusal, refusal.message, trailers)
        observe_rpc(method, "RESOURCE_EXHAUSTED", time.perf_counter() - started)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, reply[1], trailing_metadata=reply[2]
        )

    def _wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            metadata = read_metadata(context)
            request_id = request_id_of(metadata)
            fields = start_rpc_fields()
            with server_span(method, metadata.traceparent, request_id):
                try:
                    self._enter(context, method, request_id, metadata)
                    check_bounds(request)
                    async for item in behavior(request, context):
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    if _is_abort(exc):
                        code = _context_code(context)
                        raise
                    code = self._errors.code_for(exc) or grpc.StatusCode.INTERNAL
                    await self._fail(exc, context, request_id)
                finally:
                    self._finish(method, started, code, fields)

        return wrapped


def status_details(code: grpc.StatusCode, exc: DomainError) -> status_pb2.Status:
    """The google.rpc.Status of a refusal: code, message and details (see module doc)."""
    details = [
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata)
    ]
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(exc.retry_after)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field or "", description=exc.message, reason=exc.reason
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=packed)


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    exc: DomainError,
    request_id: str,
) -> None:
    status = status_details(code, exc)
    trailers = (
        (REQUEST_ID_METADATA_KEY, request_id),
        *exc.trailers.items(),
        (STATUS_DETAILS_KEY, status.SerializeToString()),
    )
    await context.abort(code, exc.message, trailing_metadata=trailers)


async def _bounded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose every message is checked against the size bounds first."""
    async for request in requests:
        check_bounds(request)
        yield request


def _is_abort(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AbortError)


def _context_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN
