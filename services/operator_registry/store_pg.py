"""The registry's PostgreSQL store (the RegistryStore port, ports.py), for several replicas on one
database.

What one SQLite writer did alone, and how it stays right with replicas:
- VerifySubscriber at two replicas for one number: both may decide to bind; the bindings'
  primary key lets one commit, the other fails on the key and its transaction function runs
  again (`run` retries a unique-key race), now finding the binding: one binding, one code.
- A verification and a termination of the same contract: the verification holds the active
  contract FOR SHARE, the termination takes it FOR UPDATE before it reads the bindings, so a
  binding is either seen by the termination (and gets its notice) or made after it (and finds
  no active contract).
- Bulk import streams rows in with COPY (import_store_pg.py).
- The outbox relay runs on every replica: pending_notices claims rows (FOR UPDATE SKIP LOCKED)
  for a lease; a relay killed mid-way leaves its claim to expire, and the notifier takes a
  notice published twice once (idempotent by event id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Final, TypeVar

import asyncpg
from asyncpg import Connection

from services.common.pg import PgDatabase
from services.common.timeutil import from_iso
from services.operator_registry.domain import (
    Agreement,
    AuditQuery,
    AuditRecord,
    Binding,
    Contract,
    NumberHistory,
    ParkedNotice,
    Subscriber,
    TerminationNotice,
    TerminationReason,
    Verification,
    audit_outcome_names,
)
from services.operator_registry.import_store_pg import PgImportStaging
from services.operator_registry.ports import ImportStaging, TxFunction, VerificationSnapshot
from services.operator_registry.store import (
    agreement_from_row,
    notice_from_row,
    snapshot_from_row,
    subscriber_from_rows,
)

T = TypeVar("T")

SERVICE: Final = "operator_registry"
# How long a relay's claim on outbox rows holds if it never marks them published (it died).
RELAY_LEASE_SECONDS: Final = 30.0
# A transaction that lost a race with another replica's (a unique key taken first; a deadlock,
# e.g. two bulk terminations locking contracts in different orders) is run again, this often.
_ATTEMPTS: Final = 3
_RETRIED: Final = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)

PG_MIGRATIONS: Final[list[str]] = [
    # 1: the schema of SQLite's migrations 1-4, and the relay's claims.
    """
    CREATE TABLE contracts (
        id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        contract_id           TEXT NOT NULL UNIQUE,
        phone_number          TEXT NOT NULL,
        state                 TEXT NOT NULL CHECK (state IN ('active', 'terminated')),
        activated_at          TIMESTAMPTZ NOT NULL,
        terminated_at         TIMESTAMPTZ,
        termination_reason    TEXT CHECK (termination_reason IN ('contract_ended', 'ported_out')),
        recipient_operator_id TEXT,
        CHECK ((state = 'active') = (terminated_at IS NULL))
    );
    CREATE UNIQUE INDEX contracts_one_active ON contracts (phone_number) WHERE state = 'active';
    CREATE INDEX contracts_by_number ON contracts (phone_number, id);

    CREATE TABLE agreements (
        messenger_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
        updated_at   TIMESTAMPTZ NOT NULL
    );

    CREATE TABLE bindings (
        contract_id         TEXT NOT NULL REFERENCES contracts (contract_id),
        messenger_id        TEXT NOT NULL REFERENCES agreements (messenger_id),
        identification_code TEXT NOT NULL UNIQUE,
        bound_at            TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (contract_id, messenger_id)
    );

    CREATE TABLE verifications (
        messenger_id          TEXT NOT NULL,
        idempotency_key       TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        result                TEXT NOT NULL CHECK (result IN ('identified', 'no_subscriber')),
        contract_id           TEXT,
        identification_code   TEXT,
        identified_at         TIMESTAMPTZ,
        answered_at           TIMESTAMPTZ NOT NULL,
        recipient_operator_id TEXT,
        PRIMARY KEY (messenger_id, idempotency_key)
    );
    CREATE INDEX verifications_by_time ON verifications (answered_at);

    CREATE TABLE outbox (
        seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id              TEXT NOT NULL UNIQUE,
        created_at            TIMESTAMPTZ NOT NULL,
        operator_id           TEXT NOT NULL,
        messenger_id          TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        identification_code   TEXT NOT NULL,
        reason                TEXT NOT NULL,
        occurred_at           TIMESTAMPTZ NOT NULL,
        recipient_operator_id TEXT NOT NULL DEFAULT '',
        published_at          TIMESTAMPTZ,
        trace_id              TEXT NOT NULL DEFAULT '',
        parked_at             TIMESTAMPTZ,
        parked_status         TEXT,
        parked_message        TEXT,
        claimed_by            TEXT,
        claimed_until         TIMESTAMPTZ
    );
    CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL AND parked_at IS NULL;
    CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL;

    CREATE TABLE registry_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- created_at in the storage form of services.common.timeutil.to_iso (UTC, microseconds).
    INSERT INTO registry_meta (key, value)
        VALUES ('created_at', to_char(now() AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'));

    CREATE TABLE audit_log (
        id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        recorded_at         TIMESTAMPTZ NOT NULL,
        messenger_id        TEXT NOT NULL,
        masked_phone_number TEXT NOT NULL,
        idempotency_key     TEXT NOT NULL,
        outcome             TEXT NOT NULL
    );
    CREATE INDEX audit_log_time ON audit_log (recorded_at);
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit records are append-only';
    END
    $$;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    """,
    # 2 (index maintenance, as SQLite's migration 5): bindings.identification_code is no longer
    # UNIQUE: no query looks a code up, a code is 128 random bits, and the unique index cost an
    # insert at a random place of a large index for every binding. verifications_by_time stays:
    # retention's DELETE reads it (there is no rowid order to delete in here).
    """
    ALTER TABLE bindings DROP CONSTRAINT IF EXISTS bindings_identification_code_key;
    """,
]

_AUDIT_INSERT: Final = (
    "INSERT INTO audit_log "
    "(recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome) "
    "VALUES ($1, $2, $3, $4, $5)"
)
_SUBSCRIBER_SQL: Final = """
    SELECT c.contract_id, c.phone_number, c.state, c.activated_at, c.terminated_at,
           c.termination_reason, c.recipient_operator_id,
           b.messenger_id AS b_messenger_id, b.identification_code, b.bound_at
    FROM (
        SELECT * FROM contracts WHERE phone_number = $1
        ORDER BY state = 'active' DESC, id DESC LIMIT 1
    ) AS c
    LEFT JOIN bindings AS b ON b.contract_id = c.contract_id
    ORDER BY b.bound_at, b.messenger_id
"""
_SNAPSHOT_SQL: Final = """
    SELECT
        (SELECT state FROM agreements WHERE messenger_id = $1) AS agreement_state,
        v.phone_number AS v_phone_number, v.result AS v_result,
        v.contract_id AS v_contract_id, v.identification_code AS v_code,
        v.identified_at AS v_identified_at, v.answered_at AS v_answered_at,
        v.recipient_operator_id AS v_recipient,
        c.contract_id AS c_contract_id,
        b.identification_code AS b_code, b.bound_at AS b_bound_at,
        -- the recipient of the most recent contract if it was ported out: only asked when
        -- there is no active contract (the hint of a NO_SUBSCRIBER answer)
        CASE WHEN c.contract_id IS NULL THEN
            (SELECT CASE WHEN last.termination_reason = 'ported_out'
                         THEN last.recipient_operator_id END
             FROM contracts AS last WHERE last.phone_number = $3
             ORDER BY last.id DESC LIMIT 1)
        END AS ported_to
    FROM (SELECT 1) AS one
    LEFT JOIN verifications AS v ON v.messenger_id = $1 AND v.idempotency_key = $2
    LEFT JOIN contracts AS c ON c.phone_number = $3 AND c.state = 'active'
    LEFT JOIN bindings AS b ON b.contract_id = c.contract_id AND b.messenger_id = $1
"""
_NOTICE_COLUMNS: Final = (
    "event_id, operator_id, messenger_id, phone_number, identification_code, reason, "
    "occurred_at, recipient_operator_id, trace_id"
)
# The relay's queue: notices not yet acknowledged by the notifier, and not parked.
_QUEUED: Final = "published_at IS NULL AND parked_at IS NULL"


def _count(status: str) -> int:
    """The row count of a command status ("INSERT 0 3", "UPDATE 2", "DELETE 1")."""
    return int(status.rsplit(" ", 1)[-1])


class PgRegistryStore:
    def __init__(self, db: PgDatabase, *, relay_lease_seconds: float = RELAY_LEASE_SECONDS) -> None:
        self._db = db
        self._relay_id = uuid.uuid4().hex  # this replica's name on its outbox claims
        self._relay_lease_seconds = relay_lease_seconds

    async def run(self, fn: TxFunction[T]) -> T:
        return await self.run_grouped(fn)

    async def run_grouped(
        self, fn: TxFunction[T], *, before_commit: Callable[[], None] | None = None
    ) -> T:
        """fn(tx) in a transaction of its own (no grouping: replicas spread the load), run again
        when it lost a race with another replica's transaction (it then sees the winner's
        rows); before_commit() right before the commit."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._db.transaction() as conn:
                    result = await fn(PgRegistryTx(conn))
                    if before_commit is not None:
                        before_commit()
                    return result
            except _RETRIED:
                if attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def add_audit(self, record: AuditRecord) -> None:
        await self._db.execute(_AUDIT_INSERT, *_audit_params(record))

    async def list_audit(self, query: AuditQuery) -> list[tuple[int, AuditRecord]]:
        where: list[str] = []
        params: list[object] = []

        def condition(sql: str, value: object) -> None:
            params.append(value)
            where.append(sql.format(f"${len(params)}"))

        if query.messenger_id:
            condition("messenger_id = {}", query.messenger_id)
        if query.outcome:
            condition("outcome = ANY({}::text[])", list(audit_outcome_names(query.outcome)))
        if query.since is not None:
            condition("recorded_at >= {}", query.since)
        if query.until is not None:
            condition("recorded_at < {}", query.until)
        if query.before_id is not None:
            condition("id < {}", query.before_id)
        params.append(query.page_size)
        sql = (
            "SELECT id, recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome "
            "FROM audit_log"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY id DESC LIMIT ${len(params)}"
        )
        rows = await self._db.fetch(sql, *params)
        return [
            (
                int(r["id"]),
                AuditRecord(
                    recorded_at=r["recorded_at"],
                    messenger_id=r["messenger_id"],
                    masked_phone_number=r["masked_phone_number"],
                    idempotency_key=r["idempotency_key"],
                    outcome=r["outcome"],
                ),
            )
            for r in rows
        ]

    async def prune_audit(self, before: datetime) -> int:
        return _count(
            await self._db.execute("DELETE FROM audit_log WHERE recorded_at < $1", before)
        )

    def import_staging(self) -> ImportStaging:
        """A bulk import's staging area (import_store_pg.py: COPY into a TEMP table), on a
        connection of its own."""
        return self._db.guard(PgImportStaging(self._db.url))

    # --- reads ------------------------------------------------------------------------------

    async def get_subscriber(self, phone_number: str) -> Subscriber | None:
        return subscriber_from_rows(await self._db.fetch(_SUBSCRIBER_SQL, phone_number))

    async def get_agreement(self, messenger_id: str) -> Agreement | None:
        row = await self._db.fetchrow(
            "SELECT * FROM agreements WHERE messenger_id = $1", messenger_id
        )
        return agreement_from_row(row) if row else None

    async def list_agreements(self) -> list[Agreement]:
        rows = await self._db.fetch("SELECT * FROM agreements ORDER BY messenger_id")
        return [agreement_from_row(row) for row in rows]

    async def pending_notices(self, limit: int) -> list[TerminationNotice]:
        """Claim up to limit unpublished notices that no other relay holds a live claim on
        (this replica's own claims included, for its retries), oldest first."""
        rows = await self._db.fetch(
            f"""
            UPDATE outbox SET claimed_by = $2,
                claimed_until = now() + make_interval(secs => $3)
            WHERE seq IN (
                SELECT seq FROM outbox
                WHERE {_QUEUED}
                  AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $2)
                ORDER BY seq LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            RETURNING seq, {_NOTICE_COLUMNS}
            """,
            limit,
            self._relay_id,
            self._relay_lease_seconds,
        )
        return [notice_from_row(row) for row in sorted(rows, key=lambda row: row["seq"])]

    async def release_notices(self, event_ids: Sequence[str]) -> int:
        if not event_ids:
            return 0
        return _count(
            await self._db.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL "
                "WHERE claimed_by = $1 AND published_at IS NULL AND event_id = ANY($2::text[])",
                self._relay_id,
                list(event_ids),
            )
        )

    async def count_pending_notices(self) -> int:
        return int(await self._db.fetchval(f"SELECT count(*) FROM outbox WHERE {_QUEUED}"))

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        row = await self._db.fetchrow(
            f"SELECT count(*), min(created_at) FROM outbox WHERE {_QUEUED}"
        )
        if row is None or not row[0]:
            return 0, None
        return int(row[0]), row[1]

    async def count_bindings(self) -> int:
        return int(await self._db.fetchval("SELECT count(*) FROM bindings"))

    async def count_verifications(self) -> int:
        return int(await self._db.fetchval("SELECT count(*) FROM verifications"))

    async def number_history(self, phone_number: str) -> NumberHistory:
        row = await self._db.fetchrow(
            "SELECT max(activated_at) AS activated, max(terminated_at) AS terminated "
            "FROM contracts WHERE phone_number = $1",
            phone_number,
        )
        return NumberHistory(
            last_activated_at=row["activated"] if row else None,
            last_terminated_at=row["terminated"] if row else None,
        )

    async def records_begin_at(self) -> datetime:
        row = await self._db.fetchrow(
            "SELECT (SELECT value FROM registry_meta WHERE key = 'created_at') AS created_at, "
            "(SELECT min(activated_at) FROM contracts) AS first_activation"
        )
        assert row is not None and row["created_at"] is not None  # written by migration 1
        created_at = from_iso(row["created_at"])
        first: datetime | None = row["first_activation"]
        return created_at if first is None else min(created_at, first)

    async def count_parked_notices(self) -> int:
        return int(
            await self._db.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        )

    async def list_parked_notices(self, after_seq: int, limit: int) -> list[ParkedNotice]:
        rows = await self._db.fetch(
            f"SELECT seq, {_NOTICE_COLUMNS}, parked_at, parked_status, parked_message "
            "FROM outbox WHERE parked_at IS NOT NULL AND seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        return [
            ParkedNotice(
                seq=int(row["seq"]),
                notice=notice_from_row(row),
                parked_at=row["parked_at"],
                status=row["parked_status"],
                message=row["parked_message"],
            )
            for row in rows
        ]

    async def park_notice(self, event_id: str, status: str, message: str, at: datetime) -> int:
        return _count(
            await self._db.execute(
                "UPDATE outbox SET parked_at = $1, parked_status = $2, parked_message = $3, "
                "claimed_by = NULL, claimed_until = NULL "
                "WHERE event_id = $4 AND published_at IS NULL",
                at,
                status,
                message,
                event_id,
            )
        )

    async def requeue_parked(self, event_ids: Sequence[str]) -> int:
        where = "parked_at IS NOT NULL"
        args: list[object] = []
        if event_ids:
            where += " AND event_id = ANY($1::text[])"
            args.append(list(event_ids))
        return _count(
            await self._db.execute(
                "UPDATE outbox SET parked_at = NULL, parked_status = NULL, parked_message = NULL "
                f"WHERE {where}",
                *args,
            )
        )

    async def prune_verifications(self, before: datetime) -> int:
        return _count(
            await self._db.execute("DELETE FROM verifications WHERE answered_at < $1", before)
        )

    async def mark_published(self, event_ids: Sequence[str], at: datetime) -> int:
        if not event_ids:
            return 0
        return _count(
            await self._db.execute(
                "UPDATE outbox SET published_at = $1, claimed_by = NULL, claimed_until = NULL "
                "WHERE published_at IS NULL AND event_id = ANY($2::text[])",
                at,
                list(event_ids),
            )
        )


