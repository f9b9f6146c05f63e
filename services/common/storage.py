"""Which engine a service keeps its state in, chosen once for every service:

IDMESH_DATABASE_URL     postgresql://user:password@host:5432/database (or postgres://...): the
                        service's stores on PostgreSQL (asyncpg pool), shared by its replicas;
                        one database per service deployment. Unset: SQLite, as below. With a
                        standby: every server, ...@primary:5432,standby:5432/database?
                        target_session_attrs=read-write, and connections go to whichever is
                        the primary (after a promotion, the new one).
IDMESH_DB_PATH          the SQLite file (required without IDMESH_DATABASE_URL)
IDMESH_DB_SYNCHRONOUS   SQLite synchronous: NORMAL (default), FULL, EXTRA or OFF
IDMESH_DB_POOL_SIZE     PostgreSQL: connections per replica (default 10)

A database opened by open_database inside `watching_stores(watch)` (the service runner wraps
each service's wiring in it) is handed to watch: the server then reports NOT_SERVING while it
cannot be reached (services.common.availability).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.common.availability import StoreAvailability
from services.common.config import ConfigError, Env
from services.common.db import Database
from services.common.pg import PgDatabase

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
StoreWatcher = Callable[[StoreAvailability], None]
_WATCHER: ContextVar[StoreWatcher | None] = ContextVar("idmesh_store_watcher", default=None)
_POSTGRES_SCHEMES = ("postgresql", "postgres")


class Row(Protocol):
    """A result row by column name, whichever the engine (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Engine(Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where a service's state lives: a SQLite file, or a PostgreSQL database."""

    db_path: Path | None = None  # SQLite; None with a database_url
    db_synchronous: str = "NORMAL"
    database_url: str | None = None  # PostgreSQL
    pool_size: int = 10

    def __post_init__(self) -> None:
        if (self.db_path is None) == (self.database_url is None):
            raise ValueError("StoreSettings: give exactly one of db_path and database_url")

    @property
    def engine(self) -> Engine:
        return Engine.SQLITE if self.database_url is None else Engine.POSTGRESQL

    @classmethod
    def from_env(cls, env: Env) -> StoreSettings:
        url = env.str("DATABASE_URL", "")
        if url:
            scheme = urlsplit(url).scheme
            if scheme not in _POSTGRES_SCHEMES:
                raise ConfigError(
                    f"{env.name('DATABASE_URL')}: expected a postgresql://user:password@host/db "
                    f"URL, got one starting {scheme!r}:// (unset it for SQLite)"
                )
            return cls(
                db_path=None,
                database_url=url,
                pool_size=env.int("DB_POOL_SIZE", 10, minimum=1, maximum=1000),
            )
        synchronous = env.str("DB_SYNCHRONOUS", "NORMAL").upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"{env.name('DB_SYNCHRONOUS')}: expected one of {', '.join(SYNCHRONOUS_MODES)}, "
                f"got {synchronous!r}"
            )
        return cls(db_path=env.path("DB_PATH"), db_synchronous=synchronous)

    def describe(self) -> str:
        """For logs: the engine and where, without the URL's password."""
        if self.database_url is None:
            return f"sqlite:{self.db_path}"
        parts = urlsplit(self.database_url)
        # every host of a multi-host URL ("h1:5432,h2:5432"), without user, password and ports
        hosts = [_host(h) for h in parts.netloc.rpartition("@")[2].split(",") if h]
        return f"postgresql:{','.join(hosts) or 'local socket'}{parts.path}"


def _host(address: str) -> str:
    """The host of a URL's host:port, lowercased: db:5432 -> db, [::1]:5432 -> [::1]."""
    if address.startswith("["):
        return address[: address.index("]") + 1].lower()
    return address.rpartition(":")[0].lower() if ":" in address else address.lower()


@contextmanager
def watching_stores(watch: StoreWatcher) -> Iterator[None]:
    """Hand every database open_database opens in this context (and in tasks started from it)
    to watch: GrpcServer.watch_store, so that health follows the stores' availability."""
    token = _WATCHER.set(watch)
    try:
        yield
    finally:
        _WATCHER.reset(token)


@asynccontextmanager
async def open_database(
    settings: StoreSettings,
    service: str,
    *,
    sqlite: Sequence[str],
    postgresql: Sequence[str],
) -> AsyncIterator[Database | PgDatabase]:
    """The service's database on the configured engine, migrated (each engine has its own
    migrations); closed on exit."""
    db: Database | PgDatabase
    if settings.database_url is not None:
        db = await PgDatabase.open(
            settings.database_url, service, postgresql, max_size=settings.pool_size
        )
    else:
        assert settings.db_path is not None
        db = await Database.open(settings.db_path, sqlite, synchronous=settings.db_synchronous)
    watch = _WATCHER.get()
    if watch is not None:
        watch(db.availability)
    try:
        yield db
    finally:
        await db.close()
