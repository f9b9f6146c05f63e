"""The gateway's PostgreSQL store (the GatewayStore port, ports.py).

Every state change is a conditional UPDATE on the state it leaves, as on SQLite, so concurrent
actors cannot both win. What SQLite's single writer serialised is serialised here by
transaction-scoped advisory locks:
- replacing a user's current identification holds the user's lock (two StartIdentification
  calls for one user cannot both see "no previous identification" and leave two current ones);
- recording an IDENTIFIED answer and applying a termination notice hold the lock of the
  (operator, identification code) pair, so a termination wins whatever the order they commit.
A partial unique index keeps at most one unfinished or IDENTIFIED identification per user, so
even a writer that skipped the lock could not leave two current ones. Pending verifications and
the notice consumer are held by leases (services/common/lease.py): claims take only free or
expired rows, `FOR UPDATE SKIP LOCKED`, so two replicas never take the same one.
The delivery policy's tables (and the triggers that log identification changes to its change
log) are policy_store_pg.py's, migration 3 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from services.common.errors import quote
from services.common.failpoints import failpoint
from services.common.lease import Lease
from services.common.pg import Connection, PgDatabase
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
from services.messenger_gateway.policy_store_pg import PG_POLICY_MIGRATION
from services.messenger_gateway.store import identification_from_row

SERVICE: Final = "messenger_gateway"

PG_MIGRATIONS: Final[list[str]] = [
    # 1: the schema of SQLite's migrations 1-5; ported-number imports staged in a shared table
    # (any replica may receive the import's next message).
    """
    CREATE TABLE identifications (
        seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identification_id     TEXT NOT NULL UNIQUE,
        user_id               TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        state                 TEXT NOT NULL CHECK (state IN
                                  ('AWAITING_CODE', 'VERIFYING', 'IDENTIFIED', 'NOT_COMPLETED',
                                   'REVOKED')),
        reason                TEXT NOT NULL DEFAULT 'UNSPECIFIED',
        operator_id           TEXT NOT NULL DEFAULT '',
        started_at            TIMESTAMPTZ NOT NULL,
        code_hash             TEXT NOT NULL DEFAULT '',
        code_expires_at       TIMESTAMPTZ NOT NULL,
        attempts_left         INTEGER NOT NULL CHECK (attempts_left >= 0),
        verify_key            TEXT UNIQUE,              -- VerifySubscriber's, once VERIFYING
        verification_deadline TIMESTAMPTZ,
        identification_code   TEXT,
        completed_at          TIMESTAMPTZ,
        hinted_by             TEXT,
        identified_at         TIMESTAMPTZ,
        idempotency_key       TEXT,
        trace_id              TEXT
    );
    CREATE INDEX identifications_by_user ON identifications (user_id, seq);
    CREATE INDEX identifications_verifying ON identifications (state)
        WHERE state = 'VERIFYING';
    CREATE INDEX identifications_by_code ON identifications (operator_id, identification_code)
        WHERE state = 'IDENTIFIED';
    CREATE UNIQUE INDEX identifications_by_key ON identifications (user_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;

    CREATE TABLE notice_inbox (
        event_id            TEXT PRIMARY KEY,
        seq                 BIGINT NOT NULL,
        operator_id         TEXT NOT NULL,
        reason              TEXT NOT NULL,
        revoked             INTEGER NOT NULL,
        applied_at          TIMESTAMPTZ NOT NULL,
        identification_code TEXT
    );
    CREATE INDEX notice_inbox_by_code ON notice_inbox (operator_id, identification_code)
        WHERE identification_code IS NOT NULL;

    CREATE TABLE notice_cursor (
        messenger_id TEXT PRIMARY KEY,
        seq          BIGINT NOT NULL CHECK (seq >= 0)
    );

    CREATE TABLE ported_numbers (
        phone_number TEXT PRIMARY KEY,
        operator_id  TEXT NOT NULL,
        ported_at    TIMESTAMPTZ NOT NULL,
        origin       TEXT NOT NULL CHECK (origin IN ('import', 'hint')),
        updated_at   TIMESTAMPTZ NOT NULL
    );

    CREATE UNLOGGED TABLE ported_import_staging (
        import_id    TEXT NOT NULL,
        line         BIGINT NOT NULL,
        phone_number TEXT NOT NULL,
        operator_id  TEXT NOT NULL,
        ported_at    TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX ported_import_staging_by_import ON ported_import_staging (import_id, line);
    """,
    # 2: leases (SQLite's migration 7): the replica running a pending verification holds it
    # until lease_expires_at; named leases (one active notice consumer per messenger). And at
    # most one unfinished or IDENTIFIED identification per user, whatever the writers do.
    """
    ALTER TABLE identifications ADD COLUMN lease_holder TEXT,
                                ADD COLUMN lease_expires_at TIMESTAMPTZ;
    CREATE UNIQUE INDEX identifications_one_live_per_user ON identifications (user_id)
        WHERE state IN ('AWAITING_CODE', 'VERIFYING', 'IDENTIFIED');

    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    """,
    # 3: the delivery policy (policy_store_pg.py): preferences, restriction orders and their
    # audit, the change log with commit-ordered versions, identification changes logged.
    PG_POLICY_MIGRATION,
]

# Insert or replace by a strictly later porting date (ties keep the stored row).
_UPSERT_PORTED: Final = """
    ON CONFLICT (phone_number) DO UPDATE SET
        operator_id = excluded.operator_id, ported_at = excluded.ported_at,
        origin = excluded.origin, updated_at = excluded.updated_at
    WHERE excluded.ported_at > ported_numbers.ported_at
"""
# The advisory lock keys (transaction-scoped): a user's, an (operator, code) pair's.
_LOCK_USER: Final = "SELECT pg_advisory_xact_lock(hashtext('idmesh.user:' || $1))"
_LOCK_CODE: Final = "SELECT pg_advisory_xact_lock(hashtext('idmesh.code:' || $1 || ':' || $2))"


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgGatewayStore:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    # --- reads -------------------------------------------------------------------------------

    async def get(self, identification_id: str) -> Identification | None:
        return await self._one(
            "SELECT * FROM identifications WHERE identification_id = $1", identification_id
        )

    async def current(self, user_id: str) -> Identification | None:
        return await self._one(
            "SELECT * FROM identifications WHERE user_id = $1 ORDER BY seq DESC LIMIT 1", user_id
        )

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        return await self._one(
            "SELECT * FROM identifications WHERE user_id = $1 AND idempotency_key = $2",
            user_id,
            key,
        )

    async def history(self, user_id: str) -> list[Identification]:
        rows = await self._db.fetch(
            "SELECT * FROM identifications WHERE user_id = $1 ORDER BY seq", user_id
        )
        return [identification_from_row(r) for r in rows]

    async def verifying_summary(self) -> tuple[int, datetime | None]:
        row = await self._db.fetchrow(
            "SELECT count(*), min(verification_deadline) FROM identifications "
            "WHERE state = 'VERIFYING'"
        )
        if row is None or not row[0]:
            return 0, None
        return int(row[0]), row[1]

    async def notice_cursor(self, messenger_id: str) -> int:
        value = await self._db.fetchval(
            "SELECT seq FROM notice_cursor WHERE messenger_id = $1", messenger_id
        )
        return 0 if value is None else int(value)

    async def inbox_has(self, event_id: str) -> bool:
        value = await self._db.fetchval("SELECT 1 FROM notice_inbox WHERE event_id = $1", event_id)
        return value is not None

    async def ported_number(self, phone_number: str) -> PortedNumber | None:
        row = await self._db.fetchrow(
            "SELECT * FROM ported_numbers WHERE phone_number = $1", phone_number
        )
        if row is None:
            return None
        return PortedNumber(
            phone_number=row["phone_number"],
            operator_id=row["operator_id"],
            ported_at=row["ported_at"],
            origin=RouteOrigin(row["origin"]),
        )

    # --- starting ----------------------------------------------------------------------------

    async def replace_current(
        self,
        new: Identification,
        *,
        now: datetime,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> Identification | None:
        async with self._db.transaction() as conn:
            await conn.execute(_LOCK_USER, new.user_id)
            if idempotency_key is not None:
                earlier = await _fetch(
                    conn,
                    "SELECT * FROM identifications WHERE user_id = $1 AND idempotency_key = $2",
                    new.user_id,
                    idempotency_key,
                )
                if earlier is not None:
                    raise IdempotentReplay(earlier)
            previous = await _fetch(
                conn,
                "SELECT * FROM identifications WHERE user_id = $1 ORDER BY seq DESC LIMIT 1",
                new.user_id,
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
                await conn.execute(
                    """UPDATE identifications
                        SET state = CASE state WHEN 'IDENTIFIED' THEN 'REVOKED'
                                               ELSE 'NOT_COMPLETED' END,
                            reason = 'NUMBER_CHANGED', completed_at = $1, code_hash = ''
                        WHERE identification_id = $2
                          AND state IN ('IDENTIFIED', 'AWAITING_CODE', 'VERIFYING')""",
                    now,
                    previous.identification_id,
                )
            await conn.execute(
                """INSERT INTO identifications
                   (identification_id, user_id, phone_number, state, reason, operator_id,
                    started_at, code_hash, code_expires_at, attempts_left, idempotency_key,
                    trace_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                new.identification_id,
                new.user_id,
                new.phone_number,
                str(new.state),
                str(new.reason),
                new.operator_id,
                new.started_at,
                new.code_hash,
                new.code_expires_at,
                new.attempts_left,
                idempotency_key,
                new.trace_id,
            )
            if previous is None:
                return None
            return await _fetch(
                conn,
                "SELECT * FROM identifications WHERE identification_id = $1",
                previous.identification_id,
            )

    # --- the one-time code -------------------------------------------------------------------

    async def expire_code(self, identification_id: str, now: datetime) -> bool:
        status = await self._db.execute(
            f"""UPDATE identifications
                SET state = 'NOT_COMPLETED', reason = '{Reason.CODE_EXPIRED}',
                    completed_at = $1, code_hash = ''
                WHERE identification_id = $2 AND state = 'AWAITING_CODE'""",
            now,
            identification_id,
        )
        return _count(status) == 1

    async def record_wrong_code(
        self, identification_id: str, now: datetime
    ) -> Identification | None:
        row = await self._db.fetchrow(
            f"""UPDATE identifications
                SET attempts_left = attempts_left - 1,
                    state = CASE WHEN attempts_left <= 1 THEN 'NOT_COMPLETED' ELSE state END,
                    reason = CASE WHEN attempts_left <= 1 THEN '{Reason.TOO_MANY_ATTEMPTS}'
                                  ELSE reason END,
                    completed_at = CASE WHEN attempts_left <= 1 THEN $1 ELSE completed_at END,
                    code_hash = CASE WHEN attempts_left <= 1 THEN '' ELSE code_hash END
                WHERE identification_id = $2 AND state = 'AWAITING_CODE'
                  AND attempts_left > 0
                RETURNING *""",
            now,
            identification_id,
        )
        return None if row is None else identification_from_row(row)

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
        status = await self._db.execute(
            """UPDATE identifications
               SET state = 'VERIFYING', verify_key = $1, verification_deadline = $2,
                   code_hash = '', lease_holder = $5, lease_expires_at = $6
               WHERE identification_id = $3 AND state = 'AWAITING_CODE'
                 AND code_expires_at > $4""",
            verify_key,
            deadline,
            identification_id,
            now,
            lease.holder,
            lease.expires_at,
        )
        return _count(status) == 1

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
        sql = """UPDATE identifications
                 SET state = $1, reason = $2, completed_at = $3,
                     identified_at = CASE WHEN $1 = 'IDENTIFIED' THEN $3 ELSE identified_at END,
                     operator_id = COALESCE($4, operator_id),
                     identification_code = COALESCE($5, identification_code)
                 WHERE identification_id = $6 AND verify_key = $7 AND state = 'VERIFYING'"""
        if within_window:
            sql += " AND verification_deadline > $3"
        async with self._db.transaction() as conn:
            final, why, code = state, reason, identification_code
            if state is State.IDENTIFIED and code is not None:
                operator = operator_id or await conn.fetchval(
                    "SELECT operator_id FROM identifications WHERE identification_id = $1",
                    identification_id,
                )
                # Serialised with apply_notice for the same code: a termination wins.
                await conn.execute(_LOCK_CODE, operator or "", code)
                ended = await conn.fetchval(
                    "SELECT reason FROM notice_inbox "
                    "WHERE operator_id = $1 AND identification_code = $2 LIMIT 1",
                    operator or "",
                    code,
                )
                if ended is not None:
                    final, why, code = (
                        State.NOT_COMPLETED,
                        TerminationKind(ended).revocation_reason,
                        None,
                    )
            status = await conn.execute(
                sql,
                str(final),
                str(why),
                now,
                operator_id,
                code,
                identification_id,
                verify_key,
            )
            return (final, why) if _count(status) == 1 else None

    async def follow_hint(
        self,
        identification_id: str,
        verify_key: str,
        *,
        recipient: str,
        donor: str,
        now: datetime,
    ) -> bool:
        async with self._db.transaction() as conn:
            phone_number = await conn.fetchval(
                """UPDATE identifications
                   SET operator_id = $1, verify_key = $2, hinted_by = $3
                   WHERE identification_id = $4 AND verify_key = $5 AND state = 'VERIFYING'
                     AND hinted_by IS NULL AND verification_deadline > $6
                   RETURNING phone_number""",
                recipient,
                hint_verify_key(verify_key),
                donor,
                identification_id,
                verify_key,
                now,
            )
            if phone_number is None:
                return False
            await _upsert_ported(
                conn, [PortedNumber(phone_number, recipient, now, RouteOrigin.HINT)], now
            )
            return True

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool:
        entry = PortedNumber(phone_number, recipient, now, RouteOrigin.HINT)
        async with self._db.transaction() as conn:
            return await _upsert_ported(conn, [entry], now) == 1

    async def expire_overdue(self, now: datetime) -> list[str]:
        rows = await self._db.fetch(
            f"""UPDATE identifications
                SET state = 'NOT_COMPLETED', reason = '{Reason.OPERATOR_TIMEOUT}',
                    completed_at = $1
                WHERE state = 'VERIFYING' AND verification_deadline <= $1
                RETURNING identification_id""",
            now,
        )
        return [row[0] for row in rows]

    # --- leases ------------------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        # SKIP LOCKED: rows another replica is claiming (or finishing) are left to it; a row
        # claimed and committed meanwhile is re-checked against the WHERE when locked.
        rows = await self._db.fetch(
            """UPDATE identifications SET lease_holder = $1, lease_expires_at = $2
               WHERE identification_id IN (
                   SELECT identification_id FROM identifications
                   WHERE state = 'VERIFYING' AND verification_deadline > $3
                     AND (lease_holder IS NULL OR lease_expires_at <= $3)
                   ORDER BY seq LIMIT $4
                   FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            lease.holder,
            lease.expires_at,
            now,
            limit,
        )
        return sorted((identification_from_row(r) for r in rows), key=lambda i: i.started_at)

    async def renew_verifications(self, lease: Lease, running: Sequence[str]) -> list[str]:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE identifications SET lease_expires_at = $1 "
                "WHERE identification_id = ANY($3::text[]) AND state = 'VERIFYING' "
                "AND lease_holder = $2",
                lease.expires_at,
                lease.holder,
                list(running),
            )
            rows = await conn.fetch(
                "SELECT identification_id FROM identifications "
                "WHERE identification_id = ANY($1::text[]) AND state = 'VERIFYING' "
                "AND lease_holder IS DISTINCT FROM $2",
                list(running),
                lease.holder,
            )
        return [row[0] for row in rows]

    async def release_verifications(self, holder: str) -> int:
        return _count(
            await self._db.execute(
                "UPDATE identifications SET lease_holder = NULL, lease_expires_at = NULL "
                "WHERE state = 'VERIFYING' AND lease_holder = $1",
                holder,
            )
        )

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> bool:
        held = await self._db.fetchval(
            """INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO UPDATE
               SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
               RETURNING holder""",
            name,
            lease.holder,
            lease.expires_at,
            now,
        )
        return held is not None

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    async def lease_of(self, name: str) -> Lease | None:
        row = await self._db.fetchrow("SELECT holder, expires_at FROM leases WHERE name = $1", name)
        return None if row is None else Lease(row["holder"], row["expires_at"])

    # --- notices -----------------------------------------------------------------------------

    async def apply_notices(
        self,
        messenger_id: str,
        notices: Sequence[tuple[TerminationNotice, bool]],
        *,
        now: datetime,
    ) -> list[NoticeResult]:
        async with self._db.transaction() as conn:
            stored = await conn.fetchval(
                "SELECT seq FROM notice_cursor WHERE messenger_id = $1", messenger_id
            )
            cursor = 0 if stored is None else int(stored)
            results: list[NoticeResult] = []
            for notice, revoke in notices:
                applied, revoked = await _apply_notice(conn, notice, now, revoke)
                cursor = max(cursor, notice.seq)
                results.append(NoticeResult(applied=applied, revoked=revoked, cursor=cursor))
            if notices:
                await conn.execute(
                    """INSERT INTO notice_cursor (messenger_id, seq) VALUES ($1, $2)
                       ON CONFLICT (messenger_id)
                       DO UPDATE SET seq = greatest(notice_cursor.seq, excluded.seq)""",
                    messenger_id,
                    cursor,
                )
            failpoint("gateway.notice.before_commit")
        return results

    # --- the ported-numbers table ---------------------------------------------------------------

    async def stage_ported(self, import_id: str, rows: Sequence[tuple[int, PortedNumber]]) -> None:
        async with self._db.transaction() as conn:
            await conn.copy_records_to_table(
                "ported_import_staging",
                records=[
                    (import_id, line, r.phone_number, r.operator_id, r.ported_at)
                    for line, r in rows
                ],
                columns=("import_id", "line", "phone_number", "operator_id", "ported_at"),
            )

    async def commit_ported(self, import_id: str, now: datetime) -> int:
        async with self._db.transaction() as conn:
            # One row per number, the last line's (as the line-ordered upserts on SQLite: a
            # later line replaces an earlier one only with a later porting date).
            status = await conn.execute(
                "INSERT INTO ported_numbers "
                "(phone_number, operator_id, ported_at, origin, updated_at) "
                "SELECT DISTINCT ON (phone_number) phone_number, operator_id, ported_at, "
                "'import', $1 FROM ported_import_staging WHERE import_id = $2 "
                "ORDER BY phone_number, ported_at DESC, line" + _UPSERT_PORTED,
                now,
                import_id,
            )
            await conn.execute("DELETE FROM ported_import_staging WHERE import_id = $1", import_id)
            return _count(status)

    async def discard_ported(self, import_id: str) -> None:
        await self._db.execute("DELETE FROM ported_import_staging WHERE import_id = $1", import_id)

    # --- helpers -----------------------------------------------------------------------------

    async def _one(self, sql: str, *args: Any) -> Identification | None:
        row = await self._db.fetchrow(sql, *args)
        return None if row is None else identification_from_row(row)


async def _apply_notice(
    conn: Connection, notice: TerminationNotice, now: datetime, revoke: bool
) -> tuple[bool, int]:
    """The inbox row and the revocations of one notice: (applied, identifications revoked)."""
    if revoke:  # serialised with finish_verification for the same code: a termination wins
        await conn.execute(_LOCK_CODE, notice.operator_id, notice.identification_code)
    inserted = await conn.fetchval(
        """INSERT INTO notice_inbox
               (event_id, seq, operator_id, reason, revoked, applied_at, identification_code)
           VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (event_id) DO NOTHING
           RETURNING 1""",
        notice.event_id,
        notice.seq,
        notice.operator_id,
        str(notice.kind),
        now,
        # only our own notices end our codes (another messenger's is logged and ignored)
        notice.identification_code if revoke else None,
    )
    applied = inserted is not None
    revoked = 0
    if applied and revoke:
        revoked = _count(
            await conn.execute(
                """UPDATE identifications
                   SET state = 'REVOKED', reason = $1, completed_at = $2
                   WHERE state = 'IDENTIFIED' AND operator_id = $3
                     AND identification_code = $4""",
                str(notice.revocation_reason),
                now,
                notice.operator_id,
                notice.identification_code,
            )
        )
        await conn.execute(
            "UPDATE notice_inbox SET revoked = $1 WHERE event_id = $2", revoked, notice.event_id
        )
    return applied, revoked


async def _fetch(conn: Connection, sql: str, *args: Any) -> Identification | None:
    row = await conn.fetchrow(sql, *args)
    return None if row is None else identification_from_row(row)


async def _upsert_ported(conn: Connection, rows: Sequence[PortedNumber], now: datetime) -> int:
    stored = 0
    for r in rows:
        status = await conn.execute(
            "INSERT INTO ported_numbers (phone_number, operator_id, ported_at, origin, updated_at) "
            "VALUES ($1, $2, $3, $4, $5)" + _UPSERT_PORTED,
            r.phone_number,
            r.operator_id,
            r.ported_at,
            str(r.origin),
            now,
        )
        stored += _count(status)
    return stored
