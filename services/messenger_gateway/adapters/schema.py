"""The gateway's SQLite schema: identifications (history kept, the latest per user is current),
the notice inbox and cursor, the ported-numbers table, leases, and the delivery policy's tables
(adapters/policy_store.py), one migration each, applied in order by services.common.db."""

from __future__ import annotations

from services.messenger_gateway.adapters.policy_store import NOW_SQL, POLICY_MIGRATION

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
    # 6 (delivery policy, adapters/policy_store.py): preferences, restriction
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
    # 8 (the change log carries what its readers use): VERIFYING is not logged; for the delivery
    # policy it is what AWAITING_CODE was (known, not identified), and how the verification
    # ended is logged when it ends.
    f"""
    DROP TRIGGER identifications_log_state;
    CREATE TRIGGER identifications_log_state AFTER UPDATE OF state ON identifications
    WHEN NEW.state <> OLD.state AND NEW.state <> 'VERIFYING'
    BEGIN
        INSERT INTO policy_changes (changed_at, kind, user_id, phone_number, value)
        SELECT {NOW_SQL}, 'IDENTIFICATION', user_id, phone_number, state
        FROM identifications WHERE user_id = NEW.user_id ORDER BY seq DESC LIMIT 1;
    END;
    """,
    # 9 (fencing tokens, services/common/lease.py): each lease has a token that every take by
    # another holder (or after it was free or expired) raises and renewals keep; a write made
    # under a lease checks it in its own transaction. A released lease keeps its row (its expiry
    # set to the epoch), so that tokens only grow.
    """
    ALTER TABLE leases ADD COLUMN token INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE identifications ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
    """,
]
