"""The shared server bootstrap: error table, caller identity, request id, health, reflection."""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.context import REQUEST_ID_METADATA_KEY, current_request_id, log_with_rpc
from services.common.errors import DomainError, InvalidInput, quote
from services.common.identity import Caller, Kind, Role, current_caller, require_caller
from services.common.interceptors import ErrorTable
from services.common.ratelimit import RateLimited
from services.common.server import GrpcServer, service_name
from services.common.status import error_details
from tests.eventually import eventually


class NumberUnknown(DomainError):
    REASON = "NUMBER_UNKNOWN"


class Boom(Exception):
    pass


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[Caller | None, str | None]] = []

    async def VerifySubscriber(
        self, request: registry_pb2.VerifySubscriberRequest, context: Any
    ) -> registry_pb2.VerifySubscriberResponse:
        self.seen.append((current_caller(), current_request_id()))
        if request.phone_number == "unknown":
            raise NumberUnknown("no such number", trailers={"idmesh-hint": "x"})
        if request.phone_number == "slow down":
            raise RateLimited("too many", retry_after=timedelta(milliseconds=1500))
        if request.phone_number.startswith("bad"):
            raise InvalidInput(
                f"phone_number {quote(request.phone_number)} is bad", field="phone_number"
            )
        if request.phone_number == "boom":
            raise Boom("secret detail")
        caller = require_caller(Kind.MESSENGER)
        return registry_pb2.VerifySubscriberResponse(operator_id=caller.id)


@pytest.fixture
async def server_and_fake() -> AsyncIterator[tuple[GrpcServer, FakeRegistry]]:
    server = GrpcServer(
        name="test",
        bind="127.0.0.1:0",
        errors=ErrorTable({NumberUnknown: grpc.StatusCode.NOT_FOUND}),
    )
    fake = FakeRegistry()
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        fake,
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    yield server, fake
    await server.stop(None)


async def test_domain_error_maps_to_its_status_with_trailers(server_and_fake: Any) -> None:
    server, _ = server_and_fake
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(phone_number="unknown")
            )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such number"
    trailers = dict(e.value.trailing_metadata() or ())
    assert trailers["idmesh-hint"] == "x"
    assert REQUEST_ID_METADATA_KEY in trailers
    details = error_details(e.value)
    assert (details.reason, details.domain) == ("NUMBER_UNKNOWN", "idmesh")
    assert details.retry_delay is None and details.field_violations == ()


async def _refusal(server: GrpcServer, phone_number: str) -> grpc.aio.AioRpcError:
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(phone_number=phone_number)
            )
    return e.value


async def test_resource_exhausted_carries_the_retry_delay_in_retry_info(
    server_and_fake: Any,
) -> None:
    server, _ = server_and_fake
    refusal = await _refusal(server, "slow down")
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error_details(refusal)
    assert details.reason == "RATE_LIMITED"
    assert details.retry_delay == timedelta(milliseconds=1500)
    assert "idmesh-retry-after-ms" not in dict(refusal.trailing_metadata() or ())


async def test_invalid_argument_names_the_field_in_bad_request(server_and_fake: Any) -> None:
    server, _ = server_and_fake
    refusal = await _refusal(server, "bad" + "9" * 29)
    assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.details() == f"phone_number {'bad' + '9' * 29!r} is bad"
    details = error_details(refusal)
    assert (details.reason, details.metadata) == ("INVALID_FIELD", {"field": "phone_number"})
    assert details.field_violations == (("phone_number", refusal.details()),)


async def test_a_field_over_its_bound_is_refused_before_the_handler_runs(
    server_and_fake: Any,
) -> None:
    server, fake = server_and_fake
    refusal = await _refusal(server, "9" * 1_000_000)
    assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        refusal.details()
        == "phone_number is 1000000 characters long: at most 32 characters are allowed"
    )
    details = error_details(refusal)
    assert (details.reason, details.metadata) == (
        "FIELD_TOO_LONG",
        {"field": "phone_number", "max": "32"},
    )
    assert fake.seen == []


def test_quote_keeps_a_short_prefix_and_says_how_long_the_value_was() -> None:
    assert quote("abc") == "'abc'"
    assert quote("x" * 1_000_000) == f"{'x' * 32!r}... (1000000 characters)"


async def test_unexpected_error_is_internal_without_details(server_and_fake: Any) -> None:
    server, _ = server_and_fake
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.VerifySubscriber(registry_pb2.VerifySubscriberRequest(phone_number="boom"))
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in (e.value.details() or "")
    assert "request id" in (e.value.details() or "")
    assert error_details(e.value).reason == "INTERNAL"


