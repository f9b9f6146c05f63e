"""PostgreSQL (asyncpg): a connection pool, versioned migrations, transactions, LISTEN.

asyncpg runs in the event loop: a statement costs no thread hop. Several replicas of a service
share one database; each service deployment has a database of its own (two registries, two
databases), and the `schema_migrations` table says whose it is.

Migrations are applied once, by whichever replica starts first: it takes a session advisory lock
(pg_advisory_lock) for the whole check-and-apply, so a replica starting at the same moment
waits, then finds them applied. Each migration runs in one transaction with its row in
`schema_migrations`, so a crash mid-way leaves the schema at the previous version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
from asyncpg import Connection, Record

from services.common.backoff import Backoff
from services.common.logging import get_logger
from services.common.tracing import store_span

log = get_logger("idmesh.pg")

# The advisory lock key of migrations ("idmesh" in ASCII): one per database.
MIGRATION_LOCK: Final = 0x69646D657368

_SCHEMA_MIGRATIONS: Final = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        service    TEXT NOT NULL,
        version    INTEGER NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (service, version)
    )
"""


class PgDatabase:
    """A pool of connections to one service's database."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def open(
        cls,
        url: str,
        service: str,
        migrations: Sequence[str],
        *,
        min_size: int = 1,
        max_size: int = 10,
    ) -> PgDatabase:
        """Connect, apply the missing migrations of `service` (see the module docstring), and
        open the pool."""
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, service, migrations)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, reset=_reset_on_release
        )
        return cls(pool, url)

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Connection]:
        """A connection in a transaction: committed when the block ends, rolled back when it
        raises (cancellation included)."""
        async with (
            store_span("postgresql.transaction"),
            self._pool.acquire() as conn,
            conn.transaction(isolation=isolation),
        ):
            yield conn

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return list(await self._pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        row: Record | None = await self._pool.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """One statement in a transaction of its own; its status ("UPDATE 3")."""
        status: str = await self._pool.execute(sql, *args)
        return status

    @asynccontextmanager
    async def listening(
        self, channel: str, on_payloads: Callable[[list[str]], None]
    ) -> AsyncIterator[None]:
        """LISTEN on `channel` on a connection of its own while the block runs, calling
        on_payloads with each notification's payload; the connection is re-established (with
        backoff) when it drops. on_payloads([]) once LISTEN is in place, first and after each
        reconnection, tells that notifications may have been missed before (a commit between
        the caller's last read and the LISTEN is not lost)."""
        task = asyncio.create_task(self._listen(channel, on_payloads), name=f"pg-listen-{channel}")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait({task})

    async def _listen(self, channel: str, on_payloads: Callable[[list[str]], None]) -> None:
        delays = Backoff(initial=0.2, maximum=5.0).delays()
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("pg.listen_connect_failed", channel=channel, error=str(exc))
                await asyncio.sleep(next(delays))
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(channel, lambda *args: on_payloads([str(args[3])]))
                on_payloads([])  # notifications sent before this LISTEN are lost
                delays = Backoff(initial=0.2, maximum=5.0).delays()
                await lost.wait()
                log.warning("pg.listen_connection_lost", channel=channel)
            finally:
                if not conn.is_closed():
                    await asyncio.shield(conn.close())

    async def close(self) -> None:
        await self._pool.close()


async def _reset_on_release(conn: Connection) -> None:
    """A pooled connection back from use: only an open transaction to end. (asyncpg's default
    reset also drops session state, one more round trip per use, and the stores keep none on
    pooled connections: LISTEN and advisory locks have connections of their own.)"""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def migrate(conn: Connection, service: str, migrations: Sequence[str]) -> None:
    """Apply migrations[version:] of `service` under the migration advisory lock."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_SCHEMA_MIGRATIONS)
        owners = await conn.fetch("SELECT DISTINCT service FROM schema_migrations")
        others = sorted(row["service"] for row in owners if row["service"] != service)
        if others:
            raise RuntimeError(
                f"this database holds the schema of {', '.join(others)}, not of {service}: "
                "give each service deployment a database of its own"
            )
        version = int(
            await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE service = $1",
                service,
            )
        )
        if version > len(migrations):
            raise RuntimeError(
                f"database schema version {version} of {service} is newer than this code knows "
                f"({len(migrations)})"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO schema_migrations (service, version) VALUES ($1, $2)",
                    service,
                    number,
                )
            log.info("pg.migrated", service=service, version=number)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
