"""The channels' retry policy: idempotent calls are retried on UNAVAILABLE, others are not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2

from services.common.channels import IDEMPOTENT_METHODS, open_channel, service_config
from services.common.errors import DomainError
from services.common.interceptors import ErrorTable
from services.common.server import GrpcServer, service_name


class Flaky(DomainError):
    REASON = "SHUTTING_DOWN"


class FlakyNotifier(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def GetDeliveryStatus(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise Flaky("not now")
        return notifier_pb2.GetDeliveryStatusResponse(head_seq=7)


class FlakyGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def StartIdentification(self, request: Any, context: Any) -> Any:
        self.calls += 1
        raise Flaky("not now")


@pytest.fixture
async def server() -> AsyncIterator[tuple[GrpcServer, FlakyNotifier, FlakyGateway]]:
    server = GrpcServer(
        name="flaky", bind="127.0.0.1:0", errors=ErrorTable({Flaky: grpc.StatusCode.UNAVAILABLE})
    )
    notifier, gateway = FlakyNotifier(), FlakyGateway()
    server.add(
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server,
        notifier,
        service_name(notifier_pb2.DESCRIPTOR, "NotifierService"),
    )
    server.add(
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
        gateway,
        service_name(gateway_pb2.DESCRIPTOR, "GatewayService"),
    )
    await server.start()
    yield server, notifier, gateway
    await server.stop(None)


async def test_an_idempotent_call_is_retried_after_unavailable(server: Any) -> None:
    grpc_server, notifier, _ = server
    async with open_channel(f"127.0.0.1:{grpc_server.port}", identity=None) as channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        reply = await stub.GetDeliveryStatus(
            notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha"), timeout=30
        )
    assert (reply.head_seq, notifier.calls) == (7, 2)


async def test_a_call_that_is_not_idempotent_is_not_retried(server: Any) -> None:
    grpc_server, _, gateway = server
    async with open_channel(f"127.0.0.1:{grpc_server.port}", identity=None) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.StartIdentification(
                gateway_pb2.StartIdentificationRequest(user_id="u1"), timeout=30
            )
    assert (e.value.code(), gateway.calls) == (grpc.StatusCode.UNAVAILABLE, 1)


def test_the_retry_policy_names_only_methods_that_exist() -> None:
    pools = [gateway_pb2.DESCRIPTOR, notifier_pb2.DESCRIPTOR, registry_pb2.DESCRIPTOR]
    services = {s.full_name: s for pool in pools for s in pool.services_by_name.values()}
    for service, methods in IDEMPOTENT_METHODS:
        if service.startswith("grpc.health"):
            continue
        for method in methods:
            assert services[service].methods_by_name[method]
    config = json.loads(service_config())
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
