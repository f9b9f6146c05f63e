"""The PostgreSQL side of a bulk import (the ImportStaging port): staged rows in a TEMP table on
a connection of its own, streamed in with COPY, then merged into contracts.

As on SQLite (import_store.py): staging writes nothing to the registry's tables and takes none
of their locks, so verifications go on while a file streams in; duplicates within the file and
conflicts with existing contracts are found by SQL over the staged rows. A merge transaction
first takes the contracts table in SHARE ROW EXCLUSIVE mode: other replicas' contract writes
(creations, terminations) wait for it, as SQLite's writer turn makes this process's wait, while
verifications (which only hold a contract FOR SHARE) go on; the conflicts are checked again
inside it, so none can appear between the check and the insert.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Final

import asyncpg
from asyncpg import Connection

from services.operator_registry.import_store import (
    ACTIVE_CONTRACT,
    CONTRACT_TAKEN,
    DUPLICATE_CONTRACT,
    DUPLICATE_NUMBER,
    ProblemRow,
    StagedRow,
)

_COLUMNS: Final = (
    "seq",
    "line",
    "phone_number",
    "contract_id",
    "activated_at",
    "problem",
    "detail",
)


class PgImportStaging:
    """One import's staging area, on its own connection (TEMP tables live as long as it)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Connection | None = None
        self._table = f"import_{uuid.uuid4().hex[:12]}"
        self.staged = 0  # rows staged so far

    @property
    def _c(self) -> Connection:
        assert self._conn is not None, "PgImportStaging.open() first"
        return self._conn

    async def open(self) -> PgImportStaging:
        conn = await asyncpg.connect(self._url)
        try:
            await conn.execute(
                f"""
                CREATE TEMP TABLE {self._table} (
                    seq          BIGINT PRIMARY KEY,  -- arrival order
                    line         BIGINT NOT NULL,
                    phone_number TEXT,                -- NULL when the row is malformed
                    contract_id  TEXT,
                    activated_at TEXT,                -- the storage form (timeutil.to_iso)
                    problem      TEXT,                -- NULL: the row is good so far
                    detail       TEXT
                )
                """
            )
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return self

    async def close(self) -> None:
        """Drop the staging area (closing the connection drops its TEMP table)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def stage(self, rows: Sequence[StagedRow]) -> None:
        first = self.staged + 1
        await self._c.copy_records_to_table(
            self._table,
            records=[(first + i, *row) for i, row in enumerate(rows)],
            columns=_COLUMNS,
        )
        self.staged += len(rows)

    async def mark_duplicates(self) -> None:
        """A number or contract id on several rows: every row after the first is marked."""
        t = self._table
        for column, problem in (
            ("phone_number", DUPLICATE_NUMBER),
            ("contract_id", DUPLICATE_CONTRACT),
        ):
            await self._c.execute(
                f"""
                UPDATE {t} SET problem = $1, detail = first.line::text
                FROM (SELECT DISTINCT ON ({column}) {column} AS key, seq, line FROM {t}
                      WHERE {column} IS NOT NULL ORDER BY {column}, seq) AS first
                WHERE first.key = {t}.{column} AND {t}.seq > first.seq AND {t}.problem IS NULL
                """,
                problem,
            )

    async def mark_conflicts(self) -> None:
        await self._mark_conflicts(None, None)

    async def _mark_conflicts(self, low: int | None, high: int | None) -> int:
        """Mark rows whose number has an active contract or whose contract id exists; how
        many were marked."""
        t = self._table
        where = f"AND {t}.seq > $1 AND {t}.seq <= $2" if low is not None else ""
        params = (low, high) if low is not None else ()
        marked = 0
        for sql in (
            f"UPDATE {t} SET problem = '{ACTIVE_CONTRACT}', detail = c.contract_id "
            f"FROM contracts AS c WHERE c.phone_number = {t}.phone_number "
            f"AND c.state = 'active' AND {t}.problem IS NULL {where}",
            f"UPDATE {t} SET problem = '{CONTRACT_TAKEN}', detail = NULL "
            f"FROM contracts AS c WHERE c.contract_id = {t}.contract_id "
            f"AND {t}.problem IS NULL {where}",
        ):
            status = await self._c.execute(sql, *params)
            marked += int(status.rsplit(" ", 1)[-1])
        return marked

    async def counts(self) -> tuple[int, int]:
        row = await self._c.fetchrow(
            f"SELECT count(*) - count(problem), count(problem) FROM {self._table}"
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def problems(self, limit: int) -> list[ProblemRow]:
        rows = await self._c.fetch(
            f"SELECT line, problem, detail, phone_number, contract_id FROM {self._table} "
            "WHERE problem IS NOT NULL ORDER BY line, seq LIMIT $1",
            limit,
        )
        return [(int(r[0]), str(r[1]), r[2], r[3], r[4]) for r in rows]

    async def count_contracts(self) -> int:
        return int(await self._c.fetchval("SELECT count(*) FROM contracts"))

    async def merge_all(self, *, rebuild_indexes: bool) -> int | None:
        """Insert every good row in one transaction; None (nothing inserted, and the rows that
        now conflict marked) if a conflicting contract was created since the check.
        rebuild_indexes is SQLite's concern: PostgreSQL's bulk index maintenance is fine."""
        async with self._c.transaction():
            await self._lock_contracts()
            if await self._mark_conflicts(None, None):
                return None
            return await self._insert(None, None)

    async def merge_chunk(self, after_seq: int, up_to_seq: int) -> int:
        """Insert the good rows with after_seq < seq <= up_to_seq in one transaction; rows
        that conflict with a contract created since the check are marked and left out."""
        async with self._c.transaction():
            await self._lock_contracts()
            await self._mark_conflicts(after_seq, up_to_seq)
            return await self._insert(after_seq, up_to_seq)

    async def _lock_contracts(self) -> None:
        await self._c.execute("LOCK TABLE contracts IN SHARE ROW EXCLUSIVE MODE")

    async def _insert(self, low: int | None, high: int | None) -> int:
        where = "AND seq > $1 AND seq <= $2" if low is not None else ""
        params = (low, high) if low is not None else ()
        status = await self._c.execute(
            "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
            f"SELECT contract_id, phone_number, 'active', activated_at::timestamptz "
            f"FROM {self._table} WHERE problem IS NULL {where} ORDER BY seq",
            *params,
        )
        return int(status.rsplit(" ", 1)[-1])
