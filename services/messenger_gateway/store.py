"""The gateway's SQLite store: identifications (history kept, the latest per user is current),
the notice inbox (event ids applied) and the notice cursor.

Every state change is a conditional UPDATE on the state it leaves, so concurrent actors (an RPC,
a verification task, the watchdog, another gateway process on the same file) cannot both win,
and an operator's late answer changes nothing. Leases (on pending verifications, and named ones
such as the notice consumer's) are the same rows as on PostgreSQL; with one replica, whose id
survives its restarts, they are always its own.

The identification and notice writes are each one function run on the database's writer thread
(Database.run: the whole transaction in one thread hop); the ported-numbers import keeps its
TEMP staging table on the aiosqlite writer connection (Database.transaction).

The identification flow's writes (StartIdentification's replace_current, ConfirmPossession's
record_wrong_code and begin_verification, the code's expiry, every finish_verification) use
group commit (Database.run_grouped): the ones that arrive together share one transaction, one
COMMIT and one writer-thread hop, each in a savepoint of its own, so each is still all or
nothing (a refused one, IdempotentReplay say, undoes only its own writes) and each caller gets
its own result. (On PostgreSQL, store_pg.py, the connection pool runs them concurrently.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.common.db import Database
from services.common.errors import quote
from services.common.failpoints import failpoint
from services.common.lease import Lease
from services.common.timeutil import from_iso, stored_time, to_iso
from services.messenger_gateway.domain import (
    IdempotentReplay,
    Identification,
    IdentificationNotFound,
    NoticeResult,
    PortedNumber,
    Reason,
    RouteOrigin,
    SameNumber,
    State,
    TerminationKind,
    TerminationNotice,
    hint_verify_key,
)
from services.messenger_gateway.policy_store import POLICY_MIGRATION

MIGRATIONS: list[str] = [
    """
    CREATE TABLE identifications (
        seq                   INTEGER PRIMARY KEY AUTOINCREMENT,  -- order: latest is current
        identification_id     TEXT NOT NULL UNIQUE,
        user_id               TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        state                 TEXT NOT NULL CHECK (state IN
                                  ('AWAITING_CODE', 'VERIFYING', 'IDENTIFIED', 'NOT_COMPLETED',
                                   'REVOKED')),
        reason                TEXT NOT NULL DEFAULT 'UNSPECIFIED',
        operator_id           TEXT NOT NULL DEFAULT '',
        started_at            TEXT NOT NULL,
        code_hash             TEXT NOT NULL DEFAULT '',  -- cleared once the code is used up
        code_expires_at       TEXT NOT NULL,
        attempts_left         INTEGER NOT NULL CHECK (attempts_left >= 0),
        request_id            TEXT UNIQUE,               -- VerifySubscriber's, once VERIFYING
        verification_deadline TEXT,
        identification_code   TEXT,
        completed_at          TEXT
    );
    CREATE INDEX identifications_by_user ON identifications (user_id, seq);
    CREATE INDEX identifications_verifying ON identifications (state)
        WHERE state = 'VERIFYING';
    CREATE INDEX identifications_by_code ON identifications (operator_id, identification_code)
        WHERE state = 'IDENTIFIED';

    CREATE TABLE notice_inbox (
        event_id    TEXT PRIMARY KEY,
        seq         INTEGER NOT NULL,
        operator_id TEXT NOT NULL,
        reason      TEXT NOT NULL,
        revoked     INTEGER NOT NULL,
        applied_at  TEXT NOT NULL
    );

    CREATE TABLE notice_cursor (
        messenger_id TEXT PRIMARY KEY,
        seq          INTEGER NOT NULL CHECK (seq >= 0)
    );
    """,
    # 2 (ported numbers): the donor hint a verification followed, when an identification became
    # IDENTIFIED (kept when it is REVOKED, for CheckNumberReassigned), and the ported-numbers
    # table (imported rows and remembered hints), consulted before the numbering plan.
    """
    ALTER TABLE identifications ADD COLUMN hinted_by TEXT;
    ALTER TABLE identifications ADD COLUMN identified_at TEXT;
    UPDATE identifications SET identified_at = completed_at WHERE state = 'IDENTIFIED';
    -- revoked before this column existed: the start is the best lower bound left
    UPDATE identifications SET identified_at = started_at WHERE state = 'REVOKED';

    CREATE TABLE ported_numbers (
        phone_number TEXT PRIMARY KEY,      -- E.164
        operator_id  TEXT NOT NULL,         -- the recipient, now serving the number
        ported_at    TEXT NOT NULL,         -- a row is replaced only by a later ported_at
        origin       TEXT NOT NULL CHECK (origin IN ('import', 'hint')),
        updated_at   TEXT NOT NULL
    );
    """,
    # 3 (a termination wins over any operator answer): the identification code each applied
    # notice ended, so that an IDENTIFIED answer for it recorded later (late, replayed or resumed
    # after a restart) cannot make a user identified on the ended contract.
    """
    ALTER TABLE notice_inbox ADD COLUMN identification_code TEXT;
    CREATE INDEX notice_inbox_by_code ON notice_inbox (operator_id, identification_code)
        WHERE identification_code IS NOT NULL;
    """,
    # 4 (idempotent retries): StartIdentification's client key; one identification per
    # (user, key), so a retried call finds the identification its first attempt started.
    """
    ALTER TABLE identifications ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX identifications_by_key ON identifications (user_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    """,
    # 5 (trace ids): VerifySubscriber's idempotency key is named for what it is (verify_key:
    # not the client's StartIdentification idempotency_key, nor the trace id), and each
    # identification keeps the trace id of the request that started it (every VerifySubscriber
    # call for it carries that id, after a restart too).
    """
    ALTER TABLE identifications RENAME COLUMN request_id TO verify_key;
    ALTER TABLE identifications ADD COLUMN trace_id TEXT;
    """,
    # 6 (delivery policy, services/messenger_gateway/policy_store.py): preferences, restriction
    # orders and their append-only audit, and the change log every replica's index tails.
    POLICY_MIGRATION,
    # 7 (leases, services/common/lease.py): the replica that runs a pending verification holds
    # it until lease_expires_at (renewed while it runs; NULL: free, any replica may take it), and
    # named leases (the notice consumer's: one active per messenger).
    """
    ALTER TABLE identifications ADD COLUMN lease_holder TEXT;
    ALTER TABLE identifications ADD COLUMN lease_expires_at TEXT;

    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    """,
]

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
    )


class SqliteGatewayStore:
    """The GatewayStore port (ports.py) on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- reads -------------------------------------------------------------------------------

    async def get(self, identification_id: str) -> Identification | None:
        row = await self._db.fetchone(
            "SELECT * FROM identifications WHERE identification_id = ?", (identification_id,)
        )
        return None if row is None else identification_from_row(row)

    async def current(self, user_id: str) -> Identification | None:
        row = await self._db.fetchone(
            "SELECT * FROM identifications WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
            (user_id,),
        )
        return None if row is None else identification_from_row(row)

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        """The identification the user started with this idempotency key, if any."""
        row = await self._db.fetchone(
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
        row = await self._db.fetchone("SELECT 1 FROM notice_inbox WHERE event_id = ?", (event_id,))
        return row is not None

    # --- starting --------------------------------------------------------------------------

    async def replace_current(
        self,
        new: Identification,
        *,
        now: datetime,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> Identification | None:
        """Insert `new` as the user's current identification, ending the previous one
        (NUMBER_CHANGED: NOT_COMPLETED if unfinished, REVOKED if IDENTIFIED), in one transaction.
        Returns the previous identification as it is afterwards, or None.

        change_number: the user must have an identification (IdentificationNotFound) and the
        number must differ from its number (SameNumber).

        idempotency_key: stored with `new`; if the user already started an identification
        with that key, nothing changes and IdempotentReplay carries that identification."""

        def replace(conn: sqlite3.Connection) -> Identification | None:
            if idempotency_key is not None:
                earlier = _fetch(
                    conn,
                    "SELECT * FROM identifications WHERE user_id = ? AND idempotency_key = ?",
                    (new.user_id, idempotency_key),
                )
                if earlier is not None:
                    raise IdempotentReplay(earlier)
            previous = _fetch(
                conn,
                "SELECT * FROM identifications WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
                (new.user_id,),
            )
            if change_number:
                if previous is None:
                    raise IdentificationNotFound(
                        f"user {quote(new.user_id)} has no identification: use StartIdentification"
                    )
                if previous.phone_number == new.phone_number:
                    raise SameNumber(
                        "phone_number is the user's current number: give the new number, or "
                        "use StartIdentification to identify the same number again"
                    )
            if previous is not None:
                conn.execute(
                    """UPDATE identifications
                        SET state = CASE state WHEN 'IDENTIFIED' THEN 'REVOKED'
                                               ELSE 'NOT_COMPLETED' END,
                            reason = 'NUMBER_CHANGED', completed_at = ?, code_hash = ''
                        WHERE identification_id = ?
                          AND state IN ('IDENTIFIED', 'AWAITING_CODE', 'VERIFYING')""",
                    (to_iso(now), previous.identification_id),
                )
            conn.execute(
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
            if previous is None:
                return None
            return _fetch(
                conn,
                "SELECT * FROM identifications WHERE identification_id = ?",
                (previous.identification_id,),
            )

        return await self._db.run_grouped(replace)

    # --- the one-time code -------------------------------------------------------------------

    async def expire_code(self, identification_id: str, now: datetime) -> bool:
        return await self._update(
            f"""UPDATE identifications
                SET state = 'NOT_COMPLETED', reason = '{Reason.CODE_EXPIRED}',
                    completed_at = ?, code_hash = ''
                WHERE identification_id = ? AND state = 'AWAITING_CODE'""",
            (to_iso(now), identification_id),
        )

    async def record_wrong_code(
        self, identification_id: str, now: datetime
    ) -> Identification | None:
        """One attempt used; at zero the identification ends TOO_MANY_ATTEMPTS. None if the
        identification was no longer AWAITING_CODE."""

        def record(conn: sqlite3.Connection) -> Identification | None:
            cursor = conn.execute(
                f"""UPDATE identifications
                    SET attempts_left = attempts_left - 1,
                        state = CASE WHEN attempts_left <= 1 THEN 'NOT_COMPLETED' ELSE state END,
                        reason = CASE WHEN attempts_left <= 1 THEN '{Reason.TOO_MANY_ATTEMPTS}'
                                      ELSE reason END,
                        completed_at = CASE WHEN attempts_left <= 1 THEN ? ELSE completed_at END,
                        code_hash = CASE WHEN attempts_left <= 1 THEN '' ELSE code_hash END
                    WHERE identification_id = ? AND state = 'AWAITING_CODE'
                      AND attempts_left > 0""",
                (to_iso(now), identification_id),
            )
            if cursor.rowcount != 1:
                return None
            return _fetch(
                conn,
                "SELECT * FROM identifications WHERE identification_id = ?",
                (identification_id,),
            )

        return await self._db.run_grouped(record)

    # --- verification ------------------------------------------------------------------------

    async def begin_verification(
        self,
        identification_id: str,
        *,
        verify_key: str,
        deadline: datetime,
        now: datetime,
        lease: Lease,
    ) -> bool:
        """AWAITING_CODE -> VERIFYING (only while the code is still valid), held by
        lease.holder; stored before the operator is asked, so a restart resumes it with the
        same verify_key."""
        return await self._update(
            """UPDATE identifications
               SET state = 'VERIFYING', verify_key = ?, verification_deadline = ?,
                   code_hash = '', lease_holder = ?, lease_expires_at = ?
               WHERE identification_id = ? AND state = 'AWAITING_CODE'
                 AND code_expires_at > ?""",
            (
                verify_key,
                to_iso(deadline),
                lease.holder,
                to_iso(lease.expires_at),
                identification_id,
                to_iso(now),
            ),
        )

    async def finish_verification(
        self,
        identification_id: str,
        verify_key: str,
        *,
        state: State,
        reason: Reason,
        now: datetime,
        operator_id: str | None = None,
        identification_code: str | None = None,
        within_window: bool,
    ) -> tuple[State, Reason] | None:
        """VERIFYING -> state, only if still VERIFYING under verify_key; with within_window, only
        while the verification deadline has not passed at `now` (an operator's late answer
        changes nothing). Returns the (state, reason) recorded, None if nothing changed.

        An IDENTIFIED answer whose code a termination notice already ended (the notice inbox
        has it) is recorded NOT_COMPLETED with the notice's reason instead: a termination wins
        over any operator answer, whatever the order they arrive in. The check and the write
        are one transaction, serialised with apply_notice by the database's single writer."""
        sql = """UPDATE identifications
                 SET state = ?, reason = ?, completed_at = ?,
                     identified_at = CASE WHEN ? = 'IDENTIFIED' THEN ? ELSE identified_at END,
                     operator_id = COALESCE(?, operator_id),
                     identification_code = COALESCE(?, identification_code)
                 WHERE identification_id = ? AND verify_key = ? AND state = 'VERIFYING'"""
        if within_window:
            sql += " AND verification_deadline > ?"

        def finish(conn: sqlite3.Connection) -> tuple[State, Reason] | None:
            final, why, code = state, reason, identification_code
            if state is State.IDENTIFIED and code is not None:
                ended = conn.execute(
                    "SELECT reason FROM notice_inbox "
                    "WHERE operator_id = COALESCE(?, ("
                    "  SELECT operator_id FROM identifications WHERE identification_id = ?)) "
                    "AND identification_code = ? LIMIT 1",
                    (operator_id, identification_id, code),
                ).fetchone()
                if ended is not None:
                    final, why, code = (
                        State.NOT_COMPLETED,
                        TerminationKind(ended[0]).revocation_reason,
                        None,
                    )
            params: list[Any] = [
                final,
                why,
                to_iso(now),
                final,
                to_iso(now),
                operator_id,
                code,
                identification_id,
                verify_key,
            ]
            if within_window:
                params.append(to_iso(now))
            changed = conn.execute(sql, params).rowcount == 1
            return (final, why) if changed else None

        return await self._db.run_grouped(finish)

    async def follow_hint(
        self,
        identification_id: str,
        verify_key: str,
        *,
        recipient: str,
        donor: str,
        now: datetime,
    ) -> bool:
        """A donor answered "ported to recipient": in one transaction, remember the route
        (ported_numbers, origin hint, ported_at now) and move the verification to the recipient
        under the derived verify_key; only if still VERIFYING under verify_key, within its
        window, and no hint was followed yet. Stored before the recipient is asked, so a
        restart resumes at the recipient."""

        def follow(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                """UPDATE identifications
                   SET operator_id = ?, verify_key = ?, hinted_by = ?
                   WHERE identification_id = ? AND verify_key = ? AND state = 'VERIFYING'
                     AND hinted_by IS NULL AND verification_deadline > ?
                   RETURNING phone_number""",
                (
                    recipient,
                    hint_verify_key(verify_key),
                    donor,
                    identification_id,
                    verify_key,
                    to_iso(now),
                ),
            )
            row = cursor.fetchone()
            if row is None:
                return False
            _upsert_ported(conn, [PortedNumber(row[0], recipient, now, RouteOrigin.HINT)], now)
            return True

        return await self._db.run(follow)

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool:
        """Remember a donor's hint as a route (origin hint, ported_at now); False if the table
        already has a later porting date for the number."""
        entry = PortedNumber(phone_number, recipient, now, RouteOrigin.HINT)
        return await self._db.run(lambda conn: _upsert_ported(conn, [entry], now) == 1)

    async def expire_overdue(self, now: datetime) -> list[str]:
        """VERIFYING past its deadline -> NOT_COMPLETED OPERATOR_TIMEOUT; returns their ids."""
        sql = f"""UPDATE identifications
                  SET state = 'NOT_COMPLETED', reason = '{Reason.OPERATOR_TIMEOUT}',
                      completed_at = ?
                  WHERE state = 'VERIFYING' AND verification_deadline <= ?
                  RETURNING identification_id"""
        params = (to_iso(now), to_iso(now))
        return await self._db.run(lambda conn: [row[0] for row in conn.execute(sql, params)])

    # --- leases ------------------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        """Take the VERIFYING identifications within their window that nobody holds (free, or
        their lease expired at `now`), oldest first, at most `limit`; the ones taken."""
        sql = """UPDATE identifications SET lease_holder = ?, lease_expires_at = ?
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

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> bool:
        sql = """INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?
                 RETURNING holder"""
        params = (name, lease.holder, to_iso(lease.expires_at), to_iso(now))
        return await self._db.run(lambda conn: conn.execute(sql, params).fetchone() is not None)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)
            )
        )

    async def lease_of(self, name: str) -> Lease | None:
        row = await self._db.fetchone(
            "SELECT holder, expires_at FROM leases WHERE name = ?", (name,)
        )
        return None if row is None else Lease(row["holder"], from_iso(row["expires_at"]))

    # --- notices -----------------------------------------------------------------------------

    async def apply_notices(
        self,
        messenger_id: str,
        notices: Sequence[tuple[TerminationNotice, bool]],
        *,
        now: datetime,
    ) -> list[NoticeResult]:
        """In one transaction, for each (notice, revoke) in order: record the event id in the
        inbox (a repeat, also within the batch, changes nothing), with revoke revoke the
        IDENTIFIED identifications the event names; then advance the cursor to the last seq.
        Each result's cursor is the persisted cursor as of that notice."""
        return await self._db.run(lambda conn: _apply_notices(conn, messenger_id, notices, now))

    # --- the ported-numbers table ---------------------------------------------------------------

    async def ported_number(self, phone_number: str) -> PortedNumber | None:
        row = await self._db.fetchone(
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

    # --- helpers -----------------------------------------------------------------------------

    async def _update(self, sql: str, params: Any) -> bool:
        """One conditional UPDATE, committed with the others that arrive together (group
        commit): did it change exactly one row?"""
        values = tuple(params)
        return await self._db.run_grouped(lambda conn: conn.execute(sql, values).rowcount == 1)


def _apply_notices(
    conn: sqlite3.Connection,
    messenger_id: str,
    notices: Sequence[tuple[TerminationNotice, bool]],
    now: datetime,
) -> list[NoticeResult]:
    """On the writer thread: per notice inbox and revocations, then the cursor once."""
    row = conn.execute(
        "SELECT seq FROM notice_cursor WHERE messenger_id = ?", (messenger_id,)
    ).fetchone()
    cursor = 0 if row is None else int(row["seq"])
    results: list[NoticeResult] = []
    for notice, revoke in notices:
        applied, revoked = _apply_notice(conn, notice, to_iso(now), revoke)
        cursor = max(cursor, notice.seq)
        results.append(NoticeResult(applied=applied, revoked=revoked, cursor=cursor))
    if notices:
        conn.execute(
            """INSERT INTO notice_cursor (messenger_id, seq) VALUES (?, ?)
               ON CONFLICT (messenger_id) DO UPDATE SET seq = max(seq, excluded.seq)""",
            (messenger_id, cursor),
        )
    failpoint("gateway.notice.before_commit")
    return results


def _apply_notice(
    conn: sqlite3.Connection, notice: TerminationNotice, now: str, revoke: bool
) -> tuple[bool, int]:
    """The inbox row and the revocations of one notice: (applied, identifications revoked)."""
    revoked = 0
    cursor = conn.execute(
        """INSERT INTO notice_inbox
               (event_id, seq, operator_id, reason, revoked, applied_at, identification_code)
           VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (event_id) DO NOTHING""",
        (
            notice.event_id,
            notice.seq,
            notice.operator_id,
            notice.kind,
            now,
            # only our own notices end our codes (another messenger's is logged and ignored)
            notice.identification_code if revoke else None,
        ),
    )
    applied = cursor.rowcount == 1
    if applied and revoke:
        cursor = conn.execute(
            """UPDATE identifications
               SET state = 'REVOKED', reason = ?, completed_at = ?
               WHERE state = 'IDENTIFIED' AND operator_id = ?
                 AND identification_code = ?""",
            (notice.revocation_reason, now, notice.operator_id, notice.identification_code),
        )
        revoked = cursor.rowcount
        if revoked:
            conn.execute(
                "UPDATE notice_inbox SET revoked = ? WHERE event_id = ?",
                (revoked, notice.event_id),
            )
    return applied, revoked


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
