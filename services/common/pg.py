"""PostgreSQL (asyncpg): a connection pool, versioned migrations, transactions, LISTEN.

asyncpg runs in the event loop: a statement costs no thread hop. Several replicas of a service
share one database; each service deployment has a database of its own (two registries, two
databases), and the `schema_migrations` table says whose it is.

Migrations are applied once, by whichever replica starts first: it takes a session advisory lock
(pg_advisory_lock) for the whole check-and-apply, so a replica starting at the same moment
waits, then finds them applied. Each migration runs in one transaction with its row in
`schema_migrations`, so a crash mid-way leaves the schema at the previous version.

A server that cannot be reached or used now (connection refused or lost, starting up, in
recovery, shutting down, a standby; no pooled connection within `acquire_timeout`) raises
StoreUnavailable from every method and marks the store unavailable
(services.common.availability) until a statement succeeds again. A connection lost while
COMMIT was on its way raises CommitOutcomeUnknown: the transaction may or may not have been
committed, and the caller's retry with its idempotency key finds out which.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn, TypeVar

import asyncpg
from asyncpg import Connection, Record

from services.common.availability import StoreAvailability, guarded, postgres_unreachable
from services.common.backoff import Backoff
from services.common.errors import StoreUnavailable
from services.common.failpoints import async_failpoint
from services.common.logging import get_logger
from services.common.tracing import store_span

log = get_logger("idmesh.pg")
T = TypeVar("T")

# The advisory lock key of migrations ("idmesh" in ASCII): one per database.
MIGRATION_LOCK: Final = 0x69646D657368
# How long a call waits for a pooled connection (a connection that cannot be made counts as
# waiting) before it is answered STORE_UNAVAILABLE; and how long making one may take.
ACQUIRE_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 5.0

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

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        service: str = "postgresql",
        acquire_timeout: float = ACQUIRE_TIMEOUT,
    ) -> None:
        self._pool = pool
        self.url = url
        self.acquire_timeout = acquire_timeout
        self.availability = StoreAvailability(f"postgresql:{service}", self._probe)

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
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
        try:
            await migrate(conn, service, migrations)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            reset=_reset_on_release,
            timeout=CONNECT_TIMEOUT,
        )
        return cls(pool, url, service=service)

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Connection]:
        """A connection in a transaction: committed when the block ends, rolled back when it
        raises (cancellation included)."""
        committing = False
        try:
            async with store_span("postgresql.transaction"), self._acquire() as conn:
                async with conn.transaction(isolation=isolation):
                    yield conn
                    committing = True
                    await async_failpoint("store.commit.before_commit")
                await async_failpoint("store.commit.after_commit")
                committing = False
        except Exception as exc:
            self._raise_refusal(exc, outcome_unknown=committing)
        self.availability.mark_available()

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        """A pooled connection, waiting at most acquire_timeout for one."""
        try:
            conn = await self._pool.acquire(timeout=self.acquire_timeout)
        except Exception as exc:  # a timeout, or the connection the pool made failed
            if not postgres_unreachable(exc, connecting=True):
                raise
            raise self.availability.refuse(exc) from exc
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    def guard(self, target: T) -> T:
        """target (work on a connection of its own: a bulk import's staging, with TEMP tables
        and COPY) with the failures that say the server cannot be reached, connecting included,
        raised as StoreUnavailable and counted here, as this database's own methods do."""

        def refusal(exc: BaseException) -> StoreUnavailable | None:
            if isinstance(exc, StoreUnavailable) or not postgres_unreachable(exc, connecting=True):
                return None
            return self.availability.refuse(exc)

        return guarded(target, refusal)

    def _raise_refusal(self, exc: Exception, *, outcome_unknown: bool = False) -> NoReturn:
        """Raise StoreUnavailable (CommitOutcomeUnknown) for exc if it says the server cannot be
        reached now, else exc itself."""
        if isinstance(exc, StoreUnavailable) or not postgres_unreachable(exc):
            raise exc
        raise self.availability.refuse(exc, outcome_unknown=outcome_unknown) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        try:
            async with self._acquire() as conn:
                rows = list(await conn.fetch(sql, *args))
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        try:
            async with self._acquire() as conn:
                row: Record | None = await conn.fetchrow(sql, *args)
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            async with self._acquire() as conn:
                value = await conn.fetchval(sql, *args)
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return value

    async def execute(self, sql: str, *args: Any) -> str:
        """One statement in a transaction of its own; its status ("UPDATE 3")."""
        try:
            async with self._acquire() as conn:
                status: str = await conn.execute(sql, *args)
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return status

    async def _probe(self) -> None:
        """Whether the server takes writes now: reachable, and the primary (not a standby)."""
        if await self.fetchval("SELECT pg_is_in_recovery()"):
            raise StoreUnavailable("the server is a standby")

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
        failing = False  # said once per outage, not at every attempt
        while True:
            lost = asyncio.Event()
            conn: Connection | None = None
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(channel, lambda *args: on_payloads([str(args[3])]))
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as exc:  # no server, a server in recovery, or the connection lost at once
                if conn is not None:
                    conn.terminate()
                if not failing:
                    log.warning("pg.listen_connect_failed", channel=channel, error=str(exc))
                    failing = True
                await asyncio.sleep(next(delays))
                continue
            try:
                if failing:
                    log.info("pg.listen_reconnected", channel=channel)
                    failing = False
                on_payloads([])  # notifications sent before this LISTEN are lost
                delays = Backoff(initial=0.2, maximum=5.0).delays()
                await lost.wait()
                log.warning("pg.listen_connection_lost", channel=channel)
            finally:
                if not conn.is_closed():
                    try:
                        await asyncio.shield(conn.close(timeout=CONNECT_TIMEOUT))
                    except Exception:  # the server went away meanwhile
                        conn.terminate()

    async def close(self) -> None:
        await self.availability.close()
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
