"""The registry's SQLite adapter: schema (MIGRATIONS) and the queries the use cases need.

Times are stored as ISO text in UTC (services.common.timeutil.to_iso), enums as their values.
Writes happen in `RegistryStore.run(fn)`: fn(tx) is the whole transaction, a plain function over
a `RegistryTx` run on the database's writer thread (Database.run: BEGIN IMMEDIATE, fn, COMMIT in
one thread hop), so a use case pays one hop however many statements it makes. VerifySubscriber
is one SELECT and at most three INSERTs, into tables that keep no index a query does not read
(migration 5).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from services.common.db import Database, drive
from services.common.storage import Row
from services.common.timeutil import from_iso, to_iso
from services.operator_registry.domain import (
    Agreement,
    AgreementState,
    AuditQuery,
    AuditRecord,
    Binding,
    Contract,
    ContractState,
    NumberHistory,
    ParkedNotice,
    Subscriber,
    TerminationNotice,
    TerminationReason,
    Verification,
    VerificationResult,
    audit_outcome_names,
)
from services.operator_registry.import_store import SqliteImportStaging
from services.operator_registry.ports import ImportStaging, TxFunction, VerificationSnapshot

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: contracts, agreements, bindings, verification answers, outbox.
    """
    CREATE TABLE contracts (
        id                 INTEGER PRIMARY KEY,  -- creation order: "most recent" contract
        contract_id        TEXT NOT NULL UNIQUE,
        phone_number       TEXT NOT NULL,        -- E.164
        state              TEXT NOT NULL CHECK (state IN ('active', 'terminated')),
        activated_at       TEXT NOT NULL,
        terminated_at      TEXT,
        termination_reason TEXT CHECK (termination_reason IN ('contract_ended', 'ported_out')),
        CHECK ((state = 'active') = (terminated_at IS NULL))
    );
    -- At most one active contract per number.
    CREATE UNIQUE INDEX contracts_one_active ON contracts (phone_number) WHERE state = 'active';
    CREATE INDEX contracts_by_number ON contracts (phone_number, id);

    CREATE TABLE agreements (
        messenger_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
        updated_at   TEXT NOT NULL
    );

    CREATE TABLE bindings (
        contract_id         TEXT NOT NULL REFERENCES contracts (contract_id),
        messenger_id        TEXT NOT NULL REFERENCES agreements (messenger_id),
        identification_code TEXT NOT NULL UNIQUE,
        bound_at            TEXT NOT NULL,
        PRIMARY KEY (contract_id, messenger_id)
    );

    -- One stored answer per (messenger, request id): a repeated request gets it again.
    CREATE TABLE verifications (
        messenger_id        TEXT NOT NULL,
        request_id          TEXT NOT NULL,
        phone_number        TEXT NOT NULL,
        result              TEXT NOT NULL CHECK (result IN ('identified', 'no_subscriber')),
        contract_id         TEXT,
        identification_code TEXT,
        identified_at       TEXT,
        answered_at         TEXT NOT NULL,
        PRIMARY KEY (messenger_id, request_id)
    );

    -- Transactional outbox: ContractTerminated events, published_at set once the notifier acked.
    CREATE TABLE outbox (
        seq                   INTEGER PRIMARY KEY,  -- created order
        event_id              TEXT NOT NULL UNIQUE,
        created_at            TEXT NOT NULL,
        operator_id           TEXT NOT NULL,
        messenger_id          TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        identification_code   TEXT NOT NULL,
        reason                TEXT NOT NULL,
        occurred_at           TEXT NOT NULL,
        recipient_operator_id TEXT NOT NULL DEFAULT '',
        published_at          TEXT
    );
    CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
    """,
    # 2 (ported numbers): where a ported-out number went, the hint in stored verification
    # answers, and when this database's record keeping began (for CheckNumberReassigned).
    """
    ALTER TABLE contracts ADD COLUMN recipient_operator_id TEXT;
    ALTER TABLE verifications ADD COLUMN recipient_operator_id TEXT;
    CREATE TABLE registry_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- created_at in the storage form of services.common.timeutil.to_iso (UTC, microseconds).
    -- A database created before this migration records the time it was upgraded.
    INSERT INTO registry_meta (key, value)
        VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'));
    """,
    # 3 (audit): every verification request, append-only (rows leave only by retention).
    """
    CREATE TABLE audit_log (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        recorded_at         TEXT NOT NULL,
        messenger_id        TEXT NOT NULL,
        masked_phone_number TEXT NOT NULL,
        request_id          TEXT NOT NULL,
        outcome             TEXT NOT NULL
    );
    CREATE INDEX audit_log_time ON audit_log (recorded_at);
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit records are append-only');
    END;
    """,
    # 4 (trace ids, parked notices): the VerifySubscriber idempotency key gets its own name
    # (the trace id is another thing); each notice keeps the trace id of the call that queued
    # it; a notice the notifier refused for good is parked (kept, out of the queue) with the
    # refusal, until an operator retries it.
    """
    ALTER TABLE verifications RENAME COLUMN request_id TO idempotency_key;
    ALTER TABLE audit_log RENAME COLUMN request_id TO idempotency_key;
    ALTER TABLE outbox ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN parked_at TEXT;
    ALTER TABLE outbox ADD COLUMN parked_status TEXT;
    ALTER TABLE outbox ADD COLUMN parked_message TEXT;
    DROP INDEX outbox_pending;
    CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL AND parked_at IS NULL;
    CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL;
    CREATE INDEX verifications_by_time ON verifications (answered_at);
    """,
    # 5 (index maintenance): a VerifySubscriber writes only the b-trees a query reads.
    # - bindings.identification_code is no longer UNIQUE: no query looks a code up, a code is
    #   128 random bits (new_identification_code), and the unique index cost a write at a
    #   random place of a large index for every binding.
    # - verifications_by_time goes: retention deletes in rowid order (prune_verifications).
    # - audit_log ids without AUTOINCREMENT (its sqlite_sequence row was updated on every
    #   record): ids still only grow, as prune_audit never deletes the newest record.
    """
    CREATE TABLE bindings_new (
        contract_id         TEXT NOT NULL REFERENCES contracts (contract_id),
        messenger_id        TEXT NOT NULL REFERENCES agreements (messenger_id),
        identification_code TEXT NOT NULL,
        bound_at            TEXT NOT NULL,
        PRIMARY KEY (contract_id, messenger_id)
    );
    INSERT INTO bindings_new (contract_id, messenger_id, identification_code, bound_at)
        SELECT contract_id, messenger_id, identification_code, bound_at FROM bindings;
    DROP TABLE bindings;
    ALTER TABLE bindings_new RENAME TO bindings;

    DROP INDEX verifications_by_time;

    CREATE TABLE audit_log_new (
        id                  INTEGER PRIMARY KEY,
        recorded_at         TEXT NOT NULL,
        messenger_id        TEXT NOT NULL,
        masked_phone_number TEXT NOT NULL,
        idempotency_key     TEXT NOT NULL,
        outcome             TEXT NOT NULL
    );
    INSERT INTO audit_log_new
        (id, recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome)
        SELECT id, recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome
        FROM audit_log;
    DROP TABLE audit_log;
    ALTER TABLE audit_log_new RENAME TO audit_log;
    CREATE INDEX audit_log_time ON audit_log (recorded_at);
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit records are append-only');
    END;
    """,
]

_AUDIT_INSERT = (
    "INSERT INTO audit_log "
    "(recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _audit_params(record: AuditRecord) -> tuple[str, str, str, str, str]:
    return (
        to_iso(record.recorded_at),
        record.messenger_id,
        record.masked_phone_number,
        record.idempotency_key,
        record.outcome,
    )


_CONTRACT_COLUMNS = (
    "c.contract_id, c.phone_number, c.state, c.activated_at, c.terminated_at, "
    "c.termination_reason, c.recipient_operator_id"
)
_BINDING_COLUMNS = "b.messenger_id AS b_messenger_id, b.identification_code, b.bound_at"
# The number's active contract if any, else its most recent one, with its bindings.
_SUBSCRIBER_SQL = f"""
    SELECT {_CONTRACT_COLUMNS}, {_BINDING_COLUMNS}
    FROM (
        SELECT * FROM contracts WHERE phone_number = ?
        ORDER BY state = 'active' DESC, id DESC LIMIT 1
    ) AS c
    LEFT JOIN bindings AS b ON b.contract_id = c.contract_id
    ORDER BY b.bound_at, b.messenger_id
