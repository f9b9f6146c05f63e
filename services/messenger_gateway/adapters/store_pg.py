"""The gateway's PostgreSQL store (the GatewayStore port, identification/ports.py).

Identifications change only through the unit of work (run): the transaction functions of
identification/transactions.py decide, and PgIdentificationTx only runs their statements, each state
change a compare-and-set on the state the row leaves, as on SQLite, so concurrent actors cannot both
win. What SQLite's single writer serialised is serialised here by transaction-scoped advisory locks:
- replacing a user's current identification holds the user's lock (two StartIdentification
  calls for one user cannot both see "no previous identification" and leave two current ones);
- checking an IDENTIFIED answer's code and applying a termination notice hold the lock of the
  (operator, identification code) pair, so a termination wins whatever the order they commit.
A partial unique index keeps at most one unfinished or IDENTIFIED identification per user, so
even a writer that skipped the lock could not leave two current ones. Pending verifications and
the notice consumer are held by leases (services/common/lease.py): claims take only free or
expired rows, `FOR UPDATE SKIP LOCKED`, so two replicas never take the same one, and raise the
lease's fencing token; the holder's writes re-check it in their own statement (a verification's
compare-and-set) or lock the lease row to the commit (holds_lease, a notice batch's last).
The delivery policy's tables (and the triggers that log identification changes to its change
log) are policy_store_pg.py's, migration 3 of schema_pg.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from asyncpg import Connection

from services.common.lease import RELEASED_AT, Fence, Lease
from services.common.pg import PgDatabase
from services.messenger_gateway.adapters.policy_store import change_from_row
from services.messenger_gateway.adapters.policy_store_pg import CHANGE_COLUMNS
from services.messenger_gateway.adapters.store import identification_from_row
from services.messenger_gateway.identification.model import Identification
from services.messenger_gateway.identification.ports import TxFunction
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.policy.model import PolicyChange
from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin

T = TypeVar("T")

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

    # --- the unit of work (IdentificationTx; the decisions are identification/transactions.py's)

    async def run(self, fn: TxFunction[T]) -> T:
        """fn(tx) in a transaction of its own (the pool runs several at once)."""
        async with self._db.transaction() as conn:
            return await fn(PgIdentificationTx(conn))

    async def run_grouped(self, fn: TxFunction[T]) -> T:
        return await self.run(fn)

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool:
        entry = PortedNumber(phone_number, recipient, now, RouteOrigin.HINT)
        async with self._db.transaction() as conn:
            return await _upsert_ported(conn, [entry], now) == 1

    # --- leases ------------------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        # SKIP LOCKED: rows another replica is claiming (or finishing) are left to it; a row
        # claimed and committed meanwhile is re-checked against the WHERE when locked.
        rows = await self._db.fetch(
            """UPDATE identifications
               SET lease_holder = $1, lease_expires_at = $2, lease_token = lease_token + 1
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

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        # the token is kept by a renewal of a live lease, raised by any other take
        token = await self._db.fetchval(
            """INSERT INTO leases (name, holder, expires_at, token) VALUES ($1, $2, $3, 1)
               ON CONFLICT (name) DO UPDATE
               SET holder = excluded.holder, expires_at = excluded.expires_at,
                   token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4
                                THEN leases.token ELSE leases.token + 1 END
               WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
               RETURNING token""",
            name,
            lease.holder,
            lease.expires_at,
            now,
        )
        return None if token is None else int(token)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.execute(
            "UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2",
            name,
            holder,
            RELEASED_AT,
        )

    async def lease_of(self, name: str) -> Lease | None:
        row = await self._db.fetchrow(
            "SELECT holder, expires_at, token FROM leases WHERE name = $1", name
        )
        return None if row is None else Lease(row["holder"], row["expires_at"], row["token"])

    async def leases(self, prefix: str) -> dict[str, Lease]:
        rows = await self._db.fetch(
            "SELECT name, holder, expires_at FROM leases WHERE substr(name, 1, $1) = $2",
            len(prefix),
            prefix,
        )
        return {r["name"]: Lease(r["holder"], r["expires_at"]) for r in rows}

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


# The columns a transition may change (compare_and_set writes them all).
_MUTABLE: Final = (
    "state, reason, operator_id, code_hash, attempts_left, verify_key, verification_deadline, "
    "identification_code, completed_at, hinted_by, identified_at"
)
_GUARD: Final = (
    "WHERE identification_id = $12 AND state = $13 AND verify_key IS NOT DISTINCT FROM $14 "
    "AND attempts_left = $15"
)
_CAS: Final = (
    f"UPDATE identifications SET ({_MUTABLE}) = "
    f"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) {_GUARD}"
)
_CAS_LEASED: Final = (
    f"UPDATE identifications SET ({_MUTABLE}, lease_holder, lease_expires_at, lease_token) = "
    f"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $16, $17, $18) {_GUARD}"
)
# A write by the replica verifying it: only while its lease is still the one it began with
# (the last two parameters). Read committed re-checks it on the row as a concurrent claim left it.
_FENCED: Final = " AND lease_holder = ${} AND lease_token = ${}"
# The lease a write is made under, still held (locked until the commit: a take waits for it).
_HOLDS_LEASE: Final = (
    "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 FOR SHARE"
)


# This transaction's unversioned change-log entries take the next versions, in the order they
# were logged, as its last statement (policy_store_pg.py: the head's row lock is held until the
# commit, so versions stay gap-free and in commit order); the deferred trigger then has nothing
# left to version. No entry: the head is not touched.
_TAKE_VERSIONS: Final = f"""
    WITH mine AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total
        FROM policy_changes WHERE version IS NULL
    ), head AS (
        UPDATE policy_log_head SET version = version + (SELECT max(total) FROM mine)
        WHERE EXISTS (SELECT 1 FROM mine)
        RETURNING version
    )
    UPDATE policy_changes SET version = head.version - mine.total + mine.n
    FROM mine, head WHERE policy_changes.id = mine.id
    RETURNING {", ".join(f"policy_changes.{c}" for c in CHANGE_COLUMNS.split(", "))}
"""


