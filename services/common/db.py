"""SQLite: WAL, schema migrations by PRAGMA user_version, and transactions.

Writes take the process's writer turn, an asyncio.Lock, so that concurrent requests never
interleave statements inside one transaction. A write transaction is either
- `run(fn)`: the whole transaction as one synchronous function, executed on a plain sqlite3
  connection owned by a one-thread executor (the writer thread): BEGIN IMMEDIATE, fn(conn),
  COMMIT in ONE thread hop. The hot use cases are written this way; or
- `transaction()`: an aiosqlite connection (its own thread) and an `async with` block, one
  thread hop per statement. For the rest.
A separate reader connection (aiosqlite) sees only committed data. A point read (one row by a
key: microseconds) runs on the event loop's own thread instead, on a connection of its own
(`point_read`), where it costs less than the two thread hops of the reader; one that would wait
(the file busy) goes to the reader.
WAL with synchronous=NORMAL is durable across a killed process (the fault idmesh guards against);
set synchronous=FULL (IDMESH_DB_SYNCHRONOUS) to be durable across power loss too.

Checkpoints (copying the WAL back into the database file, and its fsync) are off the request
path: no connection checkpoints at its commit (wal_autocheckpoint=0); a checkpointer thread of
its own, on a connection of its own, runs a PASSIVE checkpoint every CHECKPOINT_INTERVAL, which
never waits for a writer or a reader and never blocks one. Each connection's page cache is
CACHE_KIB (the default 2 MB would hold a fraction of the hot pages of a store of a million
users).

A file that cannot be used now (locked by another process beyond the busy timeout, read-only,
gone, a disk I/O error, a full disk) raises StoreUnavailable from every method, and marks the
store unavailable (services.common.availability) until a write succeeds again. A COMMIT either
happens or not; only the `store.commit.after_commit` failpoint (armed with `error`) makes its
outcome unknown to the caller (CommitOutcomeUnknown), as a lost connection does on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiosqlite

from services.common.availability import StoreAvailability, guarded, sqlite_unreachable
from services.common.errors import StoreUnavailable
from services.common.failpoints import InjectedFault, async_failpoint, failpoint
from services.common.tracing import spanned, store_span

T = TypeVar("T")

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to completion, synchronously, a coroutine that never suspends: an engine-neutral
    transaction function (`async def fn(tx)`) over a SQLite tx whose methods are `async def`
    but do their work at once, so that fn runs on the writer thread in run(), in one hop.
    Awaiting anything that does suspend (a sleep, a network call) is a programming error."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError(
        "a SQLite transaction function awaited something other than its tx: it runs on the "
        "writer thread and must not suspend"
    )


class _Call:
    """One run() call as its thread sees it: `cancelled` is set (on the event loop's thread)
    when the awaiting task was cancelled; the writer thread reads it before COMMIT."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


class _Abandoned(Exception):
    """The transaction of a cancelled run() call was rolled back instead of committed."""


class _CommitLost(Exception):
    """The transaction was committed, and its outcome lost on the way back (the
    store.commit.after_commit failpoint): the caller cannot know it took effect."""


class _Member:
    """One run_grouped() call: its function, its pre-commit check, its outcome's future, and
    `cancelled` (set on the loop's thread, read on the writer thread)."""

    __slots__ = ("before_commit", "cancelled", "fn", "future")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        before_commit: Callable[[], None] | None,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.before_commit = before_commit
        self.future = future
        self.cancelled = False


# A member's outcome: (True, fn's result) or (False, the exception to raise to its caller).
_Outcome = tuple[bool, Any]

GROUP_MAX = 128  # members per grouped transaction; more wait for the next one
CHECKPOINT_INTERVAL = 0.25  # seconds between the checkpointer's PASSIVE checkpoints
CACHE_KIB = 65_536  # each connection's page cache, at most (allocated as pages are read)


class Database:
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        path: Path | None = None,
        synchronous: str = "NORMAL",
        sync_writer: sqlite3.Connection | None = None,
        sync_executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """sync_writer and sync_executor: the writer thread of run() (Database.open makes
        them); without them run() is unavailable."""
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._sync_writer = sync_writer
        self._executor = sync_executor
        self._group: list[_Member] = []  # run_grouped() calls waiting for their transaction
        self._flush_scheduled = False  # a flush that has not yet taken its calls
        self._flushers: set[asyncio.Task[None]] = set()  # strong references to flush tasks
        self._checkpointer: _Checkpointer | None = None  # Database.open starts one
        self._point_reader: sqlite3.Connection | None = None  # the loop's own (point_read)
        self.path = path  # the file, for work on a connection of its own (bulk import)
        self.synchronous = synchronous
        self.availability = StoreAvailability(
            f"sqlite:{path.name}" if path is not None else "sqlite", self._probe
        )

    @property
    def grouped_waiting(self) -> int:
        """The run_grouped() calls waiting for their transaction (not yet taken by a flush)."""
        return len(self._group)

    @classmethod
    async def open(
        cls, path: Path, migrations: Sequence[str], *, synchronous: str = "NORMAL"
    ) -> Database:
        _check_synchronous(synchronous)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Processes opening one file together (replicas sharing a store) take turns on an
        # advisory lock file: switching a new file to WAL needs a lock that SQLite does not
        # wait for (SQLITE_BUSY at once), and no migration may be applied twice.
        fd = os.open(path.with_name(path.name + ".migrate-lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            return await cls._open_locked(path, migrations, synchronous)
        finally:
            os.close(fd)  # releases the lock

    @classmethod
    async def _open_locked(
        cls, path: Path, migrations: Sequence[str], synchronous: str
    ) -> Database:
        writer = await _connect(path, synchronous)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        reader: aiosqlite.Connection | None = None
        try:
            await _migrate(writer, migrations)
            reader = await _connect(path, synchronous)
            loop = asyncio.get_running_loop()
            sync_writer = await loop.run_in_executor(executor, _connect_sync, path, synchronous)
        except BaseException:
            if reader is not None:
                await reader.close()
            await writer.close()
            executor.shutdown(wait=False)
            raise
        db = cls(
            writer,
            reader,
            path=path,
            synchronous=synchronous.upper(),
            sync_writer=sync_writer,
            sync_executor=executor,
        )
        db._checkpointer = _Checkpointer(path, synchronous)
        db._point_reader = _connect_point_reader(path)
        return db

    @spanned("sqlite.transaction")
    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) as one write transaction on the writer thread, in one thread hop:
        BEGIN IMMEDIATE, fn(conn), COMMIT; on any exception from fn (or from COMMIT), ROLLBACK
        and the exception re-raised as it is (domain errors propagate unchanged). Holds the
        same writer turn as transaction(), so the two never interleave.

        fn runs on another thread: it must only use conn and its own arguments (no event loop,
        no awaiting), and should be short (it holds the database's write lock).

        Cancellation: fn cannot be interrupted. If the awaiting task is cancelled, the caller
        gets CancelledError at once, and the transaction still ends cleanly on the writer
        thread: it is rolled back if the cancellation arrived before COMMIT began (so a
        cancelled call normally writes nothing, as with transaction()), else committed. The
        writer turn is kept until then, so the next transaction of this process starts after
        it has ended either way.
        """
        if self._executor is None or self._sync_writer is None:
            raise RuntimeError("Database.run needs the writer thread (use Database.open)")
        await self._lock.acquire()
        call = _Call()
        try:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, self._transact, call, fn)
        except BaseException:
            self._lock.release()
            raise
        # Released when the thread is done, not when the awaiting task stops waiting.
        future.add_done_callback(lambda _: self._lock.release())
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return result

    @spanned("sqlite.transaction")
    async def run_grouped(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> T:
        """Like run(fn), but concurrent calls share transactions (group commit): the calls that
        arrive while the writer is busy run together in the next transaction, one COMMIT (and
        one thread hop) for all of them, each with its own outcome:
        - in arrival order, each fn in a SAVEPOINT of its own: it sees the writes of the calls
          before it, as if they ran one after the other; when it raises, only its own writes
          are rolled back and its exception is raised to its own caller, unchanged;
        - then, right before the COMMIT, each successful call's before_commit() (on the
          writer thread; it raises to refuse to be committed, e.g. a deadline that passed).
          A call that refuses, or whose awaiting task was cancelled, is taken out: the
          transaction is rolled back and run again without it (the others' functions run
          again, so they must not have effects outside the database that matter twice), and
          its caller gets the exception (a cancelled caller has gone already). So a call's
          writes are committed only if its before_commit() passed right before that commit.
        - if BEGIN or COMMIT fails, every call of the group gets that exception.
        At most GROUP_MAX calls share a transaction. A lone call costs two statements more
        than run() (its SAVEPOINT and RELEASE).
        """
        if self._executor is None or self._sync_writer is None:
            raise RuntimeError("Database.run_grouped needs the writer thread (use Database.open)")
        loop = asyncio.get_running_loop()
        member = _Member(fn, before_commit, loop.create_future())
        self._group.append(member)
        if not self._flush_scheduled:
            self._schedule_flush(loop)
        try:
            result: T = await asyncio.shield(member.future)
        except asyncio.CancelledError:
            member.cancelled = True
            raise
        except Exception as exc:
            self._raise_refusal(exc)
        self.availability.mark_available()
        return result

    def guard(self, target: T) -> T:
        """target (work on a connection of its own to this file: a bulk import's staging)
        with the failures that say the file cannot be used raised as StoreUnavailable, and
        counted here, as this database's own methods do."""
        return guarded(target, self._refusal)

    def _raise_refusal(self, exc: Exception) -> NoReturn:
        """Raise StoreUnavailable (CommitOutcomeUnknown) for exc if it says the file cannot be
        used now, else exc itself (as the PostgreSQL database does)."""
        refusal = self._refusal(exc)
        if refusal is None:
            raise exc
        raise refusal from exc

    def _refusal(self, exc: BaseException) -> StoreUnavailable | None:
        """The StoreUnavailable to raise for exc, if it says the file cannot be used now."""
        if isinstance(exc, _CommitLost):
            return self.availability.refuse(exc.__cause__ or exc, outcome_unknown=True)
        if sqlite_unreachable(exc):
            return self.availability.refuse(exc)
        return None

    async def _probe(self) -> None:
        """Whether the file takes a write now: the schema version written back unchanged, in a
        transaction of its own (StoreAvailability runs it while the store is unavailable)."""

        def rewrite_version(conn: sqlite3.Connection) -> None:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version={version}")

        await self.run(rewrite_version)

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = True
        task = loop.create_task(self._flush_group(), name="sqlite-group")
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush_group(self) -> None:
        """Take the writer turn, then run the waiting calls (up to GROUP_MAX) in one
        transaction; calls arriving meanwhile schedule the next flush."""
        await self._lock.acquire()
        batch, self._group = self._group[:GROUP_MAX], self._group[GROUP_MAX:]
        loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        if self._group:
            self._schedule_flush(loop)
        try:
            if self._executor is None:
                raise RuntimeError("the database was closed")
            future = loop.run_in_executor(self._executor, self._transact_group, batch)
        except BaseException as exc:
            self._lock.release()
            outcomes: list[_Outcome] = [(False, exc)] * len(batch)
        else:
            future.add_done_callback(lambda _: self._lock.release())
            try:
                outcomes = await asyncio.shield(future)
            except BaseException:  # this task cancelled (the loop is shutting down)
                for member in batch:
                    member.future.cancel()
                raise
        # One caller resumed per event-loop iteration, not the whole group in one: a gRPC aio
        # server accepts one new call per turn of its accept loop (about two iterations), so a
        # long iteration that resumes a hundred handlers would starve accepting, and calls left
        # unaccepted for 30 s are cancelled by gRPC (grpc.server_max_unrequested_time_in_server).
        for member, (ok, value) in zip(batch, outcomes, strict=True):
            if member.future.done():
                continue
            if ok:
                member.future.set_result(value)
            else:
                member.future.set_exception(value)
            await asyncio.sleep(0)

    def _transact_group(self, batch: list[_Member]) -> list[_Outcome]:
        """On the writer thread: one transaction for the batch (see run_grouped)."""
        conn = self._sync_writer
        assert conn is not None
        final: dict[int, _Outcome] = {}
        todo = list(range(len(batch)))
        try:
            while todo:
                for i in todo:
                    if batch[i].cancelled:
                        final[i] = (False, _Abandoned())
                todo = [i for i in todo if i not in final]
                if not todo:
                    break
                tentative: dict[int, _Outcome] = {}
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for i in todo:
                        conn.execute("SAVEPOINT grouped")
                        try:
                            tentative[i] = (True, batch[i].fn(conn))
                        except Exception as exc:
                            conn.execute("ROLLBACK TO grouped")
                            tentative[i] = (False, exc)
                        conn.execute("RELEASE grouped")
                    refused: dict[int, _Outcome] = {}
                    for i, (ok, _) in tentative.items():
                        member = batch[i]
                        if not ok:
                            continue
                        if member.cancelled:
                            refused[i] = (False, _Abandoned())
                        elif member.before_commit is not None:
                            try:
                                member.before_commit()
                            except Exception as exc:
                                refused[i] = (False, exc)
                    if refused:
                        conn.execute("ROLLBACK")
                        final.update(refused)
                        todo = [i for i in todo if i not in final]
                        continue
                    failpoint("store.commit.before_commit")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                try:
                    failpoint("store.commit.after_commit")
                except InjectedFault as exc:
                    lost = _CommitLost()
                    lost.__cause__ = exc
                    tentative = {
                        i: (False, lost) if ok else (ok, v) for i, (ok, v) in tentative.items()
                    }
                final.update(tentative)
                todo = []
        except Exception as exc:  # BEGIN, SAVEPOINT or COMMIT failed: the group failed
            for i in range(len(batch)):
                final.setdefault(i, (False, exc))
        return [final[i] for i in range(len(batch))]

    def _transact(self, call: _Call, fn: Callable[[sqlite3.Connection], T]) -> T:
        """On the writer thread."""
        conn = self._sync_writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            if call.cancelled:
                raise _Abandoned
            failpoint("store.commit.before_commit")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            failpoint("store.commit.after_commit")
        except InjectedFault as exc:
            raise _CommitLost from exc
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (cancellation included)."""
        async with store_span("sqlite.transaction"), self._lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await asyncio.shield(self._writer.rollback())
                    raise
                try:
                    await async_failpoint("store.commit.before_commit")
                    await asyncio.shield(self._writer.commit())
                except BaseException:
                    if self._writer.in_transaction:
                        await asyncio.shield(self._writer.rollback())
                    raise
                try:
                    await async_failpoint("store.commit.after_commit")
                except InjectedFault as exc:
                    raise _CommitLost from exc
            except Exception as exc:
                self._raise_refusal(exc)
        self.availability.mark_available()

    @asynccontextmanager
    async def write_lock(self) -> AsyncIterator[None]:
        """This process's writer turn, without the writer connection: for a transaction on
        another connection to the same file (a bulk import's merge) that this process's own
        transactions must wait for rather than fail on SQLITE_BUSY."""
        async with self._lock:
            yield

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        """One thread hop: execute and fetch together."""
        try:
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        except Exception as exc:
            self._raise_refusal(exc)

    async def point_read(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of a read that takes microseconds (a row by its key), run on the
        event loop's thread; on the reader's thread when the file is busy. Only committed
        data, as fetchone."""
        conn = self._point_reader
        if conn is not None:
            try:
                row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
                return row
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    self._raise_refusal(exc)
        return await self.fetchone(sql, params)

    async def close(self) -> None:
        """Close the connections, after the transaction in progress (a cancelled run()'s
        included) has ended."""
        await self.availability.close()
        point_reader, self._point_reader = self._point_reader, None
        if point_reader is not None:
            point_reader.close()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        async with self._lock:
            executor, self._executor = self._executor, None
            sync_writer, self._sync_writer = self._sync_writer, None
            if executor is not None:
                if sync_writer is not None:
                    await asyncio.get_running_loop().run_in_executor(executor, sync_writer.close)
                executor.shutdown(wait=False)
            await self._reader.close()
            await self._writer.close()


def _check_synchronous(synchronous: str) -> None:
    if synchronous.upper() not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")


# busy_timeout first: switching a new file to WAL takes a lock that another process (or
# connection) opening the same file may hold for a moment.
_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA wal_autocheckpoint=0",  # the checkpointer's job (_Checkpointer)
    f"PRAGMA cache_size=-{CACHE_KIB}",
)


def _connect_point_reader(path: Path) -> sqlite3.Connection:
    """point_read's connection: read-only, never waiting for a lock (busy_timeout 0: a busy
    file sends the read to the reader's thread instead of blocking the event loop)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Checkpointer:
    """A thread that checkpoints the WAL every CHECKPOINT_INTERVAL on a connection of its own
    (PASSIVE: as much as it can without waiting for anyone), so that no commit pays for a
    checkpoint. A failed checkpoint is retried at the next turn; the WAL only grows meanwhile."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=0")
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-checkpoint-{path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(CHECKPOINT_INTERVAL):
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def stop(self) -> None:
        """Stop the thread (after the checkpoint in progress) and close its connection."""
        self._stopping.set()
        self._thread.join()
        self._conn.close()


async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
    _check_synchronous(synchronous)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    for pragma in (*_PRAGMAS, f"PRAGMA synchronous={synchronous.upper()}"):
        await conn.execute(pragma)
    return conn


def _connect_sync(path: Path, synchronous: str) -> sqlite3.Connection:
    """The writer thread's connection: the same PRAGMAs as _connect, rows as sqlite3.Row
    (aiosqlite.Row is sqlite3.Row), autocommit mode (run() issues BEGIN and COMMIT)."""
    _check_synchronous(synchronous)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        for pragma in (*_PRAGMAS, f"PRAGMA synchronous={synchronous.upper()}"):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    """Apply migrations[user_version:], each in one transaction, under the advisory lock of
    Database.open, so that no migration is applied twice. (Python 3.11's executescript commits
    any open transaction first, so a BEGIN IMMEDIATE around the version check would not hold.)"""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this code knows ({len(migrations)})"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
        )
