"""The SQLite adapter: migrations once, transactions all or nothing, run() in one hop."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest

from services.common.db import Database
from services.common.errors import StoreUnavailable
from tests.eventually import eventually

MIGRATIONS = ["CREATE TABLE a (x INTEGER PRIMARY KEY);", "CREATE TABLE b (y TEXT);"]


async def test_concurrent_openers_of_a_new_file_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    dbs = await asyncio.gather(*(Database.open(path, MIGRATIONS) for _ in range(4)))
    try:
        row = await dbs[0].fetchone("PRAGMA user_version")
        assert row is not None and row[0] == len(MIGRATIONS)
    finally:
        for db in dbs:
            await db.close()


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "t.db", MIGRATIONS)
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO a (x) VALUES (1)")
                raise RuntimeError("boom")
        assert await db.fetchall("SELECT x FROM a") == []
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO a (x) VALUES (2)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM a")] == [(2,)]
    finally:
        await db.close()


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = await Database.open(path, MIGRATIONS)
    await db.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        await Database.open(path, MIGRATIONS[:1])


def writer_turn_waiters(db: Database) -> int:
    """The tasks waiting for the writer turn (asyncio.Lock keeps them in _waiters)."""
    return len(db._lock._waiters or ())


# --- run(): a whole transaction as one function on the writer thread --------------------------


class Refused(Exception):
    """A domain error raised inside a transaction function."""


def insert(*values: int) -> Callable[[sqlite3.Connection], int]:
    def fn(conn: sqlite3.Connection) -> int:
        conn.executemany("INSERT INTO a (x) VALUES (?)", [(v,) for v in values])
        return len(values)

    return fn


async def rows(db: Database) -> list[int]:
    return [r[0] for r in await db.fetchall("SELECT x FROM a ORDER BY x")]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "t.db", MIGRATIONS)
    yield database
    await database.close()


async def test_run_commits_the_function_and_returns_its_result(db: Database) -> None:
    assert await db.run(insert(1, 2)) == 2
    assert await rows(db) == [1, 2]


async def test_run_gives_rows_by_name_on_a_connection_with_foreign_keys_on(db: Database) -> None:
    def read(conn: sqlite3.Connection) -> tuple[int, int, str]:
        conn.execute("INSERT INTO a (x) VALUES (7)")
        row = conn.execute("SELECT x FROM a").fetchone()
        foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return row["x"], foreign_keys, journal

    assert await db.run(read) == (7, 1, "wal")


async def test_commits_never_checkpoint_the_checkpointer_thread_does(db: Database) -> None:
    """No connection checkpoints at its commit (a commit that crosses the WAL's size would
    pay the copy and its fsync on the request path); the checkpointer's thread copies the WAL
    into the database file in the background."""
    assert db.path is not None

    def autocheckpoint(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert await db.run(autocheckpoint) == 0
    before = db.path.stat().st_size
    blob = "x" * 3000  # about a page per row: the database file grows by ~2,000 pages

    def rows_from(start: int) -> Callable[[sqlite3.Connection], None]:
        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO b (y) VALUES (?)", [(f"{i}{blob}",) for i in range(start, start + 200)]
            )

        return fn

    for start in range(0, 2000, 200):
        await db.run(rows_from(start))
    await eventually(lambda: db.path is not None and db.path.stat().st_size > before + 4_000_000)


async def test_run_rolls_back_everything_when_the_function_raises(db: Database) -> None:
    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO a (x) VALUES (1)")
        conn.execute("INSERT INTO b (y) VALUES ('one')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await db.run(half)
    assert await rows(db) == []
    assert await db.fetchall("SELECT y FROM b") == []
    assert await db.run(insert(2)) == 1  # the connection is usable again, not mid-transaction
    assert await rows(db) == [2]


async def test_run_propagates_a_domain_error_unchanged(db: Database) -> None:
    refusal = Refused("no agreement")

    def refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO a (x) VALUES (1)")
        raise refusal

    with pytest.raises(Refused) as caught:
        await db.run(refuse)
    assert caught.value is refusal
    assert await rows(db) == []


async def test_run_rolls_back_a_failed_statement_and_propagates_the_sqlite_error(
    db: Database,
) -> None:
    await db.run(insert(1))
    with pytest.raises(sqlite3.IntegrityError):
        await db.run(insert(2, 1))  # 2 is written, then 1 is a duplicate key
    assert await rows(db) == [1]


async def test_concurrent_runs_are_serialised(db: Database) -> None:
    inside = 0
    most_inside = 0
    lock = threading.Lock()

    def add(conn: sqlite3.Connection, value: int) -> int:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        (count,) = conn.execute("SELECT count(*) FROM a").fetchone()
        time.sleep(0.001)  # another writer would interleave here
        conn.execute("INSERT INTO a (x) VALUES (?)", (value * 1000 + count,))
        with lock:
            inside -= 1
        return int(count)

    counts = await asyncio.gather(*(db.run(partial(add, value=v)) for v in range(20)))
    assert most_inside == 1
    assert sorted(counts) == list(range(20))  # each saw every earlier commit


async def test_run_and_transaction_interleave_safely(db: Database) -> None:
    async def with_transaction(value: int) -> None:
        async with db.transaction() as conn:
            async with conn.execute("SELECT count(*) FROM a") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            await asyncio.sleep(0)  # suspended mid-transaction: the run() calls get the loop
            await conn.execute("INSERT INTO a (x) VALUES (?)", (value,))

    await asyncio.gather(
        *(
            with_transaction(v) if v % 2 else db.run(insert(v))
            for v in range(1, 41)  # alternating: neither may see the other half-done
        )
    )
    assert await rows(db) == list(range(1, 41))


async def test_a_cancelled_run_ends_its_transaction_before_the_next_one_starts(
    db: Database,
) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO a (x) VALUES (1)")
        started.set()
        assert release.wait(5)

    task = asyncio.create_task(db.run(slow))
    try:
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # at once, while the function still runs on the writer thread
        # The caller has gone, but the writer turn stays taken until the transaction ends.
        assert db._lock.locked()
        after = asyncio.create_task(db.run(insert(2)))
    finally:
        release.set()
    assert await after == 1
    # Cancelled before COMMIT began: rolled back, and the connection is not left mid-transaction.
    assert await rows(db) == [2]
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO a (x) VALUES (3)")
    assert await rows(db) == [2, 3]


async def test_close_waits_for_a_cancelled_run_to_end(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "t.db", MIGRATIONS)
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        assert release.wait(5)
        order.append("transaction ended")

    task = asyncio.create_task(db.run(slow))
    try:
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        closing = asyncio.create_task(db.close())
        closing.add_done_callback(lambda _: order.append("closed"))
        # close() asks for the writer turn, which the cancelled transaction still holds
        await eventually(lambda: closing.done() or writer_turn_waiters(db) == 1, what="close")
        assert not closing.done()
    finally:
        release.set()
    await closing
    assert order == ["transaction ended", "closed"]
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError, match="writer thread"):
        await db.run(insert(1))


# --- run_grouped(): concurrent calls share a transaction (group commit) -----------------------


class Blocker:
    """Holds the writer with a run() call until released, so that calls queue up behind it."""

    def __init__(self, db: Database) -> None:
        self._started = threading.Event()
        self._release = threading.Event()
        self.task = asyncio.create_task(db.run(self._hold))

    def _hold(self, conn: sqlite3.Connection) -> None:
        self._started.set()
        assert self._release.wait(5)

    async def started(self) -> None:
        assert await asyncio.to_thread(self._started.wait, 5)

    async def release(self) -> None:
        self._release.set()
        await self.task


async def queued(db: Database, count: int) -> None:
    """Until count run_grouped() calls wait behind the blocker for their transaction."""
    await eventually(lambda: db.grouped_waiting == count, what=f"{count} grouped calls queued")


def commits(db: Database) -> list[str]:
    """The statements the writer thread executes from now on (COMMIT, ROLLBACK, ...)."""
    statements: list[str] = []
    assert db._sync_writer is not None
    db._sync_writer.set_trace_callback(statements.append)
    return statements


async def test_grouped_calls_waiting_together_share_one_commit(db: Database) -> None:
    blocker = Blocker(db)
    await blocker.started()
    statements = commits(db)
    calls = [asyncio.create_task(db.run_grouped(insert(v))) for v in range(1, 11)]
    await queued(db, 10)
    await blocker.release()
    assert await asyncio.gather(*calls) == [1] * 10
    assert await rows(db) == list(range(1, 11))
    assert statements.count("COMMIT") == 2  # the blocker's and the group's


async def test_grouped_calls_run_in_arrival_order_each_seeing_the_ones_before(
    db: Database,
) -> None:
    def count_then_insert(conn: sqlite3.Connection, value: int) -> int:
        (count,) = conn.execute("SELECT count(*) FROM a").fetchone()
        conn.execute("INSERT INTO a (x) VALUES (?)", (value,))
        return int(count)

    blocker = Blocker(db)
    await blocker.started()
    calls = [
        asyncio.create_task(db.run_grouped(partial(count_then_insert, value=v))) for v in range(5)
    ]
    await queued(db, 5)
    await blocker.release()
    assert await asyncio.gather(*calls) == [0, 1, 2, 3, 4]


async def test_a_grouped_call_that_raises_rolls_back_only_its_own_writes(db: Database) -> None:
    refusal = Refused("no agreement")

    def refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO a (x) VALUES (3)")
        raise refusal

    blocker = Blocker(db)
    await blocker.started()
    statements = commits(db)
    calls = [
        asyncio.create_task(db.run_grouped(refuse if v == 3 else insert(v))) for v in range(1, 6)
    ]
    await queued(db, 5)
    await blocker.release()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes == [1, 1, refusal, 1, 1]
    assert outcomes[2] is refusal
    assert await rows(db) == [1, 2, 4, 5]
    assert statements.count("COMMIT") == 2


async def test_a_grouped_call_refused_before_commit_is_left_out_and_the_rest_run_again(
    db: Database,
) -> None:
    runs: list[int] = []

    def counted(conn: sqlite3.Connection, value: int) -> int:
        runs.append(value)
        conn.execute("INSERT INTO a (x) VALUES (?)", (value,))
        return value

    def late() -> None:
        raise Refused("deadline passed")

    blocker = Blocker(db)
    await blocker.started()
    calls = [
        asyncio.create_task(
            db.run_grouped(partial(counted, value=v), before_commit=late if v == 2 else None)
        )
        for v in range(1, 4)
    ]
    await queued(db, 3)
    await blocker.release()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], Refused)
    assert await rows(db) == [1, 3]
    assert runs == [1, 2, 3, 1, 3]  # rolled back, then run again without the refused one


async def test_a_lone_grouped_call_commits_or_rolls_back_like_run(db: Database) -> None:
    def late() -> None:
        raise Refused("deadline passed")

    assert await db.run_grouped(insert(1)) == 1
    with pytest.raises(Refused):
        await db.run_grouped(insert(2), before_commit=late)
    with pytest.raises(sqlite3.IntegrityError):
        await db.run_grouped(insert(1))
    assert await rows(db) == [1]


async def test_a_grouped_call_cancelled_while_waiting_writes_nothing(db: Database) -> None:
    blocker = Blocker(db)
    await blocker.started()
    calls = [asyncio.create_task(db.run_grouped(insert(v))) for v in range(1, 4)]
    await queued(db, 3)
    calls[1].cancel()
    await blocker.release()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert await rows(db) == [1, 3]


async def test_grouped_calls_and_run_calls_interleave_safely(db: Database) -> None:
    await asyncio.gather(
        *(db.run_grouped(insert(v)) if v % 3 else db.run(insert(v)) for v in range(1, 61))
    )
    assert await rows(db) == list(range(1, 61))


# --- point_read(): a row by its key, on the event loop's thread ------------------------------


async def test_point_read_sees_committed_rows_only(db: Database) -> None:
    await db.run(insert(1))
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO a (x) VALUES (2)")
        assert await db.point_read("SELECT x FROM a WHERE x = ?", (2,)) is None  # not committed
        row = await db.point_read("SELECT x FROM a WHERE x = ?", (1,))
        assert row is not None and row["x"] == 1
    row = await db.point_read("SELECT x FROM a WHERE x = ?", (2,))
    assert row is not None and row["x"] == 2


class _BusyConnection:
    """The loop's connection as a busy file leaves it: every statement refused at once."""

    def execute(self, sql: str, params: object = ()) -> sqlite3.Cursor:
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
        raise busy

    def close(self) -> None:
        pass


async def test_a_point_read_that_would_wait_goes_to_the_readers_thread(db: Database) -> None:
    await db.run(insert(5))
    db._point_reader = _BusyConnection()  # type: ignore[assignment]
    row = await db.point_read("SELECT x FROM a WHERE x = ?", (5,))
    assert row is not None and row["x"] == 5


async def test_a_point_read_of_a_broken_file_is_refused_as_unavailable(db: Database) -> None:
    broken = sqlite3.OperationalError("disk I/O error")
    broken.sqlite_errorcode = sqlite3.SQLITE_IOERR

    class _Broken(_BusyConnection):
        def execute(self, sql: str, params: object = ()) -> sqlite3.Cursor:
            raise broken

    db._point_reader = _Broken()  # type: ignore[assignment]
    with pytest.raises(StoreUnavailable):
        await db.point_read("SELECT x FROM a WHERE x = ?", (5,))
