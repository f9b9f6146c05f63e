"""The gRPC server bootstrap every service uses: interceptors, health, reflection, shutdown.

    server = GrpcServer(name="notifier", bind="127.0.0.1:50060", errors=ERRORS)
    server.add(notifier_pb2_grpc.add_NotifierServiceServicer_to_server, servicer,
               notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name)
    port = await server.start()          # health: NOT_SERVING
    ...start background work...
    await server.set_serving()           # health: SERVING
    await server.wait_for_signal()       # SIGTERM/SIGINT: NOT_SERVING, drain, stop

Health reports NOT_SERVING while starting and from the first shutdown signal on; a second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.channels import SERVER_KEEPALIVE_OPTIONS
from services.common.interceptors import (
    ErrorTable,
    IdentityResolver,
    ServerInterceptor,
    metadata_identity,
)

log = structlog.get_logger("idmesh.server")


class GrpcServer:
    def __init__(
        self,
        *,
        name: str,
        bind: str,
        errors: ErrorTable,
        identity: IdentityResolver = metadata_identity,
    ) -> None:
        self.name = name
        self._bind = bind
        self._server = grpc.aio.server(
            interceptors=[ServerInterceptor(errors, identity)],
            options=list(SERVER_KEEPALIVE_OPTIONS),
        )
        self.health = health.aio.HealthServicer()
        self._service_names: list[str] = []
        self._on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.port: int | None = None

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run hook once health is NOT_SERVING and before the drain: for example to end
        long-lived streams at once, so that they do not hold shutdown for the whole grace."""
        self._on_shutdown.append(hook)

    def add(
        self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        register(servicer, self._server)
        self._service_names.append(full_name)

    async def start(self) -> int:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        for service in ("", *self._service_names):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        port = self._server.add_insecure_port(self._bind)
        if port == 0:
            raise RuntimeError(f"{self.name}: cannot listen on {self._bind}")
        await self._server.start()
        self.port = port
        log.info("server.listening", address=self._bind.rsplit(":", 1)[0], port=port)
        return port

    async def set_serving(self) -> None:
        for service in ("", *self._service_names):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.serving")

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        hooks, self._on_shutdown = self._on_shutdown, []
        for hook in hooks:
            try:
                await hook()
            except Exception:
                log.exception("server.shutdown_hook_failed")
        await self._server.stop(grace)
        log.info("server.stopped")

    async def wait_for_signal(self) -> None:
        """Return on the first SIGTERM/SIGINT (health goes NOT_SERVING); a second exits at once."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stopping.is_set():
                log.warning("server.forced_exit", signal=signal.Signals(signum).name)
                os._exit(128 + signum)
            log.info("server.shutting_down", signal=signal.Signals(signum).name)
            stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await stopping.wait()
            await self.health.enter_graceful_shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


def service_name(descriptor: Any, service: str) -> str:
    """The full name of a service in a generated module's DESCRIPTOR."""
    return str(descriptor.services_by_name[service].full_name)
