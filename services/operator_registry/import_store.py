"""The SQLite side of a bulk import: staged rows on a private connection, then one merge.

An import gets its own connection to the registry's file, used from one worker thread, and a
TEMP staging table on it (private to the connection, kept in SQLite's temporary files, dropped
with the connection): staging writes nothing to the registry's database and takes none of its
locks, so verifications go on while a file streams in. Rows are appended in arrival order
(`seq`); each row is either checked-good (problem NULL) or carries a problem code. When the
stream ends, SQL over the staged rows marks duplicates within the file (GROUP BY: a sort in the
temporary files, not in memory) and conflicts with existing contracts (lookups in the
contracts' indexes). The merge (INSERT ... SELECT into contracts) runs under the registry's
writer turn (Database.write_lock), so this process's own transactions wait for it instead of
failing on a busy database; a merge interrupted by a cancelled RPC rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from services.common.db import Database

# (line, phone_number, contract_id, activated_at (storage form), problem, detail)
StagedRow = tuple[int, str | None, str | None, str | None, str | None, str | None]
# (line, problem, detail, phone_number, contract_id)
ProblemRow = tuple[int, str, str | None, str | None, str | None]

T = TypeVar("T")

# Problem codes stored with a staged row (bulk.py turns them into messages).
DUPLICATE_NUMBER: Final = "duplicate_number"  # detail: the line of the number's first row
DUPLICATE_CONTRACT: Final = "duplicate_contract"  # detail: the line of the id's first row
ACTIVE_CONTRACT: Final = "active_contract"  # detail: the number's active contract id
CONTRACT_TAKEN: Final = "contract_taken"  # the contract id exists already

# Page cache of the import connection (KiB): the merge updates three indexes of contracts.
IMPORT_CACHE_KIB: Final = 64 * 1024


class SqliteImportStaging:
    """One import's staging area. Every method runs on the staging connection's own thread."""

    def __init__(self, db: Database) -> None:
        if db.path is None:
            raise RuntimeError("bulk import needs a file-backed Database (Database.open)")
        self._db = db
        self._path = db.path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import")
        self._conn: sqlite3.Connection | None = None
        suffix = uuid.uuid4().hex[:12]
        self._table = f"import_{suffix}"
        self._dup_numbers = f"import_{suffix}_dup_numbers"
        self._dup_contracts = f"import_{suffix}_dup_contracts"
        self.staged = 0  # rows staged so far

    # --- thread plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on the staging thread. If the awaiting task is cancelled, the running
        statement is interrupted (it rolls back) and the call is awaited before cancelling on."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if self._conn is not None:
                self._conn.interrupt()
            with contextlib.suppress(BaseException):
                await future
            raise

    async def open(self) -> SqliteImportStaging:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA synchronous={self._db.synchronous}")
        conn.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
        conn.execute("PRAGMA temp_store=FILE")
        conn.execute(
            f"""
            CREATE TEMP TABLE {self._table} (
                seq          INTEGER PRIMARY KEY,  -- arrival order
                line         INTEGER NOT NULL,
                phone_number TEXT,                 -- NULL when the row is malformed
                contract_id  TEXT,
                activated_at TEXT,
                problem      TEXT,                 -- NULL: the row is good so far
                detail       TEXT
            )
            """
        )
        self._conn = conn

    async def close(self) -> None:
        """Drop the staging area (closing the connection drops its TEMP tables)."""
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _c(self) -> sqlite3.Connection:
        assert self._conn is not None, "ImportStaging.open() first"
        return self._conn

    # --- staging -----------------------------------------------------------------------------

    async def stage(self, rows: Sequence[StagedRow]) -> None:
        await self._run(self._stage, rows)
        self.staged += len(rows)

    def _stage(self, rows: Sequence[StagedRow]) -> None:
        conn = self._c
        conn.execute("BEGIN")  # TEMP only: takes no lock on the registry's database
        try:
            conn.executemany(
                f"INSERT INTO {self._table} "
                "(line, phone_number, contract_id, activated_at, problem, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- checks ------------------------------------------------------------------------------

    async def mark_duplicates(self) -> None:
        """A number or contract id on several rows: every row after the first is marked."""
        await self._run(self._mark_duplicates)

    def _mark_duplicates(self) -> None:
        conn = self._c
        t = self._table
        for column, table, problem in (
            ("phone_number", self._dup_numbers, DUPLICATE_NUMBER),
            ("contract_id", self._dup_contracts, DUPLICATE_CONTRACT),
        ):
            conn.execute(
                f"CREATE TEMP TABLE {table} "
                "(key TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, first_line INTEGER NOT NULL) "
                "WITHOUT ROWID"
            )
            # The bare `line` comes from the row holding min(seq) (SQLite's min/max rule).
            conn.execute(
                f"INSERT INTO {table} (key, first_seq, first_line) "
                f"SELECT {column}, min(seq), line FROM {t} WHERE {column} IS NOT NULL "
                f"GROUP BY {column} HAVING count(*) > 1"
            )
            conn.execute(
                f"UPDATE {t} SET problem = ?, detail = d.first_line "
                f"FROM {table} AS d WHERE d.key = {t}.{column} AND {t}.seq > d.first_seq "
                f"AND {t}.problem IS NULL",
                (problem,),
            )

    async def mark_conflicts(self) -> None:
        """Rows whose number has an active contract, or whose contract id exists, now."""
        await self._run(self._mark_conflicts, None, None)

    def _mark_conflicts(self, low: int | None, high: int | None) -> None:
        conn = self._c
        t = self._table
        where, params = "", ()  # type: tuple[str, tuple[int, ...]]
        if low is not None and high is not None:
            where, params = f"AND {t}.seq > ? AND {t}.seq <= ?", (low, high)
        conn.execute(
            f"UPDATE {t} SET problem = '{ACTIVE_CONTRACT}', detail = c.contract_id "
            f"FROM main.contracts AS c WHERE c.phone_number = {t}.phone_number "
            f"AND c.state = 'active' AND {t}.problem IS NULL {where}",
            params,
        )
        conn.execute(
            f"UPDATE {t} SET problem = '{CONTRACT_TAKEN}', detail = NULL "
            f"FROM main.contracts AS c WHERE c.contract_id = {t}.contract_id "
            f"AND {t}.problem IS NULL {where}",
            params,
        )

    async def counts(self) -> tuple[int, int]:
        """(good rows, rows with a problem)."""
        return await self._run(self._counts)

    def _counts(self) -> tuple[int, int]:
        row = self._c.execute(
            f"SELECT count(*) - count(problem), count(problem) FROM {self._table}"
        ).fetchone()
        return int(row[0]), int(row[1])

    async def problems(self, limit: int) -> list[ProblemRow]:
        """The first `limit` rows with a problem, by line."""
        return await self._run(self._problems, limit)

    def _problems(self, limit: int) -> list[ProblemRow]:
        rows = self._c.execute(
            f"SELECT line, problem, detail, phone_number, contract_id FROM {self._table} "
            "WHERE problem IS NOT NULL ORDER BY line, seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [(int(r[0]), str(r[1]), r[2], r[3], r[4]) for r in rows]

    # --- merge -------------------------------------------------------------------------------

    async def count_contracts(self) -> int:
        return await self._run(self._count_contracts)

    def _count_contracts(self) -> int:
        return int(self._c.execute("SELECT count(*) FROM main.contracts").fetchone()[0])

    async def merge_all(self, *, rebuild_indexes: bool) -> int | None:
        """Insert every good row in one transaction; None (nothing inserted, and the rows that
        now conflict marked) if a conflicting contract was created since the check.

        rebuild_indexes: drop the contracts table's secondary indexes and build them again
        after the insert, inside the same transaction. A sort beats millions of random index
        insertions (which also spill the page cache into the WAL again and again) when the
        import is large next to the table."""
        async with self._db.write_lock():
            return await self._run(self._merge_all, rebuild_indexes)

    def _merge_all(self, rebuild_indexes: bool) -> int | None:
        try:
            inserted = self._insert(None, None, rebuild_indexes=rebuild_indexes)
        except sqlite3.IntegrityError:
            self._mark_conflicts(None, None)
            return None
        if rebuild_indexes:
            # Best effort: give back the WAL that the big transaction grew.
            self._c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return inserted

    async def merge_chunk(self, after_seq: int, up_to_seq: int) -> int:
        """Insert the good rows with after_seq < seq <= up_to_seq in one transaction; rows
        that conflict with a contract created since the check are marked and left out."""
        async with self._db.write_lock():
            return await self._run(self._merge_chunk, after_seq, up_to_seq)

    def _merge_chunk(self, after_seq: int, up_to_seq: int) -> int:
        try:
            return self._insert(after_seq, up_to_seq)
        except sqlite3.IntegrityError:
            # We hold this process's writer turn, so no contract appears between the two.
            self._mark_conflicts(after_seq, up_to_seq)
            return self._insert(after_seq, up_to_seq)

    def _insert(self, low: int | None, high: int | None, *, rebuild_indexes: bool = False) -> int:
        conn = self._c
        t = self._table
        where, params = "", ()  # type: tuple[str, tuple[int, ...]]
        if low is not None and high is not None:
            where, params = "AND seq > ? AND seq <= ?", (low, high)
        conn.execute("BEGIN IMMEDIATE")
        try:
            indexes: list[tuple[str, str]] = []
            if rebuild_indexes:
                indexes = conn.execute(
                    "SELECT name, sql FROM main.sqlite_schema "
                    "WHERE type = 'index' AND tbl_name = 'contracts' AND sql IS NOT NULL"
                ).fetchall()
                for name, _sql in indexes:
                    conn.execute(f'DROP INDEX main."{name}"')
            cursor = conn.execute(
                "INSERT INTO main.contracts (contract_id, phone_number, state, activated_at) "
                f"SELECT contract_id, phone_number, 'active', activated_at FROM {t} "
                f"WHERE problem IS NULL {where} ORDER BY seq",
                params,
            )
            inserted = cursor.rowcount
            for _name, sql in indexes:
                conn.execute(sql)  # a UNIQUE one raises IntegrityError on a conflict
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return inserted