def _audit_params(record: AuditRecord) -> tuple[datetime, str, str, str, str]:
    return (
        record.recorded_at,
        record.messenger_id,
        record.masked_phone_number,
        record.idempotency_key,
        record.outcome,
    )


class PgRegistryTx:
    """Statements inside one transaction (see PgRegistryStore.run), on its connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add_audit(self, record: AuditRecord) -> None:
        await self._conn.execute(_AUDIT_INSERT, *_audit_params(record))

    # --- verification -----------------------------------------------------------------------

    async def verification_snapshot(
        self, messenger_id: str, idempotency_key: str, phone_number: str
    ) -> VerificationSnapshot:
        # First hold the active contract against a termination (which takes it FOR UPDATE),
        # then read, in a statement of its own, as committed after any termination waited for.
        await self._conn.execute(
            "SELECT 1 FROM contracts WHERE phone_number = $1 AND state = 'active' FOR SHARE",
            phone_number,
        )
        row = await self._conn.fetchrow(_SNAPSHOT_SQL, messenger_id, idempotency_key, phone_number)
        assert row is not None  # FROM (SELECT 1): always one row
        return snapshot_from_row(row, messenger_id, idempotency_key)

    async def add_binding(self, binding: Binding) -> None:
        await self._conn.execute(
            "INSERT INTO bindings (contract_id, messenger_id, identification_code, bound_at) "
            "VALUES ($1, $2, $3, $4)",
            binding.contract_id,
            binding.messenger_id,
            binding.identification_code,
            binding.bound_at,
        )

    async def add_verification(self, answer: Verification) -> None:
        await self._conn.execute(
            "INSERT INTO verifications (messenger_id, idempotency_key, phone_number, result, "
            "contract_id, identification_code, identified_at, answered_at, "
            "recipient_operator_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            # a stale stored answer (see Verification.replayable) is replaced by the new one
            "ON CONFLICT (messenger_id, idempotency_key) DO UPDATE SET result = excluded.result, "
            "contract_id = excluded.contract_id, "
            "identification_code = excluded.identification_code, "
            "identified_at = excluded.identified_at, answered_at = excluded.answered_at, "
            "recipient_operator_id = excluded.recipient_operator_id",
            answer.messenger_id,
            answer.idempotency_key,
            answer.phone_number,
            answer.result.value,
            answer.contract_id,
            answer.identification_code,
            answer.identified_at,
            answer.answered_at,
            answer.recipient_operator_id,
        )

    # --- contracts --------------------------------------------------------------------------

    async def subscriber(self, phone_number: str) -> Subscriber | None:
        # The active contract locked first, so that the bindings read next (a new statement)
        # include every binding a verification that held the contract has committed.
        await self._conn.execute(
            "SELECT 1 FROM contracts WHERE phone_number = $1 AND state = 'active' FOR UPDATE",
            phone_number,
        )
        return subscriber_from_rows(await self._conn.fetch(_SUBSCRIBER_SQL, phone_number))

    async def contract_conflicts(
        self, phone_number: str, contract_id: str
    ) -> tuple[str | None, str | None]:
        row = await self._conn.fetchrow(
            "SELECT (SELECT contract_id FROM contracts "
            "        WHERE phone_number = $1 AND state = 'active') AS active_contract_id, "
            "(SELECT phone_number FROM contracts WHERE contract_id = $2) AS holder",
            phone_number,
            contract_id,
        )
        assert row is not None
        return row["active_contract_id"], row["holder"]

    async def numbers_with_contracts(self, phone_numbers: Iterable[str]) -> set[str]:
        rows = await self._conn.fetch(
            "SELECT DISTINCT phone_number FROM contracts WHERE phone_number = ANY($1::text[])",
            list(phone_numbers),
        )
        return {row[0] for row in rows}

    async def contract_holders(self, contract_ids: Iterable[str]) -> dict[str, str]:
        rows = await self._conn.fetch(
            "SELECT contract_id, phone_number FROM contracts WHERE contract_id = ANY($1::text[])",
            list(contract_ids),
        )
        return {row[0]: row[1] for row in rows}

    async def add_contracts(self, contracts: Sequence[Contract]) -> None:
        if not contracts:
            return
        await self._conn.executemany(
            "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
            "VALUES ($1, $2, $3, $4)",
            [(c.contract_id, c.phone_number, c.state.value, c.activated_at) for c in contracts],
        )

    async def terminate(
        self,
        contract_id: str,
        at: datetime,
        reason: TerminationReason,
        recipient_operator_id: str | None = None,
    ) -> None:
        await self._conn.execute(
            "UPDATE contracts SET state = 'terminated', terminated_at = $1, "
            "termination_reason = $2, recipient_operator_id = $3 "
            "WHERE contract_id = $4 AND state = 'active'",
            at,
            reason.value,
            recipient_operator_id,
            contract_id,
        )

    async def add_notices(self, notices: Sequence[TerminationNotice], created_at: datetime) -> None:
        if not notices:
            return
        await self._conn.executemany(
            f"INSERT INTO outbox (created_at, {_NOTICE_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [
                (
                    created_at,
                    n.event_id,
                    n.operator_id,
                    n.messenger_id,
                    n.phone_number,
                    n.identification_code,
                    n.reason.value,
                    n.occurred_at,
                    n.recipient_operator_id,
                    n.trace_id,
                )
                for n in notices
            ],
        )

    # --- agreements -------------------------------------------------------------------------

    async def register_agreement(
        self, messenger_id: str, display_name: str | None, at: datetime
    ) -> Agreement:
        row = await self._conn.fetchrow(
            """
            INSERT INTO agreements (messenger_id, display_name, state, updated_at)
            VALUES ($1, coalesce($2::text, $1), 'active', $3)
            ON CONFLICT (messenger_id) DO UPDATE SET
                display_name = coalesce($2::text, agreements.display_name),
                updated_at = CASE WHEN agreements.state = 'active'
                                  THEN agreements.updated_at ELSE $3 END,
                state = 'active'
            RETURNING *
            """,
            messenger_id,
            display_name,
            at,
        )
        assert row is not None
        return agreement_from_row(row)

    async def add_missing_agreements(self, agreements: Sequence[Agreement]) -> int:
        if not agreements:
            return 0
        status = await self._conn.execute(
            "INSERT INTO agreements (messenger_id, display_name, state, updated_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) "
            "ON CONFLICT (messenger_id) DO NOTHING",
            [a.messenger_id for a in agreements],
            [a.display_name for a in agreements],
            [a.state.value for a in agreements],
            [a.updated_at for a in agreements],
        )
        return _count(status)

    async def suspend_agreement(self, messenger_id: str, at: datetime) -> Agreement | None:
        row = await self._conn.fetchrow(
            """
            UPDATE agreements SET
                updated_at = CASE WHEN state = 'suspended' THEN updated_at ELSE $1 END,
                state = 'suspended'
            WHERE messenger_id = $2
            RETURNING *
            """,
            at,
            messenger_id,
        )
        return agreement_from_row(row) if row else None
