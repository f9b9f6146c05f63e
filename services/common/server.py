"""The gRPC server bootstrap every service uses: interceptors, health, reflection, shutdown.

    server = GrpcServer(name="notifier", bind="127.0.0.1:50060", errors=ERRORS)
    server.add(notifier_pb2_grpc.add_NotifierServiceServicer_to_server, servicer,
               notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name)
    port = await server.start()          # health: NOT_SERVING
    ...start background work...
    await server.set_serving()           # health: SERVING
    await server.wait_for_signal()       # SIGTERM/SIGINT: NOT_SERVING, drain, stop

Health reports NOT_SERVING while starting, while a database the server watches cannot be
reached (`watch_store`: the stores opened in a service's wiring are watched), and from the first
shutdown signal on; a second signal exits at once.
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

from services.common.availability import StoreAvailability
from services.common.channels import SERVER_KEEPALIVE_OPTIONS
from services.common.config import LimiterSettings
from services.common.interceptors import (
    ErrorTable,
    IdentityResolver,
    ServerInterceptor,
    metadata_identity,
)
from services.common.overload import ConcurrencyLimiter
from services.common.tls import TlsFiles, tls_identity

log = structlog.get_logger("idmesh.server")


class GrpcServer:
    def __init__(
        self,
        *,
        name: str,
        bind: str,
        errors: ErrorTable,
        tls: TlsFiles | None = None,
        health_bind: str | None = None,
        identity: IdentityResolver | None = None,
        load_shedding: LimiterSettings | None = None,
    ) -> None:
        """tls: mutual TLS, the caller's identity from its certificate; None: plaintext, the
        caller's identity from request metadata (development only). health_bind: an extra
        plaintext port serving only grpc.health.v1, for probes that cannot present a client
        certificate (Kubernetes gRPC probes)."""
        self.name = name
        self._bind = bind
        self._tls = tls
        resolver = identity or (tls_identity if tls is not None else metadata_identity)
        # unary calls beyond an adaptive concurrency limit are refused at once (overload.py)
        settings = load_shedding or LimiterSettings()
        self.limiter = ConcurrencyLimiter(settings)
        self._server = grpc.aio.server(
            interceptors=[ServerInterceptor(errors, resolver, self.limiter)],
            options=[
                *SERVER_KEEPALIVE_OPTIONS,
                ("grpc.server.max_pending_requests", settings.max_pending),
                ("grpc.server.max_pending_requests_hard_limit", 3 * settings.max_pending),
            ],
        )
        self.health = health.aio.HealthServicer()
        self._health_bind = health_bind
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        self._service_names: list[str] = []
        self._on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.port: int | None = None
        self._serving = False  # set_serving() called, no shutdown yet
        self._stores: list[StoreAvailability] = []
        self._health_updates: set[asyncio.Task[None]] = set()

    def watch_store(self, availability: StoreAvailability) -> None:
        """Report NOT_SERVING while this store cannot be reached, SERVING again once it can
        (after set_serving, and until shutdown)."""
        self._stores.append(availability)
        availability.watch(self._store_changed)

    def _store_changed(self, _available: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._apply_health())
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def _apply_health(self) -> None:
        if not self._serving:
            return
        up = all(store.available for store in self._stores)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *self._service_names):
            await self.health.set(service, status)

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
        if self._tls is not None:
            port: int = self._server.add_secure_port(self._bind, self._tls.server_credentials())
        else:
            log.warning(
                "server.plaintext",
                detail="mutual TLS is off (IDMESH_INSECURE_DEV_MODE): callers name themselves "
                "in metadata; development only",
            )
            port = self._server.add_insecure_port(self._bind)
        if port == 0:
            raise RuntimeError(f"{self.name}: cannot listen on {self._bind}")
        if self._health_bind is not None:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(self._health_bind)
            await self._health_server.start()
        await self._server.start()
        self.port = port
        log.info(
            "server.listening",
            address=self._bind.rsplit(":", 1)[0],
            port=port,
            tls=self._tls is not None,
            health_port=self.health_port,
        )
        return port

    async def set_serving(self) -> None:
        """SERVING from now on (NOT_SERVING meanwhile while a watched store is unavailable)."""
        self._serving = True
        await self._apply_health()
        log.info("server.serving")

    async def stop(self, grace: float | None) -> None:
        self._serving = False
        await self.health.enter_graceful_shutdown()
        hooks, self._on_shutdown = self._on_shutdown, []
        for hook in hooks:
            try:
                await hook()
            except Exception:
                log.exception("server.shutdown_hook_failed")
        await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(None)
        log.info("server.stopped")

    async def wait_for_signal(self, *, launcher_fd: int | None = None) -> None:
        """Return on the first SIGTERM/SIGINT (health goes NOT_SERVING); a second exits at once.
        With launcher_fd (the read end of a pipe only the launcher writes to), also return when
        the pipe closes: the launcher died, however it died (kill -9 included)."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stopping.is_set():
                log.warning("server.forced_exit", signal=signal.Signals(signum).name)
                os._exit(128 + signum)
            log.info("server.shutting_down", signal=signal.Signals(signum).name)
            stopping.set()

        def on_launcher_readable() -> None:
            assert launcher_fd is not None
            try:
                gone = os.read(launcher_fd, 64) == b""
            except OSError:
                gone = True
            if gone:
                loop.remove_reader(launcher_fd)
                log.warning("server.shutting_down", reason="the launcher exited")
                stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        if launcher_fd is not None:
            loop.add_reader(launcher_fd, on_launcher_readable)
        try:
            await stopping.wait()
            self._serving = False
            await self.health.enter_graceful_shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if launcher_fd is not None:
                loop.remove_reader(launcher_fd)


def service_name(descriptor: Any, service: str) -> str:
    """The full name of a service in a generated module's DESCRIPTOR."""
    return str(descriptor.services_by_name[service].full_name)
