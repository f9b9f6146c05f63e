"""The delivery policy's PostgreSQL store (the PolicyStore port, policy/ports.py), for several
gateway replicas on one database.

The change log's versions are what readers follow (`changes_after(v)`, WatchPolicyChanges, a
CheckDelivery's min_version, every replica's index), so they must be gap-free AND in commit
order: a reader that has seen 8 must never find 7 appear later. A sequence gives neither (two
transactions take 7 and 8 and commit 8 first). So a version is taken from one counter row,
`policy_log_head`, by `UPDATE ... SET version = version + 1`, as the LAST thing a transaction
does: the row lock is held until the commit, so the next writer gets its version only after this
one has committed (or rolled back, giving its number back), and the row lock is the only lock a
transaction waits for while holding it (no deadlock).
- The preference and order writes take their version in their last statement (they return it).
- Identification changes are logged by triggers on `identifications`, as on SQLite, so every
  path (RPCs, verification tasks, notices, any replica) logs in its own transaction without
  knowing about the policy. The triggers insert the entry without a version (its content read
  at the change, as on SQLite); a deferred constraint trigger gives it its version at the
  commit, after every other lock the transaction takes.
Every transaction that logs NOTIFYs `idmesh_gateway_policy` (delivered at the commit); each
replica LISTENs and catches its index up at once, the poll being the safety net.

The restriction audit is append-only as on SQLite: triggers refuse UPDATE, DELETE and TRUNCATE.
(The triggers are PL/pgSQL: the one place this store's SQL is PostgreSQL's own.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

from asyncpg import Connection

from services.common.pg import PgDatabase
from services.messenger_gateway.adapters.policy_store import (
    audit_from_row,
    built_index,
    change_from_row,
    consent_from_row,
    masked_target,
    order_change,
    order_from_row,
)
from services.messenger_gateway.policy.index import PolicyIndex
from services.messenger_gateway.policy.model import (
    ORDER_LIMIT,
    AutomatedConsent,
    ChangeKind,
    Consent,
    OrderAuditRecord,
    OrderConflict,
    OrderEvent,
    OrderNotFound,
    OrderSla,
    OrderState,
    PolicyChange,
    Preferences,
    RestrictionOrder,
    SenderRule,
    SenderRuleEntry,
    Snapshot,
    UnacceptedPolicy,
    UserUnknown,
    order_transition,
)
from services.messenger_gateway.policy.ports import ChangeSignal

T = TypeVar("T")

CHANNEL: Final = "idmesh_gateway_policy"

PG_POLICY_MIGRATION: Final = f"""
    CREATE TABLE policy_log_head (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version  BIGINT NOT NULL CHECK (version >= 0)  -- the last version given
    );
    INSERT INTO policy_log_head (version) VALUES (0);

    CREATE TABLE policy_changes (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        version      BIGINT UNIQUE,  -- gap-free, in commit order; NULL only before the commit
        changed_at   TIMESTAMPTZ NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('IDENTIFICATION', 'SENDER_RULE',
                         'UNACCEPTED_POLICY', 'AUTOMATED_CONSENT', 'RESTRICTION_ORDER')),
        user_id      TEXT NOT NULL DEFAULT '',
        sender_id    TEXT NOT NULL DEFAULT '',
        phone_number TEXT NOT NULL DEFAULT '',
        value        TEXT NOT NULL,
        order_id     TEXT NOT NULL DEFAULT '',
        scope        TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX policy_changes_by_time ON policy_changes (changed_at);

    -- An entry logged without a version gets the next one at the commit (deferred).
    CREATE FUNCTION policy_changes_take_version() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        WITH head AS (UPDATE policy_log_head SET version = version + 1 RETURNING version)
        UPDATE policy_changes SET version = head.version FROM head
        WHERE policy_changes.id = NEW.id;
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER policy_changes_version AFTER INSERT ON policy_changes
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.version IS NULL)
        EXECUTE FUNCTION policy_changes_take_version();

    -- Every replica's index is woken when the transaction commits.
    CREATE FUNCTION policy_changes_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        PERFORM pg_notify('{CHANNEL}', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER policy_changes_notify AFTER INSERT ON policy_changes
        FOR EACH STATEMENT EXECUTE FUNCTION policy_changes_notify();

    CREATE TABLE policy_sender_rules (
        recipient_id TEXT NOT NULL,
        sender_id    TEXT NOT NULL,
        rule         TEXT NOT NULL CHECK (rule IN ('ACCEPTED', 'REFUSED')),
        updated_at   TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (recipient_id, sender_id)
    );

    CREATE TABLE policy_unaccepted (
        user_id    TEXT PRIMARY KEY,
        policy     TEXT NOT NULL CHECK (policy IN ('ALLOW', 'REFUSE')),
        updated_at TIMESTAMPTZ NOT NULL
    );

    CREATE TABLE policy_automated_consents (
        recipient_id TEXT NOT NULL,
        sender_id    TEXT NOT NULL,
        granted      BOOLEAN NOT NULL,
        granted_at   TIMESTAMPTZ,
        revoked_at   TIMESTAMPTZ,
        updated_at   TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (recipient_id, sender_id)
    );

    CREATE TABLE restriction_orders (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        order_id     TEXT NOT NULL UNIQUE,
        target       TEXT NOT NULL CHECK (target IN ('USER', 'PHONE')),
        target_value TEXT NOT NULL,
        scope        TEXT NOT NULL CHECK (scope IN ('ALL_MESSAGES', 'AUTOMATED')),
        state        TEXT NOT NULL CHECK (state IN ('RECEIVED', 'IN_FORCE', 'LIFTED')),
        received_at  TIMESTAMPTZ NOT NULL,
        recorded_at  TIMESTAMPTZ NOT NULL,
        in_force_at  TIMESTAMPTZ,
        lifted_at    TIMESTAMPTZ,
        lift_reason  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX restriction_orders_by_state ON restriction_orders (state, received_at);

    CREATE TABLE restriction_audit (
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at            TIMESTAMPTZ NOT NULL,
        order_id      TEXT NOT NULL,
        action        TEXT NOT NULL CHECK (action IN ('RECORDED', 'ENFORCED', 'LIFTED')),
        actor         TEXT NOT NULL,
        target        TEXT NOT NULL,
        masked_target TEXT NOT NULL,
        scope         TEXT NOT NULL,
        state         TEXT NOT NULL,
        note          TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX restriction_audit_by_order ON restriction_audit (order_id, seq);
    CREATE FUNCTION restriction_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'restriction audit records are append-only';
    END $$;
    CREATE TRIGGER restriction_audit_no_change BEFORE UPDATE OR DELETE ON restriction_audit
        FOR EACH ROW EXECUTE FUNCTION restriction_audit_append_only();
    CREATE TRIGGER restriction_audit_no_truncate BEFORE TRUNCATE ON restriction_audit
        FOR EACH STATEMENT EXECUTE FUNCTION restriction_audit_append_only();

    -- A user's current identification (the latest) into the log, whatever path changed it.
    CREATE FUNCTION identifications_log() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO policy_changes (changed_at, kind, user_id, phone_number, value)
        SELECT clock_timestamp(), 'IDENTIFICATION', user_id, phone_number, state
        FROM identifications WHERE user_id = NEW.user_id ORDER BY seq DESC LIMIT 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER identifications_log_insert AFTER INSERT ON identifications
        FOR EACH ROW EXECUTE FUNCTION identifications_log();
    CREATE TRIGGER identifications_log_state AFTER UPDATE OF state ON identifications
        FOR EACH ROW WHEN (NEW.state <> OLD.state) EXECUTE FUNCTION identifications_log();
"""

CHANGE_COLUMNS: Final = (
    "version, changed_at, kind, user_id, sender_id, phone_number, value, order_id, scope"
)
# The entry with the next version, in the transaction's last statement (see the docstring).
_LOG: Final = """
    WITH head AS (UPDATE policy_log_head SET version = version + 1 RETURNING version)
    INSERT INTO policy_changes (version, changed_at, kind, user_id, sender_id, phone_number,
                                value, order_id, scope)
    SELECT head.version, $1, $2, $3, $4, $5, $6, $7, $8 FROM head
    RETURNING version
"""
_KNOWN: Final = "SELECT 1 FROM identifications WHERE user_id = $1 LIMIT 1"


async def _log(
    conn: Connection,
    now: datetime,
    kind: ChangeKind,
    *,
    value: str,
    user_id: str = "",
    sender_id: str = "",
    phone_number: str = "",
    order_id: str = "",
    scope: str = "",
) -> int:
    version = await conn.fetchval(
        _LOG, now, str(kind), user_id, sender_id, phone_number, value, order_id, scope
    )
    return int(version)


async def _require_known(conn: Connection, user_id: str) -> None:
    if await conn.fetchval(_KNOWN, user_id) is None:
        raise UserUnknown.of(user_id)


async def _audit(
    conn: Connection,
    now: datetime,
    order: RestrictionOrder,
    action: str,
    actor: str,
    note: str = "",
) -> None:
    await conn.execute(
        "INSERT INTO restriction_audit (at, order_id, action, actor, target, masked_target, "
        "scope, state, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        now,
        order.order_id,
        action,
        actor,
        str(order.target),
        masked_target(order),
        str(order.scope),
        str(order.state),
        note,
    )


async def _log_order(conn: Connection, now: datetime, order: RestrictionOrder) -> int:
    return await _log(conn, now, ChangeKind.RESTRICTION_ORDER, **order_change(order))


class PgPolicyStore:
    """The PolicyStore port (policy/ports.py) on PostgreSQL."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    @asynccontextmanager
    async def changes_signalled(self, wake: ChangeSignal) -> AsyncIterator[None]:
        async with self._db.listening(CHANNEL, lambda _payloads: wake()):
            yield

    # --- preferences -------------------------------------------------------------------------

    async def set_sender_rule(
        self, recipient: str, sender: str, rule: SenderRule, now: datetime
    ) -> int:
        async with self._db.transaction() as conn:
            await _require_known(conn, recipient)
            if rule is SenderRule.NONE:
                await conn.execute(
                    "DELETE FROM policy_sender_rules WHERE recipient_id = $1 AND sender_id = $2",
                    recipient,
                    sender,
                )
            else:
                await conn.execute(
                    "INSERT INTO policy_sender_rules (recipient_id, sender_id, rule, updated_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (recipient_id, sender_id) DO UPDATE SET "
                    "rule = excluded.rule, updated_at = excluded.updated_at",
                    recipient,
                    sender,
                    str(rule),
                    now,
                )
            return await _log(
                conn,
                now,
                ChangeKind.SENDER_RULE,
                value=str(rule),
                user_id=recipient,
                sender_id=sender,
            )

    async def set_unaccepted_policy(
        self, user_id: str, policy: UnacceptedPolicy, now: datetime
    ) -> int:
        async with self._db.transaction() as conn:
            await _require_known(conn, user_id)
            if policy is UnacceptedPolicy.DEFAULT:
                await conn.execute("DELETE FROM policy_unaccepted WHERE user_id = $1", user_id)
            else:
                await conn.execute(
                    "INSERT INTO policy_unaccepted (user_id, policy, updated_at) "
                    "VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET "
                    "policy = excluded.policy, updated_at = excluded.updated_at",
                    user_id,
                    str(policy),
                    now,
                )
            return await _log(
                conn, now, ChangeKind.UNACCEPTED_POLICY, value=str(policy), user_id=user_id
            )

    async def set_automated_consent(
        self, recipient: str, sender: str, consent: Consent, now: datetime
    ) -> tuple[AutomatedConsent, int]:
        granted = consent is Consent.GRANTED
        async with self._db.transaction() as conn:
            await _require_known(conn, recipient)
            row = await conn.fetchrow(
                """INSERT INTO policy_automated_consents AS c
                       (recipient_id, sender_id, granted, granted_at, revoked_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (recipient_id, sender_id) DO UPDATE SET
                       granted = excluded.granted,
                       granted_at = COALESCE(excluded.granted_at, c.granted_at),
                       revoked_at = COALESCE(excluded.revoked_at, c.revoked_at),
                       updated_at = excluded.updated_at
                   RETURNING *""",
                recipient,
                sender,
                granted,
                now if granted else None,
                None if granted else now,
                now,
            )
            version = await _log(
                conn,
                now,
                ChangeKind.AUTOMATED_CONSENT,
                value=str(consent),
                user_id=recipient,
                sender_id=sender,
            )
        return consent_from_row(row), version

    async def preferences(self, user_id: str, default: UnacceptedPolicy) -> Preferences | None:
        # one snapshot: the user, their policy, rules and consents as of one moment
        async with self._db.transaction(isolation="repeatable_read") as conn:
            if await conn.fetchval(_KNOWN, user_id) is None:
                return None
            stored = await conn.fetchval(
                "SELECT policy FROM policy_unaccepted WHERE user_id = $1", user_id
            )
            rules = await conn.fetch(
                "SELECT sender_id, rule, updated_at FROM policy_sender_rules "
                "WHERE recipient_id = $1 ORDER BY sender_id",
                user_id,
            )
            consents = await conn.fetch(
                "SELECT * FROM policy_automated_consents WHERE recipient_id = $1 "
                "ORDER BY sender_id",
                user_id,
            )
        policy = UnacceptedPolicy(stored) if stored else UnacceptedPolicy.DEFAULT
        return Preferences(
            user_id=user_id,
            unaccepted_policy=policy,
            effective_unaccepted_policy=default if policy is UnacceptedPolicy.DEFAULT else policy,
            sender_rules=tuple(
                SenderRuleEntry(r["sender_id"], SenderRule(r["rule"]), r["updated_at"])
                for r in rules
            ),
            automated_consents=tuple(consent_from_row(r) for r in consents),
        )

    # --- restriction orders ----------------------------------------------------------------

    async def record_order(
        self, order: RestrictionOrder, *, actor: str, now: datetime
    ) -> tuple[RestrictionOrder, bool]:
        async with self._db.transaction() as conn:
            # Two replicas recording one order: the second waits on the first's row, then
            # finds it (read committed) and answers as for a repeat.
            inserted = await conn.fetchval(
                """INSERT INTO restriction_orders (order_id, target, target_value, scope, state,
                       received_at, recorded_at, in_force_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (order_id) DO NOTHING RETURNING 1""",
                order.order_id,
                str(order.target),
                order.target_value,
                str(order.scope),
                str(order.state),
                order.received_at,
                order.recorded_at,
                order.in_force_at,
            )
            if inserted is None:
                stored = order_from_row(
                    await conn.fetchrow(
                        "SELECT * FROM restriction_orders WHERE order_id = $1", order.order_id
                    )
                )
                if stored.same_order(order):
                    return stored, False
                raise OrderConflict(
                    f"restriction order {order.order_id!r} was recorded with another target, "
                    "scope or receipt time: give a new order_id, or lift that order first"
                )
            await _audit(conn, now, order, "RECORDED", actor)
            await _log_order(conn, now, order)
            return order, True

    async def change_order(
        self, order_id: str, event: OrderEvent, *, actor: str, now: datetime, note: str = ""
    ) -> RestrictionOrder:
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM restriction_orders WHERE order_id = $1 FOR UPDATE", order_id
            )
            if row is None:
                raise OrderNotFound(
                    f"no restriction order {order_id!r}: list them with ListRestrictionOrders"
                )
            order = order_from_row(row)
            new = order_transition(order, event)
            if event is OrderEvent.ENFORCE:
                changed_row = await conn.fetchrow(
                    "UPDATE restriction_orders SET state = $1, in_force_at = $2 "
                    "WHERE order_id = $3 RETURNING *",
                    str(new),
                    now,
                    order_id,
                )
                action = "ENFORCED"
            else:
                changed_row = await conn.fetchrow(
                    "UPDATE restriction_orders SET state = $1, lifted_at = $2, lift_reason = $3 "
                    "WHERE order_id = $4 RETURNING *",
                    str(new),
                    now,
                    note,
                    order_id,
                )
                action = "LIFTED"
            changed = order_from_row(changed_row)
            await _audit(conn, now, changed, action, actor, note)
            await _log_order(conn, now, changed)
            return changed

    async def orders(self, state: OrderState | None, limit: int) -> list[RestrictionOrder]:
        if state is None:
            rows = await self._db.fetch(
                "SELECT * FROM restriction_orders ORDER BY seq DESC LIMIT $1", limit
            )
        else:
            rows = await self._db.fetch(
                "SELECT * FROM restriction_orders WHERE state = $1 ORDER BY seq DESC LIMIT $2",
                str(state),
                limit,
            )
        return [order_from_row(r) for r in rows]

    async def order_audit(self, order_id: str | None, limit: int) -> list[OrderAuditRecord]:
        if order_id:
            rows = await self._db.fetch(
                "SELECT * FROM restriction_audit WHERE order_id = $1 ORDER BY seq LIMIT $2",
                order_id,
                limit,
            )
        else:
            rows = await self._db.fetch(
                "SELECT * FROM restriction_audit ORDER BY seq LIMIT $1", limit
            )
        return [audit_from_row(r) for r in rows]

    async def order_sla(self) -> OrderSla:
        row = await self._db.fetchrow(
            """SELECT
                 count(*) FILTER (WHERE state = 'RECEIVED'),
                 min(received_at) FILTER (WHERE state = 'RECEIVED'),
                 count(*) FILTER (WHERE state = 'IN_FORCE'),
                 count(*) FILTER (WHERE in_force_at - received_at > $1)
               FROM restriction_orders""",
            ORDER_LIMIT,
        )
        assert row is not None
        return OrderSla(
            received=int(row[0]), oldest_received_at=row[1], in_force=int(row[2]), late=int(row[3])
        )

    # --- the change log ----------------------------------------------------------------------

    async def changes_after(self, version: int, limit: int) -> list[PolicyChange]:
        rows = await self._db.fetch(
            f"SELECT {CHANGE_COLUMNS} FROM policy_changes WHERE version > $1 "
            "ORDER BY version LIMIT $2",
            version,
            limit,
        )
        return [change_from_row(r) for r in rows]

    async def log_bounds(self) -> tuple[int, int]:
        row = await self._db.fetchrow("SELECT min(version), max(version) FROM policy_changes")
        if row is None or row[1] is None:
            return 0, 0
        return int(row[0]), int(row[1])

    async def prune_changes(self, before: datetime) -> int:
        status = await self._db.execute(
            "DELETE FROM policy_changes WHERE changed_at < $1 "
            "AND version < (SELECT version FROM policy_log_head)",
            before,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def load_index(self, *, refuse_unaccepted_by_default: bool) -> PolicyIndex:
        """A new index built from the whole store at one version (read_snapshot)."""
        return await self.read_snapshot(partial(built_index, refuse_unaccepted_by_default))

    async def read_snapshot(self, build: Callable[[Snapshot], T]) -> T:
        """build(the store at one version): one repeatable-read transaction (every SELECT sees
        the same commits, and the head version is theirs); build runs off the event loop, so
        decisions go on while a large snapshot is read into an index."""
        async with self._db.transaction(isolation="repeatable_read") as conn:
            snapshot = Snapshot(
                version=int(await conn.fetchval("SELECT version FROM policy_log_head")),
                # in seq order: a user's latest identification (the current one) comes last
                users=await _rows(
                    conn, "SELECT user_id, phone_number, state FROM identifications ORDER BY seq"
                ),
                sender_rules=await _rows(
                    conn, "SELECT recipient_id, sender_id, rule FROM policy_sender_rules"
                ),
                unaccepted=await _rows(conn, "SELECT user_id, policy FROM policy_unaccepted"),
                consents=await _rows(
                    conn,
                    "SELECT recipient_id, sender_id FROM policy_automated_consents WHERE granted",
                ),
                orders=await _rows(
                    conn,
                    "SELECT order_id, target, target_value, scope FROM restriction_orders "
                    "WHERE state = 'IN_FORCE'",
                ),
            )
        return await asyncio.to_thread(build, snapshot)


async def _rows(conn: Connection, sql: str) -> list[Any]:
    return list(await conn.fetch(sql))
