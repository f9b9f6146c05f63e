"""Reading a refusal's google.rpc details on the client side (the CLI, the relay, tests).

The server side attaches them in services.common.interceptors; a client in any language reads
the same `grpc-status-details-bin` trailer (google.rpc.Status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The reason a service gives when it sheds a call at its concurrency limit (overload.py).
OVERLOADED = "OVERLOADED"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a refusal says beyond its code and message; empty when it carried no details."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay: timedelta | None = None
    field_violations: tuple[tuple[str, str], ...] = ()  # (field, description)


def status_of(exc: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a refusal carries in its trailers, if any."""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def error_details(exc: grpc.aio.AioRpcError | grpc.RpcError) -> ErrorDetails:
    """The ErrorInfo, RetryInfo and BadRequest details of a failed call."""
    status = status_of(exc)
    if status is None:
        return ErrorDetails()
    reason = domain = ""
    metadata: dict[str, str] = {}
    retry_delay: timedelta | None = None
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToTimedelta()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return ErrorDetails(
        reason=reason,
        domain=domain,
        metadata=metadata,
        retry_delay=retry_delay,
        field_violations=tuple(violations),
    )


def shed_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """Seconds to wait before trying again when exc is a call the service shed (nothing was
    done: RESOURCE_EXHAUSTED, reason OVERLOADED); None for any other refusal."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    details = error_details(exc)
    if details.reason != OVERLOADED:
        return None
    return details.retry_delay.total_seconds() if details.retry_delay is not None else 0.05


async def honouring_overload(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """Make the call as a well-behaved client does: while the service sheds it (OVERLOADED:
    nothing was done, so any call may be repeated), wait the delay it asks for and call again,
    at most `attempts` times in all; the last refusal is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            delay = shed_delay(exc)
            if delay is None or attempt == attempts:
                raise
            if on_wait is not None:
                on_wait(delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