"""
_NOTICE_COLUMNS = (
    "event_id, operator_id, messenger_id, phone_number, identification_code, reason, "
    "occurred_at, recipient_operator_id, trace_id"
)

# The relay's queue: notices not yet acknowledged by the notifier, and not parked.
_QUEUED = "published_at IS NULL AND parked_at IS NULL"


class SqliteRegistryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def run(self, fn: TxFunction[T]) -> T:
        """fn(tx) as one write transaction on the writer thread, driven to completion there (it
        awaits only the tx, whose methods never suspend): commits when fn returns, rolls back
        when it raises (the exception propagates as it is). See Database.run."""
        return await self._db.run(lambda conn: drive(fn(SqliteRegistryTx(conn))))

    async def run_grouped(
        self, fn: TxFunction[T], *, before_commit: Callable[[], None] | None = None
    ) -> T:
        """Like run(fn), but sharing a transaction with concurrent calls (group commit; see
        Database.run_grouped): fn in a savepoint of its own, before_commit() right before the
        one COMMIT."""
        return await self._db.run_grouped(
            lambda conn: drive(fn(SqliteRegistryTx(conn))), before_commit=before_commit
        )

    async def add_audit(self, record: AuditRecord) -> None:
        await self._db.run(lambda conn: conn.execute(_AUDIT_INSERT, _audit_params(record)))

    async def list_audit(self, query: AuditQuery) -> list[tuple[int, AuditRecord]]:
        """Newest first, with each record's id (the next page's token)."""
        where, params = [], []
        if query.messenger_id:
            where.append("messenger_id = ?")
            params.append(query.messenger_id)
        if query.outcome:
            names = audit_outcome_names(query.outcome)
            where.append(f"outcome IN ({', '.join('?' * len(names))})")
            params.extend(names)
        if query.since is not None:
            where.append("recorded_at >= ?")
            params.append(to_iso(query.since))
        if query.until is not None:
            where.append("recorded_at < ?")
            params.append(to_iso(query.until))
        if query.before_id is not None:
            where.append("id < ?")
            params.append(str(query.before_id))
        sql = (
            "SELECT id, recorded_at, messenger_id, masked_phone_number, idempotency_key, outcome "
            "FROM audit_log"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC LIMIT ?"
        )
        rows = await self._db.fetchall(sql, [*params, query.page_size])
        return [
            (
                int(r["id"]),
                AuditRecord(
                    recorded_at=from_iso(r["recorded_at"]),
                    messenger_id=r["messenger_id"],
                    masked_phone_number=r["masked_phone_number"],
                    idempotency_key=r["idempotency_key"],
                    outcome=r["outcome"],
                ),
            )
            for r in rows
        ]

    async def prune_audit(self, before: datetime) -> int:
        """Retention: delete audit records older than `before`, but never the newest record
        (ids are rowids without AUTOINCREMENT: keeping the highest one keeps them growing, so a
        page token never names a later record)."""
        cutoff = to_iso(before)
        return await self._db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM audit_log WHERE recorded_at < ? "
                    "AND id < (SELECT max(id) FROM audit_log)",
                    (cutoff,),
                ).rowcount
            )
        )

    def import_staging(self) -> ImportStaging:
        """A bulk import's staging area (import_store.py), on a connection of its own."""
        return self._db.guard(SqliteImportStaging(self._db))

    # --- reads (the reader connection: committed data only) ---------------------------------

    async def get_subscriber(self, phone_number: str) -> Subscriber | None:
        rows = await self._db.fetchall(_SUBSCRIBER_SQL, (phone_number,))
        return subscriber_from_rows(rows)

    async def get_agreement(self, messenger_id: str) -> Agreement | None:
        row = await self._db.fetchone(
            "SELECT * FROM agreements WHERE messenger_id = ?", (messenger_id,)
        )
        return agreement_from_row(row) if row else None

    async def list_agreements(self) -> list[Agreement]:
        rows = await self._db.fetchall("SELECT * FROM agreements ORDER BY messenger_id")
        return [agreement_from_row(row) for row in rows]

    async def release_notices(self, event_ids: Sequence[str]) -> int:
        """One process owns a SQLite store: its relay holds no claims to give up."""
        return 0

    async def pending_notices(self, limit: int) -> list[TerminationNotice]:
        rows = await self._db.fetchall(
            f"SELECT {_NOTICE_COLUMNS} FROM outbox WHERE {_QUEUED} ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [notice_from_row(row) for row in rows]

    async def count_pending_notices(self) -> int:
        row = await self._db.fetchone(f"SELECT count(*) FROM outbox WHERE {_QUEUED}")
        return int(row[0]) if row else 0

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """(unpublished notices, when the oldest of them was queued)."""
        row = await self._db.fetchone(
            f"SELECT count(*), min(created_at) FROM outbox WHERE {_QUEUED}"
        )
        if row is None or not row[0]:
            return 0, None
        return int(row[0]), from_iso(row[1])

    async def count_parked_notices(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        return int(row[0]) if row else 0

    async def list_parked_notices(self, after_seq: int, limit: int) -> list[ParkedNotice]:
        """Parked notices after outbox position after_seq, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT seq, {_NOTICE_COLUMNS}, parked_at, parked_status, parked_message "
            "FROM outbox WHERE parked_at IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [
            ParkedNotice(
                seq=int(row["seq"]),
                notice=notice_from_row(row),
                parked_at=_time(row["parked_at"]),
                status=row["parked_status"],
                message=row["parked_message"],
            )
            for row in rows
        ]

    async def count_bindings(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM bindings")
        return int(row[0]) if row else 0

    async def count_verifications(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM verifications")
        return int(row[0]) if row else 0

    async def number_history(self, phone_number: str) -> NumberHistory:
        """When a contract of the number last began and last ended (None: never)."""
        row = await self._db.fetchone(
            "SELECT max(activated_at) AS activated, max(terminated_at) AS terminated "
            "FROM contracts WHERE phone_number = ?",
            (phone_number,),
        )
        return NumberHistory(
            last_activated_at=_maybe_time(row["activated"] if row else None),
            last_terminated_at=_maybe_time(row["terminated"] if row else None),
        )

    async def records_begin_at(self) -> datetime:
        """The earlier of the database's creation time and the earliest contract activation."""
        row = await self._db.fetchone(
            "SELECT (SELECT value FROM registry_meta WHERE key = 'created_at') AS created_at, "
            "(SELECT min(activated_at) FROM contracts) AS first_activation"
        )
        assert row is not None and row["created_at"] is not None  # written by migration 2
        created_at = from_iso(row["created_at"])
        first = _maybe_time(row["first_activation"])
        return created_at if first is None else min(created_at, first)

    # --- single-statement writes ------------------------------------------------------------

    async def mark_published(self, event_ids: Sequence[str], at: datetime) -> int:
        if not event_ids:
            return 0
        marks = ",".join("?" * len(event_ids))
        sql = (
            "UPDATE outbox SET published_at = ? "
            f"WHERE published_at IS NULL AND event_id IN ({marks})"
        )
        params = (to_iso(at), *event_ids)
        return await self._db.run(lambda conn: conn.execute(sql, params).rowcount)

    async def park_notice(self, event_id: str, status: str, message: str, at: datetime) -> int:
        """Take an unpublished notice out of the relay's queue, with the refusal."""
        sql = (
            "UPDATE outbox SET parked_at = ?, parked_status = ?, parked_message = ? "
            "WHERE event_id = ? AND published_at IS NULL"
        )
        params = (to_iso(at), status, message, event_id)
        return await self._db.run(lambda conn: conn.execute(sql, params).rowcount)

    async def requeue_parked(self, event_ids: Sequence[str]) -> int:
        """Put parked notices back in the queue: those named, or all of them when none is."""
        where = "parked_at IS NOT NULL"
        if event_ids:
            where += f" AND event_id IN ({','.join('?' * len(event_ids))})"
        sql = (
            "UPDATE outbox SET parked_at = NULL, parked_status = NULL, parked_message = NULL "
            f"WHERE {where}"
        )
        params = tuple(event_ids)
        return await self._db.run(lambda conn: conn.execute(sql, params).rowcount)

    async def prune_verifications(self, before: datetime) -> int:
        """Retention: delete stored VerifySubscriber answers given before `before` (a replay
        of their idempotency key is then answered afresh).

        In rowid (insertion) order, without an index on answered_at: every answer stored
        before the first one given at or after `before` goes. An answer is never deleted
        early; one given out of order (a clock stepped back, a stale answer replaced in its
        row) only holds back those after it until it is old itself."""
        cutoff = to_iso(before)
        return await self._db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM verifications WHERE rowid < coalesce("
                    "(SELECT rowid FROM verifications WHERE answered_at >= ? "
                    "ORDER BY rowid LIMIT 1), "
                    "(SELECT max(rowid) + 1 FROM verifications))",
                    (cutoff,),
                ).rowcount
            )
        )


