"""Fixtures for the registry's tests: a store per test on each engine (SQLite file, PostgreSQL
schema: see tests/conftest.py), a settable clock, the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common.config import Env
from services.common.db import Database
from services.common.storage import StoreSettings
from services.operator_registry.main import open_store
from services.operator_registry.ports import RegistryStore
from services.operator_registry.service import RegistryService
from services.operator_registry.store import MIGRATIONS, SqliteRegistryTx
from services.operator_registry.store_pg import PgRegistryTx

OPERATOR = "beeline"
NUMBER = "+79031234567"
OTHER_NUMBER = "+79051112233"
PORTED_IN_NUMBER = "+79161234567"  # an MTS range: ported in, still ours to answer for
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[RegistryStore]:
    """The store on each engine (the SQLite file is registry.db under tmp_path)."""
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    settings = StoreSettings.from_env(
        Env({"IDMESH_DB_PATH": str(tmp_path / "registry.db"), **environ})
    )
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture
async def db(tmp_path: Path, store: RegistryStore) -> AsyncIterator[Database]:
    """Another connection to the SQLite store's file (for @pytest.mark.sqlite_only tests)."""
    database = await Database.open(tmp_path / "registry.db", MIGRATIONS)
    yield database
    await database.close()


@pytest.fixture
def tx_class(engine: str) -> type[SqliteRegistryTx | PgRegistryTx]:
    """The engine's transaction class (to patch a statement in a test)."""
    return SqliteRegistryTx if engine == "sqlite" else PgRegistryTx


@pytest.fixture
def service(store: RegistryStore, clock: FakeClock) -> RegistryService:
    return RegistryService(store, operator_id=OPERATOR, clock=clock)
