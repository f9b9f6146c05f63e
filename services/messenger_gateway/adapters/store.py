"""The gateway's SQLite store: identifications (history kept, the latest per user is current),
the notice inbox (event ids applied) and the notice cursor.

Identifications change only through the unit of work (run, run_grouped): the transaction functions
of identification/transactions.py decide, and SqliteIdentificationTx only runs their statements,
each state change a compare-and-set on the state the row leaves, so concurrent actors (an RPC, a
verification task, the watchdog, another gateway process on the same file) cannot both win. Leases
(on pending verifications, and named ones such as the notice consumer's) are the same rows as on
PostgreSQL; with one replica, whose id survives its restarts, they are always its own.

A transaction function runs on the database's writer thread, driven to completion there (one
thread hop however many statements); the ported-numbers import keeps its TEMP staging table on
the aiosqlite writer connection (Database.transaction). The identification flow's writes
(starting, confirming, the verification's outcome) use group commit (run_grouped): the ones
that arrive together share one transaction, one COMMIT and one writer-thread hop, each in a
savepoint of its own, so each is still all or nothing (a refused one, IdempotentReplay say,
undoes only its own writes) and each caller gets its own result. (On PostgreSQL,
adapters/store_pg.py, the connection pool runs them concurrently.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from services.common.db import Database, drive
from services.common.lease import RELEASED_AT, Fence, Lease
from services.common.timeutil import from_iso, stored_time, to_iso
from services.messenger_gateway.adapters.policy_store import CHANGE_COLUMNS, change_from_row
from services.messenger_gateway.identification.model import Identification, Reason, State
from services.messenger_gateway.identification.ports import TxFunction
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.policy.model import PolicyChange
from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin

T = TypeVar("T")


# An import's valid rows wait here (a temporary table: private to the writer connection, gone
# with the process) until the stream ends, then go into ported_numbers in one transaction.
_STAGING = """
    CREATE TEMP TABLE IF NOT EXISTS ported_import_staging (
        import_id    TEXT NOT NULL,
        line         INTEGER NOT NULL,
        phone_number TEXT NOT NULL,
        operator_id  TEXT NOT NULL,
        ported_at    TEXT NOT NULL
    )
"""
# Insert or replace by a strictly later porting date (ties keep the stored row).
_UPSERT_PORTED = """
    ON CONFLICT (phone_number) DO UPDATE SET
        operator_id = excluded.operator_id, ported_at = excluded.ported_at,
        origin = excluded.origin, updated_at = excluded.updated_at
    WHERE excluded.ported_at > ported_numbers.ported_at
"""


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else to_iso(value)


def _opt_dt(value: str | datetime | None) -> datetime | None:
    return None if value is None else stored_time(value)


def identification_from_row(row: Any) -> Identification:
    """An identifications row (either engine) as the domain's Identification."""
    return Identification(
        identification_id=row["identification_id"],
        user_id=row["user_id"],
        phone_number=row["phone_number"],
        state=State(row["state"]),
        reason=Reason(row["reason"]),
        operator_id=row["operator_id"],
        started_at=stored_time(row["started_at"]),
        code_expires_at=stored_time(row["code_expires_at"]),
        attempts_left=row["attempts_left"],
        verification_deadline=_opt_dt(row["verification_deadline"]),
        completed_at=_opt_dt(row["completed_at"]),
        verify_key=row["verify_key"],
        trace_id=row["trace_id"],
        identification_code=row["identification_code"],
        code_hash=row["code_hash"],
        hinted_by=row["hinted_by"],
        identified_at=_opt_dt(row["identified_at"]),
        lease_holder=row["lease_holder"],
        lease_token=row["lease_token"],
    )