async def test_caller_identity_and_request_id_reach_the_handler(server_and_fake: Any) -> None:
    server, fake = server_and_fake
    identity = Caller(Kind.MESSENGER, "alpha")
    async with open_channel(f"127.0.0.1:{server.port}", identity=identity) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        reply = await stub.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(phone_number="+79031234567"),
            metadata=((REQUEST_ID_METADATA_KEY, "req-123"),),
        )
    assert reply.operator_id == "alpha"
    assert fake.seen[-1] == (identity, "req-123")


async def test_each_call_of_a_method_has_its_own_request_id_and_caller(
    server_and_fake: Any,
) -> None:
    """The wrapped handler is built once per method: what is per call must stay per call."""
    server, fake = server_and_fake
    callers = [Caller(Kind.MESSENGER, "alpha"), Caller(Kind.MESSENGER, "beta")]
    for n, identity in enumerate(callers * 2):
        async with open_channel(f"127.0.0.1:{server.port}", identity=identity) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            reply = await stub.VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(phone_number="+79031234567"),
                metadata=((REQUEST_ID_METADATA_KEY, f"req-{n}"),),
            )
        assert reply.operator_id == identity.id
    assert fake.seen[-4:] == [(c, f"req-{n}") for n, c in enumerate(callers * 2)]


async def test_missing_or_wrong_identity_is_refused(server_and_fake: Any) -> None:
    server, _ = server_and_fake
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.VerifySubscriber(registry_pb2.VerifySubscriberRequest(phone_number="+7"))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    operator = Caller(Kind.OPERATOR, "beeline", Role.ADMIN)
    async with open_channel(f"127.0.0.1:{server.port}", identity=operator) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.VerifySubscriber(registry_pb2.VerifySubscriberRequest(phone_number="+7"))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_is_not_serving_until_set_serving_and_after_stop() -> None:
    server = GrpcServer(name="test", bind="127.0.0.1:0", errors=ErrorTable({}))
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        FakeRegistry(),
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    port = await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}", identity=None) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="idmesh.registry.v1.RegistryService")
            assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await server.set_serving()
            assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
            await server.health.enter_graceful_shutdown()
            assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(None)


async def test_streaming_calls_carry_identity_and_request_id() -> None:
    """grpc.aio applies a client interceptor to one call kind only: each kind must get ours."""
    seen: list[Caller | None] = []

    class Notifier(notifier_pb2_grpc.NotifierServiceServicer):
        async def Subscribe(self, request: Any, context: Any) -> AsyncIterator[Any]:
            seen.append(current_caller())
            yield notifier_pb2.SubscribeResponse(
                progress=notifier_pb2.ProgressMark(head_seq=len(current_request_id() or ""))
            )

    server = GrpcServer(name="test", bind="127.0.0.1:0", errors=ErrorTable({}))
    server.add(
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server,
        Notifier(),
        service_name(notifier_pb2.DESCRIPTOR, "NotifierService"),
    )
    port = await server.start()
    try:
        identity = Caller(Kind.MESSENGER, "alpha")
        async with open_channel(f"127.0.0.1:{port}", identity=identity) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            items = [i async for i in stub.Subscribe(notifier_pb2.SubscribeRequest(), timeout=10)]
    finally:
        await server.stop(None)
    assert seen == [identity]
    assert items[0].progress.head_seq > 0  # a request id reached the handler


async def test_a_method_the_servicer_does_not_implement_is_unimplemented() -> None:
    server = GrpcServer(name="test", bind="127.0.0.1:0", errors=ErrorTable({}))
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        registry_pb2_grpc.RegistryServiceServicer(),  # the generated base: nothing overridden
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    port = await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}", identity=None) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await registry_pb2_grpc.RegistryServiceStub(channel).VerifySubscriber(
                    registry_pb2.VerifySubscriberRequest()
                )
    finally:
        await server.stop(None)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_server_stops_waiting_when_its_launcher_pipe_closes() -> None:
    """IDMESH_LAUNCHER_FD: end-of-file on the launcher's pipe (the launcher died, kill -9
    included) stops the service as SIGTERM does; health goes NOT_SERVING."""
    server = GrpcServer(name="test", bind="127.0.0.1:0", errors=ErrorTable({}))
    await server.start()
    read_fd, write_fd = os.pipe()
    try:
        await server.set_serving()
        waiting = asyncio.create_task(server.wait_for_signal(launcher_fd=read_fd))
        # The launcher writing (not closing) is no reason to stop: once the server has read
        # it (the pipe is drained), it still waits.
        os.write(write_fd, b"x")
        await eventually(lambda: not select.select([read_fd], [], [], 0)[0], what="the pipe read")
        assert not waiting.done()
        os.close(write_fd)
        await asyncio.wait_for(waiting, timeout=10)
        status = await server.health.Check(health_pb2.HealthCheckRequest(), None)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        os.close(read_fd)
        await server.stop(None)


def test_fields_for_an_rpc_line_outside_an_rpc_are_not_kept() -> None:
    assert log_with_rpc(result="x") is False  # the caller logs a line of its own then