class PgIdentificationTx:
    """ports.IdentificationTx on one asyncpg transaction. What SQLite's single writer
    serialises is serialised here by transaction-scoped advisory locks (lock_user; the
    (operator, code) pair's in ended_by_notice and add_to_inbox)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock_user(self, user_id: str) -> None:
        await self._conn.execute(_LOCK_USER, user_id)

    async def get(self, identification_id: str) -> Identification | None:
        return await _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE identification_id = $1",
            identification_id,
        )

    async def current(self, user_id: str) -> Identification | None:
        return await _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE user_id = $1 ORDER BY seq DESC LIMIT 1",
            user_id,
        )

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        return await _fetch(
            self._conn,
            "SELECT * FROM identifications WHERE user_id = $1 AND idempotency_key = $2",
            user_id,
            key,
        )

    async def insert(self, new: Identification, idempotency_key: str | None) -> None:
        await self._conn.execute(
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

    async def compare_and_set(
        self,
        before: Identification,
        after: Identification,
        *,
        lease: Lease | None = None,
        fence: Fence | None = None,
    ) -> bool:
        values: tuple[Any, ...] = (
            str(after.state),
            str(after.reason),
            after.operator_id,
            after.code_hash,
            after.attempts_left,
            after.verify_key,
            after.verification_deadline,
            after.identification_code,
            after.completed_at,
            after.hinted_by,
            after.identified_at,
            before.identification_id,
            str(before.state),
            before.verify_key,
            before.attempts_left,
        )
        sql = _CAS
        if lease is not None:
            sql = _CAS_LEASED
            values = (*values, lease.holder, lease.expires_at, after.lease_token)
        if fence is not None:
            sql += _FENCED.format(len(values) + 1, len(values) + 2)
            values = (*values, fence.holder, fence.token)
        return _count(await self._conn.execute(sql, *values)) == 1

    async def holds_lease(self, fence: Fence) -> bool:
        held = await self._conn.fetchval(_HOLDS_LEASE, fence.name, fence.holder, fence.token)
        return held is not None

    async def ended_by_notice(self, operator_id: str, code: str) -> TerminationKind | None:
        # Serialised with add_to_inbox for the same code: a termination wins.
        await self._conn.execute(_LOCK_CODE, operator_id, code)
        ended = await self._conn.fetchval(
            "SELECT reason FROM notice_inbox "
            "WHERE operator_id = $1 AND identification_code = $2 LIMIT 1",
            operator_id,
            code,
        )
        return None if ended is None else TerminationKind(ended)

    async def overdue(self, now: datetime) -> list[Identification]:
        rows = await self._conn.fetch(
            "SELECT * FROM identifications WHERE state = 'VERIFYING' "
            "AND verification_deadline <= $1 ORDER BY seq",
            now,
        )
        return [identification_from_row(row) for row in rows]

    async def identified_with_code(self, operator_id: str, code: str) -> list[Identification]:
        rows = await self._conn.fetch(
            "SELECT * FROM identifications WHERE state = 'IDENTIFIED' AND operator_id = $1 "
            "AND identification_code = $2 ORDER BY seq",
            operator_id,
            code,
        )
        return [identification_from_row(row) for row in rows]

    async def remember_route(self, entry: PortedNumber) -> bool:
        return await _upsert_ported(self._conn, [entry], entry.ported_at) == 1

    async def log_mark(self) -> int:
        return 0  # own_policy_changes finds this transaction's entries by their missing version

    async def own_policy_changes(self, mark: int) -> list[PolicyChange]:
        # the entries without a version are this transaction's own (the others' are invisible
        # until their commit, which versions them): versioned now, the head held to the commit
        rows = await self._conn.fetch(_TAKE_VERSIONS)
        return sorted((change_from_row(row) for row in rows), key=lambda c: c.version)

    async def notice_cursor(self, messenger_id: str) -> int:
        stored = await self._conn.fetchval(
            "SELECT seq FROM notice_cursor WHERE messenger_id = $1", messenger_id
        )
        return 0 if stored is None else int(stored)

    async def add_to_inbox(
        self, notice: TerminationNotice, *, ends_code: bool, now: datetime
    ) -> bool:
        if ends_code:  # serialised with ended_by_notice for the same code: a termination wins
            await self._conn.execute(_LOCK_CODE, notice.operator_id, notice.identification_code)
        inserted = await self._conn.fetchval(
            """INSERT INTO notice_inbox
                   (event_id, seq, operator_id, reason, revoked, applied_at, identification_code)
               VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (event_id) DO NOTHING
               RETURNING 1""",
            notice.event_id,
            notice.seq,
            notice.operator_id,
            str(notice.kind),
            now,
            notice.identification_code if ends_code else None,
        )
        return inserted is not None

    async def set_inbox_revoked(self, event_id: str, revoked: int) -> None:
        await self._conn.execute(
            "UPDATE notice_inbox SET revoked = $1 WHERE event_id = $2", revoked, event_id
        )

    async def advance_notice_cursor(self, messenger_id: str, seq: int) -> None:
        await self._conn.execute(
            """INSERT INTO notice_cursor (messenger_id, seq) VALUES ($1, $2)
               ON CONFLICT (messenger_id)
               DO UPDATE SET seq = greatest(notice_cursor.seq, excluded.seq)""",
            messenger_id,
            seq,
        )


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