class SqliteGatewayStore:
    """The GatewayStore port (identification/ports.py) on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- reads -------------------------------------------------------------------------------

    async def get(self, identification_id: str) -> Identification | None:
        row = await self._db.point_read(
            "SELECT * FROM identifications WHERE identification_id = ?", (identification_id,)
        )
        return None if row is None else identification_from_row(row)

    async def current(self, user_id: str) -> Identification | None:
        row = await self._db.point_read(
            "SELECT * FROM identifications WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
            (user_id,),
        )
        return None if row is None else identification_from_row(row)

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        """The identification the user started with this idempotency key, if any."""
        row = await self._db.point_read(
            "SELECT * FROM identifications WHERE user_id = ? AND idempotency_key = ?",
            (user_id, key),
        )
        return None if row is None else identification_from_row(row)

    async def history(self, user_id: str) -> list[Identification]:
        rows = await self._db.fetchall(
            "SELECT * FROM identifications WHERE user_id = ? ORDER BY seq", (user_id,)
        )
        return [identification_from_row(r) for r in rows]

    async def verifying_summary(self) -> tuple[int, datetime | None]:
        """(identifications VERIFYING, the earliest verification deadline among them)."""
        row = await self._db.fetchone(
            "SELECT count(*), min(verification_deadline) FROM identifications "
            "WHERE state = 'VERIFYING'"
        )
        if row is None or not row[0]:
            return 0, None
        return int(row[0]), _opt_dt(row[1])

    async def notice_cursor(self, messenger_id: str) -> int:
        row = await self._db.fetchone(
            "SELECT seq FROM notice_cursor WHERE messenger_id = ?", (messenger_id,)
        )
        return 0 if row is None else int(row["seq"])

    async def inbox_has(self, event_id: str) -> bool:
        row = await self._db.point_read(
            "SELECT 1 FROM notice_inbox WHERE event_id = ?", (event_id,)
        )
        return row is not None

    # --- the unit of work (IdentificationTx; the decisions are identification/transactions.py's)

    async def run(self, fn: TxFunction[T]) -> T:
        """fn(tx) as one write transaction on the writer thread, driven to completion there (it
        awaits only the tx, whose methods never suspend): one thread hop however many
        statements. See Database.run."""
        return await self._db.run(lambda conn: drive(fn(SqliteIdentificationTx(conn))))

    async def run_grouped(self, fn: TxFunction[T]) -> T:
        """Like run(fn), sharing one transaction and COMMIT with the calls that arrive together,
        fn in a savepoint of its own (Database.run_grouped)."""
        return await self._db.run_grouped(lambda conn: drive(fn(SqliteIdentificationTx(conn))))

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool:
        """Remember a donor's hint as a route (origin hint, ported_at now); False if the table
        already has a later porting date for the number."""
        entry = PortedNumber(phone_number, recipient, now, RouteOrigin.HINT)
        return await self._db.run(lambda conn: _upsert_ported(conn, [entry], now) == 1)

    # --- leases ------------------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        """Take the VERIFYING identifications within their window that nobody holds (free, or
        their lease expired at `now`), oldest first, at most `limit`; the ones taken, each
        under a new lease token."""
        sql = """UPDATE identifications
                 SET lease_holder = ?, lease_expires_at = ?, lease_token = lease_token + 1
                 WHERE identification_id IN (
                     SELECT identification_id FROM identifications
                     WHERE state = 'VERIFYING' AND verification_deadline > ?
                       AND (lease_holder IS NULL OR lease_expires_at <= ?)
                     ORDER BY seq LIMIT ?)
                 RETURNING *"""
        at = to_iso(now)
        params = (lease.holder, to_iso(lease.expires_at), at, at, limit)

        def claim(conn: sqlite3.Connection) -> list[Identification]:
            taken = [identification_from_row(row) for row in conn.execute(sql, params)]
            return sorted(taken, key=lambda i: i.started_at)

        return await self._db.run(claim)

    async def renew_verifications(self, lease: Lease, running: Sequence[str]) -> list[str]:
        """Extend the leases lease.holder holds on `running` (the ids it is verifying) to
        lease.expires_at; of those, the ones another holder has taken."""
        ids = list(running)

        def renew(conn: sqlite3.Connection) -> list[str]:
            lost: list[str] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                conn.execute(
                    "UPDATE identifications SET lease_expires_at = ? "
                    f"WHERE identification_id IN ({marks}) AND state = 'VERIFYING' "
                    "AND lease_holder = ?",
                    (to_iso(lease.expires_at), *chunk, lease.holder),
                )
                lost.extend(
                    row[0]
                    for row in conn.execute(
                        "SELECT identification_id FROM identifications "
                        f"WHERE identification_id IN ({marks}) AND state = 'VERIFYING' "
                        "AND lease_holder IS NOT ?",
                        (*chunk, lease.holder),
                    )
                )
            return lost

        return await self._db.run(renew)

    async def release_verifications(self, holder: str) -> int:
        """Free every VERIFYING identification holder holds (any replica may take them now)."""
        sql = (
            "UPDATE identifications SET lease_holder = NULL, lease_expires_at = NULL "
            "WHERE state = 'VERIFYING' AND lease_holder = ?"
        )
        return await self._db.run(lambda conn: conn.execute(sql, (holder,)).rowcount)

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        # the token is kept by a renewal of a live lease, raised by any other take
        sql = """INSERT INTO leases (name, holder, expires_at, token) VALUES (?, ?, ?, 1)
                 ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at,
                     token = CASE WHEN leases.holder = excluded.holder
                                   AND leases.expires_at > ?4
                                  THEN leases.token ELSE leases.token + 1 END
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
                 RETURNING token"""
        params = (name, lease.holder, to_iso(lease.expires_at), to_iso(now))

        def acquire(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else int(row[0])

        return await self._db.run(acquire)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                (to_iso(RELEASED_AT), name, holder),
            )
        )

    async def lease_of(self, name: str) -> Lease | None:
        row = await self._db.fetchone(
            "SELECT holder, expires_at, token FROM leases WHERE name = ?", (name,)
        )
        if row is None:
            return None
        return Lease(row["holder"], from_iso(row["expires_at"]), row["token"])

    async def leases(self, prefix: str) -> dict[str, Lease]:
        rows = await self._db.fetchall(
            "SELECT name, holder, expires_at FROM leases WHERE substr(name, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {r["name"]: Lease(r["holder"], from_iso(r["expires_at"])) for r in rows}

    # --- the ported-numbers table ---------------------------------------------------------------

    async def ported_number(self, phone_number: str) -> PortedNumber | None:
        row = await self._db.point_read(
            "SELECT * FROM ported_numbers WHERE phone_number = ?", (phone_number,)
        )
        if row is None:
            return None
        return PortedNumber(
            phone_number=row["phone_number"],
            operator_id=row["operator_id"],
            ported_at=from_iso(row["ported_at"]),
            origin=RouteOrigin(row["origin"]),
        )

    async def stage_ported(self, import_id: str, rows: Sequence[tuple[int, PortedNumber]]) -> None:
        """Hold (line, row) pairs of an import until commit_ported or discard_ported."""
        async with self._db.transaction() as conn:
            await conn.execute(_STAGING)
            await conn.executemany(
                "INSERT INTO temp.ported_import_staging "
                "(import_id, line, phone_number, operator_id, ported_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (import_id, line, r.phone_number, r.operator_id, to_iso(r.ported_at))
                    for line, r in rows
                ],
            )

    async def commit_ported(self, import_id: str, now: datetime) -> int:
        """Move an import's staged rows into the table, in line order, in one transaction;
        returns how many were stored."""
        async with self._db.transaction() as conn:
            await conn.execute(_STAGING)
            before = conn.total_changes
            await conn.execute(
                "INSERT INTO ported_numbers "
                "(phone_number, operator_id, ported_at, origin, updated_at) "
                "SELECT phone_number, operator_id, ported_at, 'import', ? "
                "FROM temp.ported_import_staging WHERE import_id = ? ORDER BY line"
                + _UPSERT_PORTED,
                (to_iso(now), import_id),
            )
            stored = conn.total_changes - before
            await conn.execute(
                "DELETE FROM temp.ported_import_staging WHERE import_id = ?", (import_id,)
            )
            return stored

    async def discard_ported(self, import_id: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(_STAGING)
            await conn.execute(
                "DELETE FROM temp.ported_import_staging WHERE import_id = ?", (import_id,)
            )


# The columns a transition may change (compare_and_set writes them all).
_MUTABLE = (
    "state, reason, operator_id, code_hash, attempts_left, verify_key, verification_deadline, "
    "identification_code, completed_at, hinted_by, identified_at"
)
_CAS = f"""UPDATE identifications SET ({_MUTABLE}) = (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           WHERE identification_id = ? AND state = ? AND verify_key IS ?
             AND attempts_left = ?"""
_CAS_LEASED = f"""UPDATE identifications
                  SET ({_MUTABLE}, lease_holder, lease_expires_at, lease_token)
                    = (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                  WHERE identification_id = ? AND state = ? AND verify_key IS ?
                    AND attempts_left = ?"""
# A write by the replica verifying it: only while its lease is still the one it began with.
_FENCED = " AND lease_holder = ? AND lease_token = ?"


def _mutable(ident: Identification) -> tuple[Any, ...]:
    return (
        ident.state,
        ident.reason,
        ident.operator_id,
        ident.code_hash,
        ident.attempts_left,
        ident.verify_key,
        _opt_iso(ident.verification_deadline),
        ident.identification_code,
        _opt_iso(ident.completed_at),
        ident.hinted_by,
        _opt_iso(ident.identified_at),
    )


class SqliteIdentificationTx:
    """ports.IdentificationTx on the writer thread's connection (SqliteGatewayStore.run):
    `async def` for the port, but each does its work at once, never suspending."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def lock_user(self, user_id: str) -> None:
        """The database's single writer serialises every write transaction."""

    async def get(self, identification_id: str) -> Identification | None:
        return _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE identification_id = ?",
            (identification_id,),
        )

    async def current(self, user_id: str) -> Identification | None:
        return _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
            (user_id,),
        )

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        return _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE user_id = ? AND idempotency_key = ?",
            (user_id, key),
        )

    async def insert(self, new: Identification, idempotency_key: str | None) -> None:
        self._conn.execute(
            """INSERT INTO identifications
               (identification_id, user_id, phone_number, state, reason, operator_id,
                started_at, code_hash, code_expires_at, attempts_left, idempotency_key,
                trace_id)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                new.identification_id,
                new.user_id,
                new.phone_number,
                new.state,
                new.reason,
                new.operator_id,
                to_iso(new.started_at),
                new.code_hash,
                to_iso(new.code_expires_at),
                new.attempts_left,
                idempotency_key,
                new.trace_id,
            ),
        )

    async def compare_and_set(
        self,
        before: Identification,
        after: Identification,
        *,
        lease: Lease | None = None,
        fence: Fence | None = None,
    ) -> bool:
        sql, values = _CAS, _mutable(after)
        if lease is not None:
            sql = _CAS_LEASED
            values = (*values, lease.holder, to_iso(lease.expires_at), after.lease_token)
        guard: tuple[Any, ...] = (
            before.identification_id,
            before.state,
            before.verify_key,
            before.attempts_left,
        )
        if fence is not None:
            sql += _FENCED
            guard = (*guard, fence.holder, fence.token)
        cursor = self._conn.execute(sql, (*values, *guard))
        return cursor.rowcount == 1

    async def holds_lease(self, fence: Fence) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND token = ?",
            (fence.name, fence.holder, fence.token),
        ).fetchone()
        return row is not None

    async def ended_by_notice(self, operator_id: str, code: str) -> TerminationKind | None:
        row = self._conn.execute(
            "SELECT reason FROM notice_inbox WHERE operator_id = ? AND identification_code = ? "
            "LIMIT 1",
            (operator_id, code),
        ).fetchone()
        return None if row is None else TerminationKind(row[0])

    async def overdue(self, now: datetime) -> list[Identification]:
        rows = self._conn.execute(
            "SELECT * FROM identifications WHERE state = 'VERIFYING' "
            "AND verification_deadline <= ? ORDER BY seq",
            (to_iso(now),),
        )
        return [identification_from_row(row) for row in rows]

    async def identified_with_code(self, operator_id: str, code: str) -> list[Identification]:
        rows = self._conn.execute(
            "SELECT * FROM identifications WHERE state = 'IDENTIFIED' AND operator_id = ? "
            "AND identification_code = ? ORDER BY seq",
            (operator_id, code),
        )
        return [identification_from_row(row) for row in rows]

    async def remember_route(self, entry: PortedNumber) -> bool:
        return _upsert_ported(self._conn, [entry], entry.ported_at) == 1

    async def log_mark(self) -> int:
        # versions are given at the insert, one writer at a time: this transaction's own
        # entries are the ones after the highest now
        row = self._conn.execute("SELECT coalesce(max(version), 0) FROM policy_changes").fetchone()
        return int(row[0])

    async def own_policy_changes(self, mark: int) -> list[PolicyChange]:
        rows = self._conn.execute(
            f"SELECT {CHANGE_COLUMNS} FROM policy_changes WHERE version > ? ORDER BY version",
            (mark,),
        )
        return [change_from_row(row) for row in rows]

    async def notice_cursor(self, messenger_id: str) -> int:
        row = self._conn.execute(
            "SELECT seq FROM notice_cursor WHERE messenger_id = ?", (messenger_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    async def add_to_inbox(
        self, notice: TerminationNotice, *, ends_code: bool, now: datetime
    ) -> bool:
        cursor = self._conn.execute(
            """INSERT INTO notice_inbox
                   (event_id, seq, operator_id, reason, revoked, applied_at, identification_code)
               VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (event_id) DO NOTHING""",
            (
                notice.event_id,
                notice.seq,
                notice.operator_id,
                notice.kind,
                to_iso(now),
                notice.identification_code if ends_code else None,
            ),
        )
        return cursor.rowcount == 1

    async def set_inbox_revoked(self, event_id: str, revoked: int) -> None:
        self._conn.execute(
            "UPDATE notice_inbox SET revoked = ? WHERE event_id = ?", (revoked, event_id)
        )

    async def advance_notice_cursor(self, messenger_id: str, seq: int) -> None:
        self._conn.execute(
            """INSERT INTO notice_cursor (messenger_id, seq) VALUES (?, ?)
               ON CONFLICT (messenger_id) DO UPDATE SET seq = max(seq, excluded.seq)""",
            (messenger_id, seq),
        )


def _upsert_ported(conn: sqlite3.Connection, rows: Sequence[PortedNumber], now: datetime) -> int:
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO ported_numbers (phone_number, operator_id, ported_at, origin, updated_at) "
        "VALUES (?, ?, ?, ?, ?)" + _UPSERT_PORTED,
        [(r.phone_number, r.operator_id, to_iso(r.ported_at), r.origin, to_iso(now)) for r in rows],
    )
    return conn.total_changes - before


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Identification | None:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else identification_from_row(row)
