"""Fixtures for the notifier: a real server on port 0 over a temporary store (SQLite file or
PostgreSQL database)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.common.server import GrpcServer
from services.notifier.grpc_api import ERRORS
from services.notifier.main import open_notifier
from tests.notifier.support import FakeClock, Notifier, config

# start(**env) -> a started notifier
StartNotifier = Callable[..., Awaitable[Notifier]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def start_notifier(
    tmp_path: Path, clock: FakeClock, store_env: dict[str, str]
) -> AsyncIterator[StartNotifier]:
    """start_notifier(**env) -> Notifier, on each engine (see tests/conftest.py); everything
    started is stopped at teardown."""
    async with _starter(tmp_path, clock, store_env) as start:
        yield start


@pytest.fixture
async def start_replica(
    tmp_path: Path, clock: FakeClock, postgres_url: str
) -> AsyncIterator[StartNotifier]:
    """start_replica(**env) -> Notifier: each call another replica over one PostgreSQL store."""
    async with _starter(tmp_path, clock, {"DATABASE_URL": postgres_url}) as start:
        yield start


@contextlib.asynccontextmanager
async def _starter(
    tmp_path: Path, clock: FakeClock, store_env: dict[str, str]
) -> AsyncIterator[StartNotifier]:
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: str) -> Notifier:
        cfg = config(tmp_path, **{**store_env, **overrides})
        server = GrpcServer(name="notifier", bind=cfg.server.bind, errors=ERRORS)
        service = await stack.enter_async_context(open_notifier(cfg, server, clock))
        port = await server.start()
        stack.push_async_callback(server.stop, None)
        notifier = Notifier(service=service, port=port, clock=clock, config=cfg)
        stack.push_async_callback(notifier.close_channels)
        return notifier

    async with stack:
        yield start


@pytest.fixture
async def notifier(start_notifier: StartNotifier) -> Notifier:
    result: Notifier = await start_notifier()
    return result
