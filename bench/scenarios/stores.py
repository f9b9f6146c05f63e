"""Read-only queries on a service deployment's store, as a scenario checks what the services
did: its SQLite file, or its database on the pass's PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench import topology
from bench.scenarios.context import Context


class StoreReader:
    """Read-only queries on one store: its SQLite file, or its PostgreSQL database (one
    connection, opened on first use). The SQL is the same on both engines (no parameters)."""

    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        self._path = path
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def fetch(self, sql: str) -> list[Sequence[Any]]:
        if self._url is not None:
            if self._conn is None:
                self._conn = await asyncpg.connect(self._url)
            return [tuple(row) for row in await self._conn.fetch(sql)]
        assert self._path is not None
        return await asyncio.to_thread(sqlite_fetch, self._path, sql)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def store_reader(ctx: Context, deployment: str) -> StoreReader:
    if ctx.postgres is not None:
        return StoreReader(url=ctx.postgres.database_url(deployment))
    return StoreReader(path=topology.db_path(ctx.mesh, deployment))


def sqlite_fetch(path: Path, sql: str) -> list[Sequence[Any]]:
    """The rows of a query on a SQLite store, opened read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
