"""SQLite through aiosqlite: WAL, schema migrations by PRAGMA user_version, and transactions.

One writer connection, guarded by an asyncio.Lock so that concurrent requests never interleave
statements inside one transaction; a separate reader connection sees only committed data.
WAL with synchronous=NORMAL is durable across a killed process (the fault idmesh guards against);
set synchronous=FULL (IDMESH_DB_SYNCHRONOUS) to be durable across power loss too.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite


class Database:
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        path: Path | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self.path = path  # the file, for work on a connection of its own (bulk import)
        self.synchronous = synchronous

    @classmethod
    async def open(
        cls, path: Path, migrations: Sequence[str], *, synchronous: str = "NORMAL"
    ) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, synchronous)
        try:
            await _migrate(writer, migrations, path)
            reader = await _connect(path, synchronous)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader, path=path, synchronous=synchronous.upper())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (cancellation included)."""
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await asyncio.shield(self._writer.rollback())
                raise
            await asyncio.shield(self._writer.commit())

    @asynccontextmanager
    async def write_lock(self) -> AsyncIterator[None]:
        """This process's writer turn, without the writer connection: for a transaction on
        another connection to the same file (a bulk import's merge) that this process's own
        transactions must wait for rather than fail on SQLITE_BUSY."""
        async with self._lock:
            yield

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self._reader.execute_fetchall(sql, tuple(params))
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        """One thread hop: execute and fetch together."""
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()


async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
    if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[str], path: Path) -> None:
    """Apply migrations[user_version:], each in one transaction. Processes opening one file
    together (replicas sharing a store) take turns on an advisory lock file, so none applies a
    migration twice. (Python 3.11's executescript commits any open transaction first, so a
    BEGIN IMMEDIATE around the version check would not hold.)"""
    fd = os.open(path.with_name(path.name + ".migrate-lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(migrations):
            raise RuntimeError(
                f"database schema version {version} is newer than this code knows "
                f"({len(migrations)})"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            await conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
            )
    finally:
        os.close(fd)  # releases the lock
