"""Read-only queries on a service deployment's store, as a scenario checks what the services
did: its SQLite file, or its database on the pass's PostgreSQL server; and the stores' sizes
(snapshot): the rows and bytes of each table, the files or the database on disk."""

from __future__ import annotations

import asyncio
import os
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


# The tables of a PostgreSQL store: the service's own (its schema), with their rows and bytes
# (pg_total_relation_size: the table, its indexes and its TOAST).
PG_TABLES_SQL = (
    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY c.relname"
)
# SQLite: each b-tree's bytes in use (dbstat, aggregated), a table's indexes counted with it.
SQLITE_TABLES_SQL = (
    "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat('main', 1) d "
    "LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY 1 ORDER BY 1"
)


async def snapshot(ctx: Context, deployment: str, *, table_bytes: bool) -> dict[str, Any]:
    """The size of one deployment's store (snapshot_sqlite, snapshot_pg)."""
    if ctx.postgres is not None:
        return await snapshot_pg(ctx.postgres.database_url(deployment))
    return await snapshot_sqlite(topology.db_path(ctx.mesh, deployment), table_bytes=table_bytes)


async def snapshot_pg(url: str) -> dict[str, Any]:
    """A PostgreSQL store's size: `bytes`, its tables with their indexes and TOAST; `tables`,
    name -> rows and bytes; `database_bytes`, pg_database_size (the system catalogs too)."""
    reader = StoreReader(url=url)
    try:
        sizes = {str(name): int(size) for name, size in await reader.fetch(PG_TABLES_SQL)}
        rows = {name: await _count(reader, name) for name in sizes}
        (database,) = await reader.fetch("SELECT pg_database_size(current_database())")
    finally:
        await reader.close()
    return {
        "bytes": sum(sizes.values()),
        "database_bytes": int(database[0]),
        "tables": {name: {"rows": rows[name], "bytes": sizes[name]} for name in sizes},
    }


async def snapshot_sqlite(path: Path, *, table_bytes: bool) -> dict[str, Any]:
    """A SQLite store's size: `bytes`, the pages in use; `tables`, name -> rows (and with
    table_bytes, the bytes of the pages it and its indexes use, from dbstat, which reads every
    page: a second or more for a store of a million rows); `file_bytes`, the main file and its
    -wal on disk."""
    reader = StoreReader(path=path)
    names = [
        str(name)
        for (name,) in await reader.fetch(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    tables: dict[str, dict[str, int]] = {
        name: {"rows": await _count(reader, name)} for name in names
    }
    if table_bytes:
        for name, size in await reader.fetch(SQLITE_TABLES_SQL):
            if str(name) in tables:
                tables[str(name)]["bytes"] = int(size)
    (pages,) = await reader.fetch(
        "SELECT (p.page_count - f.freelist_count) * s.page_size "
        "FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s"
    )
    return {
        "bytes": int(pages[0]),
        "file_bytes": {"main": _size(path), "wal": _size(Path(f"{path}-wal"))},
        "tables": tables,
    }


async def snapshot_all(ctx: Context, *, table_bytes: bool) -> dict[str, dict[str, Any]]:
    """snapshot() of every deployment of the pass's mesh (one store per deployment, whatever
    its replicas)."""
    deployments = sorted({str(svc.info["deployment"]) for svc in ctx.mesh.services.values()})
    return {d: await snapshot(ctx, d, table_bytes=table_bytes) for d in deployments}


async def _count(reader: StoreReader, table: str) -> int:
    return int((await reader.fetch(f'SELECT count(*) FROM "{table}"'))[0][0])


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
