"""The gateway's PostgreSQL schema (SQLite's in schema.py, the same tables), one migration each,
applied in order by services.common.pg."""

from __future__ import annotations

from typing import Final

from services.messenger_gateway.adapters.policy_store_pg import PG_POLICY_MIGRATION

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
    # 4: VERIFYING is not logged (SQLite's migration 8).
    """
    DROP TRIGGER identifications_log_state ON identifications;
    CREATE TRIGGER identifications_log_state AFTER UPDATE OF state ON identifications
        FOR EACH ROW WHEN (NEW.state <> OLD.state AND NEW.state <> 'VERIFYING')
        EXECUTE FUNCTION identifications_log();
    """,
    # 5: an identification write versions its own entries as its last statement (store_pg.py,
    # own_policy_changes), so the deferred trigger versions only the entries still without one;
    # the unversioned entries (this transaction's) are found by a partial index.
    """
    CREATE OR REPLACE FUNCTION policy_changes_take_version() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM policy_changes WHERE id = NEW.id AND version IS NULL) THEN
            WITH head AS (UPDATE policy_log_head SET version = version + 1 RETURNING version)
            UPDATE policy_changes SET version = head.version FROM head
            WHERE policy_changes.id = NEW.id;
        END IF;
        RETURN NULL;
    END $$;
    CREATE INDEX policy_changes_unversioned ON policy_changes (id) WHERE version IS NULL;
    """,
    # 6: fencing tokens (SQLite's migration 9): a lease's token, raised by every take, checked
    # by the writes made under it; a verification's lease_token, raised by every claim.
    """
    ALTER TABLE leases ADD COLUMN token BIGINT NOT NULL DEFAULT 1;
    ALTER TABLE identifications ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
    """,
]
