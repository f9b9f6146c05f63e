"""Whether a service's database can be reached, and which failures say it cannot.

A store that cannot be reached is a transient fault, not a bug. The shared store layer
(services.common.db for SQLite, services.common.pg for PostgreSQL) recognises such failures
(`sqlite_unreachable`, `postgres_unreachable`) and raises StoreUnavailable (or
CommitOutcomeUnknown, when the connection was lost while committing) instead, which every
service's error table answers UNAVAILABLE with RetryInfo.

Each database has a StoreAvailability: the first such failure marks the store unavailable (one
log line `store.unavailable`, the gauge `idmesh_store_available` at 0, the server's health
NOT_SERVING) and starts a probe that tries the store with backoff until it answers; the probe's
success, or any successful operation, marks it available again (one line `store.available`,
the gauge at 1, health SERVING). Every refused operation counts in
`idmesh_store_unavailable_total`; nothing is logged per call.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

import asyncpg
from prometheus_client import Counter, Gauge

from services.common.backoff import Backoff
from services.common.errors import CommitOutcomeUnknown, StoreUnavailable
from services.common.failpoints import InjectedFault
from services.common.logging import get_logger

log = get_logger("idmesh.store")

STORE_AVAILABLE = Gauge(
    "idmesh_store_available",
    "1 while the service's database answers, 0 while it cannot be reached (health is "
    "NOT_SERVING then), by store.",
    ["store"],
)
STORE_UNAVAILABLE = Counter(
    "idmesh_store_unavailable",
    "Store operations refused because the database could not be reached (answered "
    "UNAVAILABLE: STORE_UNAVAILABLE or COMMIT_OUTCOME_UNKNOWN), by store.",
    ["store"],
)

MESSAGE: Final = "the service's database cannot be reached now; try again in a moment"
OUTCOME_UNKNOWN_MESSAGE: Final = (
    "the connection to the service's database was lost while committing, so whether this "
    "call took effect is unknown; retry it with the same idempotency key to find out"
)

# SQLite primary result codes of a store that cannot be used now: BUSY (locked beyond the busy
# timeout), READONLY (a read-only file, or one moved or deleted while open), IOERR (disk I/O),
# FULL (disk full), CANTOPEN (the file or its directory gone or unwritable).
_SQLITE_UNREACHABLE: Final = frozenset({5, 8, 10, 13, 14})

# PostgreSQL: class 08 (connection exceptions: refused, lost, does not exist), 57P01-57P03
# (admin or crash shutdown; starting up, shutting down, in recovery), 53300 (too many
# connections), 25006 (a read-only transaction: the server is a standby, not the primary).
_POSTGRES_UNREACHABLE: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
)


def sqlite_unreachable(exc: BaseException) -> bool:
    """Whether exc says the SQLite file cannot be used now (see _SQLITE_UNREACHABLE)."""
    if isinstance(exc, InjectedFault):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _SQLITE_UNREACHABLE
    text = str(exc)
    return text.startswith(("database is locked", "disk I/O error", "unable to open database"))


def postgres_unreachable(exc: BaseException, *, connecting: bool = False) -> bool:
    """Whether exc says the PostgreSQL server cannot be reached or used now: a connection lost
    or closed under a statement, a server that is starting up, in recovery, shutting down or a
    standby; while connecting (a pool's acquire), any socket error too (refused, no route,
    unknown host, timed out). A socket error raised from a transaction's body is the body's
    own (a file it read), not the server's."""
    if isinstance(exc, (ConnectionError, *_POSTGRES_UNREACHABLE)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc) or "connection was closed" in str(exc)
    if connecting:
        return isinstance(exc, (OSError, asyncpg.TargetServerAttributeNotMatched))
    return False


T = TypeVar("T")
Probe = Callable[[], Awaitable[None]]
Refusal = Callable[[BaseException], StoreUnavailable | None]
Listener = Callable[[bool], None]


class StoreAvailability:
    """Whether one database answers (see the module doc). `probe` tries the store once and
    raises if it cannot be used; it runs only while the store is marked unavailable."""

    def __init__(self, store: str, probe: Probe, *, backoff: Backoff | None = None) -> None:
        self.store = store
        self.available = True
        self._probe = probe
        self._backoff = backoff or Backoff(initial=0.2, maximum=2.0)
        self._listeners: list[Listener] = []
        self._prober: asyncio.Task[None] | None = None
        self._down_since = 0.0
        self._refused = STORE_UNAVAILABLE.labels(store=store)
        self._gauge = STORE_AVAILABLE.labels(store=store)
        self._gauge.set(1)

    def watch(self, listener: Listener) -> Callable[[], None]:
        """Call listener(available) on each transition; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def refuse(self, cause: BaseException, *, outcome_unknown: bool = False) -> StoreUnavailable:
        """The error to raise for an operation that failed with cause (an unreachable store):
        counted, and the store marked unavailable (logged once, at the transition)."""
        self._refused.inc()
        self.mark_unavailable(cause)
        if outcome_unknown:
            return CommitOutcomeUnknown(OUTCOME_UNKNOWN_MESSAGE)
        return StoreUnavailable(MESSAGE)

    def mark_unavailable(self, cause: BaseException) -> None:
        if not self.available:
            return
        self.available = False
        self._down_since = time.monotonic()
        self._gauge.set(0)
        log.warning("store.unavailable", store=self.store, error=_describe(cause))
        self._notify()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (closing): the next successful operation marks it available
        if self._prober is None or self._prober.done():
            self._prober = loop.create_task(self._probe_until_available(), name="store-probe")

    def mark_available(self) -> None:
        """A successful operation: the store answers (a no-op unless it was unavailable)."""
        if self.available:
            return
        self.available = True
        self._gauge.set(1)
        log.info(
            "store.available",
            store=self.store,
            unavailable_seconds=round(time.monotonic() - self._down_since, 3),
        )
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener(self.available)

    async def _probe_until_available(self) -> None:
        delays = self._backoff.delays()
        while not self.available:
            await asyncio.sleep(next(delays))
            if self.available:
                return
            try:
                await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception:  # still unreachable (StoreUnavailable, or the raw cause)
                continue
            self.mark_available()

    async def close(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None:
            prober.cancel()
            await asyncio.wait({prober})
        self._listeners.clear()


def _describe(exc: BaseException) -> str:
    """The cause for the log: its type and the first line of its message, shortened."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def guarded(target: T, refusal: Refusal) -> T:
    """target, with its coroutine methods raising refusal(exc) (a StoreUnavailable) instead of
    a failure that says the store cannot be reached: for work on a connection of its own,
    outside the database's methods (a bulk import's staging area). A method that returns
    target itself returns the guarded one."""
    return cast(T, _Guarded(target, refusal))


class _Guarded:
    def __init__(self, target: Any, refusal: Refusal) -> None:
        self._target = target
        self._refusal = refusal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await attr(*args, **kwargs)
            except Exception as exc:
                refused = self._refusal(exc)
                if refused is None:
                    raise
                raise refused from exc
            return self if result is self._target else result

        return call


def log_failure(logger: Any, event: str, exc: BaseException | None, **fields: Any) -> None:
    """A background job's failure, logged once: a store that cannot be reached now
    (StoreUnavailable: a transient fault, whose coming and going StoreAvailability reports
    once) as a warning with its message; anything else as an error with its traceback."""
    if isinstance(exc, StoreUnavailable):
        logger.warning(event, error=str(exc), **fields)
    else:
        logger.error(event, exc_info=exc, **fields)
