"""Fixtures for the registry's tests: a SQLite file per test, a settable clock, the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common.db import Database
from services.operator_registry.service import RegistryService
from services.operator_registry.store import MIGRATIONS, RegistryStore

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
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "registry.db", MIGRATIONS)
    yield database
    await database.close()


@pytest.fixture
def store(db: Database) -> RegistryStore:
    return RegistryStore(db)


@pytest.fixture
def service(store: RegistryStore, clock: FakeClock) -> RegistryService:
    return RegistryService(store, operator_id=OPERATOR, clock=clock)
