"""Echo services: the mesh's processes and hops with handlers that do nothing.

`python -m bench.echo`, configured like a service by IDMESH_* variables:

    IDMESH_ECHO_ROLE       registry   RegistryService.VerifySubscriber answers IDENTIFIED at once
                           gateway    GatewayService.StartIdentification answers at once;
                                      ConfirmPossession makes one VerifySubscriber call to the
                                      echo registry (the real gateway's one hop) and answers;
                                      CheckDelivery(Batch) answers ALLOWED (for each pair) at once
                           raw        a bare grpc.aio server (no interceptors, default options,
                                      the same transport security) with the echo
                                      VerifySubscriber: the floor under the stack
    IDMESH_ECHO_REGISTRY   the echo registry's host:port (role gateway)
    plus IDMESH_BIND, IDMESH_LOG_FORMAT, ... (services.common.config.ServerSettings)

Roles registry and gateway run on exactly the services' stack: services.common.runner (logging,
GrpcServer with the interceptor, health, reflection, signals) and, outbound,
services.common.channels.open_channel with the caller's identity. So echo vs real measures what
the services do, not the gRPC plumbing.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.config import ConfigError, Env, ServerSettings, tls_from_env
from services.common.identity import Caller, Kind
from services.common.interceptors import ErrorTable
from services.common.runner import event_loop_name, run_loop, run_main
from services.common.server import GrpcServer, service_name
from services.common.timeutil import to_timestamp, utcnow
from services.common.tls import TlsFiles

ERRORS = ErrorTable({})
ROLES = ("registry", "gateway", "raw")
ECHO_MESSENGER = "alpha"
_CODE = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True, slots=True)
class EchoConfig:
    server: ServerSettings
    role: str
    registry: str

    @classmethod
    def from_env(cls, env: Env) -> EchoConfig:
        role = env.str("ECHO_ROLE")
        if role not in ROLES:
            raise ConfigError(f"{env.name('ECHO_ROLE')}: expected one of {ROLES}, got {role!r}")
        registry = env.str("ECHO_REGISTRY", "")
        if role == "gateway" and not registry:
            raise ConfigError(f"{env.name('ECHO_REGISTRY')}: required for role gateway")
        return cls(
            server=ServerSettings.from_env(env, default_bind="127.0.0.1:0"),
            role=role,
            registry=registry,
        )


class EchoRegistry(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self) -> None:
        self._reply = registry_pb2.VerifySubscriberResponse(
            result=registry_pb2.VERIFICATION_RESULT_IDENTIFIED,
            identification_code=_CODE,
            operator_id="beeline",
            identified_at=to_timestamp(utcnow()),
        )

    async def VerifySubscriber(
        self, request: registry_pb2.VerifySubscriberRequest, context: Any
    ) -> registry_pb2.VerifySubscriberResponse:
        return self._reply


class EchoGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, registry: registry_pb2_grpc.RegistryServiceStub) -> None:
        self._registry = registry
        now = to_timestamp(utcnow())
        self._template = gateway_pb2.Identification(
            operator_id="beeline", started_at=now, code_expires_at=now, attempts_left=5
        )
        self._allowed = gateway_pb2.CheckDeliveryResponse(
            allowed=True,
            reason=gateway_pb2.DELIVERY_REASON_ALLOWED,
            message="the message may be delivered",
            version=1,
        )

    def _identification(
        self, state: gateway_pb2.IdentificationState, **fields: Any
    ) -> gateway_pb2.Identification:
        ident = gateway_pb2.Identification()
        ident.CopyFrom(self._template)
        ident.state = state
        for name, value in fields.items():
            setattr(ident, name, value)
        return ident

    async def StartIdentification(
        self, request: gateway_pb2.StartIdentificationRequest, context: Any
    ) -> gateway_pb2.StartIdentificationResponse:
        return gateway_pb2.StartIdentificationResponse(
            identification=self._identification(
                gateway_pb2.IDENTIFICATION_STATE_AWAITING_CODE,
                identification_id=request.user_id,
                user_id=request.user_id,
                phone_number=request.phone_number,
            )
        )

    async def ConfirmPossession(
        self, request: gateway_pb2.ConfirmPossessionRequest, context: Any
    ) -> gateway_pb2.ConfirmPossessionResponse:
        remaining = context.time_remaining()
        await self._registry.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(
                idempotency_key=request.identification_id, phone_number="+79030000000"
            ),
            timeout=20.0 if remaining is None else remaining,
        )
        return gateway_pb2.ConfirmPossessionResponse(
            identification=self._identification(
                gateway_pb2.IDENTIFICATION_STATE_IDENTIFIED,
                identification_id=request.identification_id,
            )
        )

    async def CheckDelivery(
        self, request: gateway_pb2.CheckDeliveryRequest, context: Any
    ) -> gateway_pb2.CheckDeliveryResponse:
        return self._allowed

    async def CheckDeliveryBatch(
        self, request: gateway_pb2.CheckDeliveryBatchRequest, context: Any
    ) -> gateway_pb2.CheckDeliveryBatchResponse:
        return gateway_pb2.CheckDeliveryBatchResponse(
            reasons=[gateway_pb2.DELIVERY_REASON_ALLOWED] * len(request.pairs), version=1
        )


@asynccontextmanager
async def wiring(config: EchoConfig, server: GrpcServer) -> AsyncIterator[None]:
    if config.role == "registry":
        server.add(
            registry_pb2_grpc.add_RegistryServiceServicer_to_server,
            EchoRegistry(),
            service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
        )
        yield
        return
    channel = open_channel(
        config.registry,
        identity=Caller(Kind.MESSENGER, ECHO_MESSENGER),
        tls=config.server.tls,
    )
    try:
        server.add(
            gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
            EchoGateway(registry_pb2_grpc.RegistryServiceStub(channel)),
            service_name(gateway_pb2.DESCRIPTOR, "GatewayService"),
        )
        yield
    finally:
        await channel.close()


async def serve_raw(bind: str, tls: TlsFiles | None) -> None:
    """A bare grpc.aio server: default options, no interceptors, the mesh's transport (mutual
    TLS unless the mesh is plaintext); health for readiness only."""
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(EchoRegistry(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = (
        server.add_secure_port(bind, tls.server_credentials())
        if tls is not None
        else server.add_insecure_port(bind)
    )
    if port == 0:
        raise SystemExit(f"echo raw: cannot listen on {bind}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main() -> None:
    env = Env()
    if env.str("ECHO_ROLE", "") == "raw":
        run_loop(serve_raw(env.str("BIND"), tls_from_env(env)), event_loop_name(env))
        return
    run_main("echo", EchoConfig.from_env, wiring, ERRORS)


if __name__ == "__main__":
    main()
