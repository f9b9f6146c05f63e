"""The life of a service process, written once:

    def main() -> None:
        run_main("notifier", RegistryConfig.from_env, wiring, ERRORS)

load(Env()) builds the config (a ConfigError exits with status 2 and the message); logging is
configured; then `wiring(config, server)`, an async context manager, opens stores, adds servicers
to the server and starts background work, and undoes all of it on exit. The server starts
(health NOT_SERVING), goes SERVING, and on SIGTERM/SIGINT (or when its launcher dies:
IDMESH_LAUNCHER_FD) goes NOT_SERVING, drains for the grace period, and stops; then the wiring
closes.

The event loop is asyncio's own or uvloop's, by IDMESH_EVENT_LOOP (`run_loop`): `auto` (the
default) takes uvloop where it is installed (the `fast` extra, Linux and macOS), `asyncio` and
`uvloop` force one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from services.common import tracing
from services.common.config import ConfigError, Env, ServerSettings
from services.common.interceptors import ErrorTable
from services.common.logging import configure_logging, get_logger
from services.common.metrics import serve_metrics
from services.common.server import GrpcServer
from services.common.storage import watching_stores


class HasServerSettings(Protocol):
    @property
    def server(self) -> ServerSettings: ...


C = TypeVar("C", bound=HasServerSettings)
T = TypeVar("T")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
Wiring = Callable[[C, GrpcServer], AbstractAsyncContextManager[None]]


async def serve(name: str, config: C, wiring: Wiring[C], errors: ErrorTable) -> None:
    if config.server.metrics_bind is not None:
        port = serve_metrics(config.server.metrics_bind)
        get_logger("idmesh.main").info("metrics.listening", port=port)
    settings = config.server
    server = GrpcServer(
        name=name,
        bind=settings.bind,
        errors=errors,
        tls=settings.tls,
        health_bind=settings.health_bind,
        load_shedding=settings.load_shedding,
    )
    if tracing.configure(name):
        get_logger("idmesh.main").info("tracing.exporting", exporter=tracing.exporter_name())
    try:
        # the stores the wiring opens are watched: health NOT_SERVING while one cannot be reached
        with watching_stores(server.watch_store):
            async with wiring(config, server):
                await server.start()
                try:
                    await server.set_serving()
                    await server.wait_for_signal(launcher_fd=settings.launcher_fd)
                finally:
                    await server.stop(config.server.shutdown_grace)
    finally:
        await asyncio.to_thread(tracing.shutdown)  # exports what is buffered


def event_loop_name(env: Env) -> str:
    """The event loop IDMESH_EVENT_LOOP asks for, resolved: "asyncio" or "uvloop"."""
    choice = env.str("EVENT_LOOP", "auto").lower()
    if choice not in EVENT_LOOPS:
        raise ConfigError(
            f"{env.name('EVENT_LOOP')}: expected one of {EVENT_LOOPS}, got {choice!r}"
        )
    if choice == "asyncio" or sys.platform == "win32":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                f"{env.name('EVENT_LOOP')}=uvloop but uvloop is not installed "
                "(pip install 'idmesh[fast]')"
            ) from None
        return "asyncio"
    return "uvloop"


def run_loop(main: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """asyncio.run(main) on the named event loop ("asyncio" or "uvloop": event_loop_name)."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def run_main(name: str, load: Callable[[Env], C], wiring: Wiring[C], errors: ErrorTable) -> None:
    try:
        env = Env()
        config = load(env)
        loop = event_loop_name(env)
        tracing.exporter_name()  # OTEL_* read and checked now
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    fmt = config.server.log_format
    configure_logging(
        name, level=config.server.log_level, json=None if fmt == "auto" else fmt == "json"
    )
    get_logger("idmesh.main").info("service.starting", bind=config.server.bind, event_loop=loop)
    run_loop(serve(name, config, wiring, errors), loop)
