"""The mesh's public gRPC APIs, as a messenger's front end and as an operator's admin."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.localmesh import Mesh

# Outcomes a client cannot read: the request may or may not have taken effect.
UNKNOWN_OUTCOME = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


class Client:
    """One channel per (service replica, identity), kept for the whole run (gRPC reconnects it
    after the service restarts). With replicas, each stub asked for goes to the deployment's
    next replica in turn, as a round-robin balancer would send it."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._channels: dict[tuple[str, Caller], grpc.aio.Channel] = {}
        self._turn: Counter[str] = Counter()

    def _replica(self, deployment: str) -> str:
        names = [deployment]
        while f"{deployment}-{len(names) + 1}" in self.mesh.services:
            names.append(f"{deployment}-{len(names) + 1}")
        self._turn[deployment] += 1
        return names[self._turn[deployment] % len(names)]

    def _channel(self, service: str, identity: Caller) -> grpc.aio.Channel:
        key = (service, identity)
        if key not in self._channels:
            self._channels[key] = open_channel(
                self.mesh.address(service),
                identity=identity,
                tls=self.mesh.credentials(identity),
                # Reconnect quickly after a restart: the run's faults last seconds.
                options=(("grpc.max_reconnect_backoff_ms", 1_000),),
            )
        return self._channels[key]

    def gateway(self, messenger: str) -> gateway_pb2_grpc.GatewayServiceStub:
        identity = Caller(Kind.MESSENGER, messenger, Role.FRONTEND)
        return gateway_pb2_grpc.GatewayServiceStub(
            self._channel(self._replica(f"gateway-{messenger}"), identity)
        )

    def registry_admin(self, operator: str) -> registry_pb2_grpc.RegistryAdminServiceStub:
        identity = Caller(Kind.OPERATOR, operator, Role.ADMIN)
        return registry_pb2_grpc.RegistryAdminServiceStub(
            self._channel(self._replica(f"registry-{operator}"), identity)
        )

    def notifier(self, messenger: str) -> notifier_pb2_grpc.NotifierServiceStub:
        identity = Caller(Kind.MESSENGER, messenger)
        return notifier_pb2_grpc.NotifierServiceStub(
            self._channel(self._replica("notifier"), identity)
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def status_of(exc: BaseException) -> tuple[bool | None, str]:
    """(ok, code name) of a failed call: ok None when the outcome is unknown."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        return (None if code in UNKNOWN_OUTCOME else False), code.name
    if isinstance(exc, TimeoutError):
        return None, "DEADLINE_EXCEEDED"
    raise exc


def fields(message: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(message, name) for name in names}
