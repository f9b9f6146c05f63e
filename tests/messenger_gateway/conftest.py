"""Fixtures for the gateway's tests: the store on each engine (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import Env
from services.common.storage import StoreSettings
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.main import open_store


@pytest.fixture
async def store(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[GatewayStore]:
    """The store on each engine (the SQLite file is gw.db under tmp_path)."""
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    settings = StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "gw.db"), **environ}))
    async with open_store(settings) as opened:
        yield opened