class SqliteRegistryTx:
    """Statements inside one write transaction, on the writer thread (see
    SqliteRegistryStore.run): `async def` for the port, but each does its work at once over
    the transaction's sqlite3 connection and never suspends."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def add_audit(self, record: AuditRecord) -> None:
        self._conn.execute(_AUDIT_INSERT, _audit_params(record))

    def _rows(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    # --- verification -----------------------------------------------------------------------

    async def verification_snapshot(
        self, messenger_id: str, idempotency_key: str, phone_number: str
    ) -> VerificationSnapshot:
        rows = self._rows(
            """
            SELECT
                (SELECT state FROM agreements WHERE messenger_id = :m) AS agreement_state,
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
                     FROM contracts AS last WHERE last.phone_number = :p
                     ORDER BY last.id DESC LIMIT 1)
                END AS ported_to
            FROM (SELECT 1) AS one
            LEFT JOIN verifications AS v ON v.messenger_id = :m AND v.idempotency_key = :r
            LEFT JOIN contracts AS c ON c.phone_number = :p AND c.state = 'active'
            LEFT JOIN bindings AS b ON b.contract_id = c.contract_id AND b.messenger_id = :m
            """,
            {"m": messenger_id, "r": idempotency_key, "p": phone_number},
        )
        return snapshot_from_row(rows[0], messenger_id, idempotency_key)

    async def add_binding(self, binding: Binding) -> None:
        self._conn.execute(
            "INSERT INTO bindings (contract_id, messenger_id, identification_code, bound_at) "
            "VALUES (?, ?, ?, ?)",
            (
                binding.contract_id,
                binding.messenger_id,
                binding.identification_code,
                to_iso(binding.bound_at),
            ),
        )

    async def add_verification(self, answer: Verification) -> None:
        self._conn.execute(
            "INSERT INTO verifications (messenger_id, idempotency_key, phone_number, result, "
            "contract_id, identification_code, identified_at, answered_at, "
            "recipient_operator_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            # a stale stored answer (see Verification.replayable) is replaced by the new one
            "ON CONFLICT (messenger_id, idempotency_key) DO UPDATE SET result = excluded.result, "
            "contract_id = excluded.contract_id, "
            "identification_code = excluded.identification_code, "
            "identified_at = excluded.identified_at, answered_at = excluded.answered_at, "
            "recipient_operator_id = excluded.recipient_operator_id",
            (
                answer.messenger_id,
                answer.idempotency_key,
                answer.phone_number,
                answer.result.value,
                answer.contract_id,
                answer.identification_code,
                to_iso(answer.identified_at) if answer.identified_at else None,
                to_iso(answer.answered_at),
                answer.recipient_operator_id,
            ),
        )

    # --- contracts --------------------------------------------------------------------------

    async def subscriber(self, phone_number: str) -> Subscriber | None:
        """The number's active (else most recent) contract with its bindings."""
        return subscriber_from_rows(self._rows(_SUBSCRIBER_SQL, (phone_number,)))

    async def contract_conflicts(
        self, phone_number: str, contract_id: str
    ) -> tuple[str | None, str | None]:
        """(the number's active contract id, the number holding contract_id), either None."""
        rows = self._rows(
            """
            SELECT
                (SELECT contract_id FROM contracts
                 WHERE phone_number = ? AND state = 'active') AS active_contract_id,
                (SELECT phone_number FROM contracts WHERE contract_id = ?) AS holder
            """,
            (phone_number, contract_id),
        )
        return rows[0]["active_contract_id"], rows[0]["holder"]

    async def numbers_with_contracts(self, phone_numbers: Iterable[str]) -> set[str]:
        numbers = list(phone_numbers)
        if not numbers:
            return set()
        marks = ",".join("?" * len(numbers))
        rows = self._rows(
            f"SELECT DISTINCT phone_number FROM contracts WHERE phone_number IN ({marks})",
            numbers,
        )
        return {row[0] for row in rows}

    async def contract_holders(self, contract_ids: Iterable[str]) -> dict[str, str]:
        """contract_id -> phone number, for those of contract_ids that exist."""
        ids = list(contract_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._rows(
            f"SELECT contract_id, phone_number FROM contracts WHERE contract_id IN ({marks})",
            ids,
        )
        return {row[0]: row[1] for row in rows}

    async def add_contracts(self, contracts: Sequence[Contract]) -> None:
        self._conn.executemany(
            "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
            "VALUES (?, ?, ?, ?)",
            [
                (c.contract_id, c.phone_number, c.state.value, to_iso(c.activated_at))
                for c in contracts
            ],
        )

    async def terminate(
        self,
        contract_id: str,
        at: datetime,
        reason: TerminationReason,
        recipient_operator_id: str | None = None,
    ) -> None:
        self._conn.execute(
            "UPDATE contracts SET state = 'terminated', terminated_at = ?, "
            "termination_reason = ?, recipient_operator_id = ? "
            "WHERE contract_id = ? AND state = 'active'",
            (to_iso(at), reason.value, recipient_operator_id, contract_id),
        )

    async def add_notices(self, notices: Sequence[TerminationNotice], created_at: datetime) -> None:
        if not notices:
            return
        self._conn.executemany(
            f"INSERT INTO outbox (created_at, {_NOTICE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    to_iso(created_at),
                    n.event_id,
                    n.operator_id,
                    n.messenger_id,
                    n.phone_number,
                    n.identification_code,
                    n.reason.value,
                    to_iso(n.occurred_at),
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
        """Create the agreement active, or reactivate it; display_name None keeps the old name."""
        rows = self._rows(
            """
            INSERT INTO agreements (messenger_id, display_name, state, updated_at)
            VALUES (:m, coalesce(:name, :m), 'active', :at)
            ON CONFLICT (messenger_id) DO UPDATE SET
                display_name = coalesce(:name, agreements.display_name),
                updated_at = CASE WHEN agreements.state = 'active'
                                  THEN agreements.updated_at ELSE :at END,
                state = 'active'
            RETURNING *
            """,
            {"m": messenger_id, "name": display_name, "at": to_iso(at)},
        )
        return agreement_from_row(rows[0])

    async def add_missing_agreements(self, agreements: Sequence[Agreement]) -> int:
        before = self._conn.total_changes
        self._conn.executemany(
            "INSERT INTO agreements (messenger_id, display_name, state, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (messenger_id) DO NOTHING",
            [
                (a.messenger_id, a.display_name, a.state.value, to_iso(a.updated_at))
                for a in agreements
            ],
        )
        return self._conn.total_changes - before

    async def suspend_agreement(self, messenger_id: str, at: datetime) -> Agreement | None:
        rows = self._rows(
            """
            UPDATE agreements SET
                updated_at = CASE WHEN state = 'suspended' THEN updated_at ELSE ? END,
                state = 'suspended'
            WHERE messenger_id = ?
            RETURNING *
            """,
            (to_iso(at), messenger_id),
        )
        return agreement_from_row(rows[0]) if rows else None


# --- row mapping (both engines: times as ISO text from SQLite, datetimes from PostgreSQL) ----


def _time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else from_iso(value)


def _maybe_time(value: str | datetime | None) -> datetime | None:
    return _time(value) if value else None


def snapshot_from_row(row: Row, messenger_id: str, idempotency_key: str) -> VerificationSnapshot:
    previous = None
    if row["v_result"] is not None:
        previous = Verification(
            messenger_id=messenger_id,
            idempotency_key=idempotency_key,
            phone_number=row["v_phone_number"],
            result=VerificationResult(row["v_result"]),
            answered_at=_time(row["v_answered_at"]),
            contract_id=row["v_contract_id"],
            identification_code=row["v_code"],
            identified_at=_maybe_time(row["v_identified_at"]),
            recipient_operator_id=row["v_recipient"],
        )
    binding = None
    if row["b_code"] is not None:
        binding = Binding(
            contract_id=row["c_contract_id"],
            messenger_id=messenger_id,
            identification_code=row["b_code"],
            bound_at=_time(row["b_bound_at"]),
        )
    state = row["agreement_state"]
    return VerificationSnapshot(
        agreement_state=AgreementState(state) if state else None,
        previous=previous,
        active_contract_id=row["c_contract_id"],
        binding=binding,
        ported_to=row["ported_to"],
    )


def contract_from_row(row: Row) -> Contract:
    reason = row["termination_reason"]
    return Contract(
        contract_id=row["contract_id"],
        phone_number=row["phone_number"],
        state=ContractState(row["state"]),
        activated_at=_time(row["activated_at"]),
        terminated_at=_maybe_time(row["terminated_at"]),
        termination_reason=TerminationReason(reason) if reason else None,
        recipient_operator_id=row["recipient_operator_id"],
    )


def subscriber_from_rows(rows: Sequence[Row]) -> Subscriber | None:
    if not rows:
        return None
    contract = contract_from_row(rows[0])
    bindings = tuple(
        Binding(
            contract_id=contract.contract_id,
            messenger_id=row["b_messenger_id"],
            identification_code=row["identification_code"],
            bound_at=_time(row["bound_at"]),
        )
        for row in rows
        if row["b_messenger_id"] is not None
    )
    return Subscriber(contract, bindings)


def agreement_from_row(row: Row) -> Agreement:
    return Agreement(
        messenger_id=row["messenger_id"],
        display_name=row["display_name"],
        state=AgreementState(row["state"]),
        updated_at=_time(row["updated_at"]),
    )


def notice_from_row(row: Row) -> TerminationNotice:
    return TerminationNotice(
        event_id=row["event_id"],
        operator_id=row["operator_id"],
        messenger_id=row["messenger_id"],
        phone_number=row["phone_number"],
        identification_code=row["identification_code"],
        reason=TerminationReason(row["reason"]),
        occurred_at=_time(row["occurred_at"]),
        recipient_operator_id=row["recipient_operator_id"],
        trace_id=row["trace_id"],
    )
