"""The delivery policy's SQLite store (the PolicyStore port, policy/ports.py): preferences,
restriction orders, their audit, and the change log. Its PostgreSQL twin is policy_store_pg.py;
the row converters here serve both.

Every write is one transaction (Database.run) that changes a table AND appends its entry to
`policy_changes`, whose version (AUTOINCREMENT) is gap-free and in commit order (SQLite has one
writer at a time, and a rolled-back transaction gives its version back). Identification state
changes reach the log through triggers on `identifications`, so every path that changes them
(RPCs, verification tasks, notices, another gateway process on the same file) is logged in the
same transaction without knowing about the policy. Each replica's index loads a snapshot and
then applies the log after the snapshot's version: the store is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from services.common.db import Database
from services.common.phone import mask
from services.common.timeutil import stored_time, to_iso
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
    OrderScope,
    OrderSla,
    OrderState,
    OrderTarget,
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

# SQLite's now in the storage form of timeutil.to_iso (microseconds, +00:00).
NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00'"

POLICY_MIGRATION = f"""
    CREATE TABLE policy_changes (
        version      INTEGER PRIMARY KEY AUTOINCREMENT,  -- gap-free, in commit order
        changed_at   TEXT NOT NULL,
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

    CREATE TABLE policy_sender_rules (
        recipient_id TEXT NOT NULL,
        sender_id    TEXT NOT NULL,
        rule         TEXT NOT NULL CHECK (rule IN ('ACCEPTED', 'REFUSED')),
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (recipient_id, sender_id)
    ) WITHOUT ROWID;

    CREATE TABLE policy_unaccepted (
        user_id    TEXT PRIMARY KEY,
        policy     TEXT NOT NULL CHECK (policy IN ('ALLOW', 'REFUSE')),
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE policy_automated_consents (
        recipient_id TEXT NOT NULL,
        sender_id    TEXT NOT NULL,
        granted      INTEGER NOT NULL CHECK (granted IN (0, 1)),
        granted_at   TEXT,
        revoked_at   TEXT,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (recipient_id, sender_id)
    ) WITHOUT ROWID;

    CREATE TABLE restriction_orders (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id     TEXT NOT NULL UNIQUE,
        target       TEXT NOT NULL CHECK (target IN ('USER', 'PHONE')),
        target_value TEXT NOT NULL,
        scope        TEXT NOT NULL CHECK (scope IN ('ALL_MESSAGES', 'AUTOMATED')),
        state        TEXT NOT NULL CHECK (state IN ('RECEIVED', 'IN_FORCE', 'LIFTED')),
        received_at  TEXT NOT NULL,
        recorded_at  TEXT NOT NULL,
        in_force_at  TEXT,
        lifted_at    TEXT,
        lift_reason  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX restriction_orders_by_state ON restriction_orders (state, received_at);

    CREATE TABLE restriction_audit (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        at            TEXT NOT NULL,
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
    CREATE TRIGGER restriction_audit_no_update BEFORE UPDATE ON restriction_audit
    BEGIN
        SELECT RAISE(ABORT, 'restriction audit records are append-only');
    END;
    CREATE TRIGGER restriction_audit_no_delete BEFORE DELETE ON restriction_audit
    BEGIN
        SELECT RAISE(ABORT, 'restriction audit records are append-only');
    END;

    -- A user's current identification (the latest) into the log, whatever path changed it.
    CREATE TRIGGER identifications_log_insert AFTER INSERT ON identifications
    BEGIN
        INSERT INTO policy_changes (changed_at, kind, user_id, phone_number, value)
        SELECT {NOW_SQL}, 'IDENTIFICATION', user_id, phone_number, state
        FROM identifications WHERE user_id = NEW.user_id ORDER BY seq DESC LIMIT 1;
    END;
    CREATE TRIGGER identifications_log_state AFTER UPDATE OF state ON identifications
    WHEN NEW.state <> OLD.state
    BEGIN
        INSERT INTO policy_changes (changed_at, kind, user_id, phone_number, value)
        SELECT {NOW_SQL}, 'IDENTIFICATION', user_id, phone_number, state
        FROM identifications WHERE user_id = NEW.user_id ORDER BY seq DESC LIMIT 1;
    END;
"""

CHANGE_COLUMNS = (
    "version, changed_at, kind, user_id, sender_id, phone_number, value, order_id, scope"
)


def _opt(value: str | datetime | None) -> datetime | None:
    return None if value is None else stored_time(value)


def change_from_row(row: Any) -> PolicyChange:
    """A policy_changes row (CHANGE_COLUMNS, either engine) as a PolicyChange."""
    return PolicyChange(
        version=int(row[0]),
        changed_at=stored_time(row[1]),
        kind=ChangeKind(row[2]),
        user_id=row[3],
        sender_id=row[4],
        phone_number=row[5],
        value=row[6],
        order_id=row[7],
        scope=row[8],
    )


def order_from_row(row: Any) -> RestrictionOrder:
    """A restriction_orders row (either engine) as a RestrictionOrder."""
    return RestrictionOrder(
        order_id=row["order_id"],
        target=OrderTarget(row["target"]),
        target_value=row["target_value"],
        scope=OrderScope(row["scope"]),
        state=OrderState(row["state"]),
        received_at=stored_time(row["received_at"]),
        recorded_at=stored_time(row["recorded_at"]),
        in_force_at=_opt(row["in_force_at"]),
        lifted_at=_opt(row["lifted_at"]),
        lift_reason=row["lift_reason"],
    )


def consent_from_row(row: Any) -> AutomatedConsent:
    """A policy_automated_consents row (either engine) as an AutomatedConsent."""
    return AutomatedConsent(
        sender_id=row["sender_id"],
        consent=Consent.GRANTED if row["granted"] else Consent.REVOKED,
        granted_at=_opt(row["granted_at"]),
        revoked_at=_opt(row["revoked_at"]),
        updated_at=stored_time(row["updated_at"]),
    )


def audit_from_row(row: Any) -> OrderAuditRecord:
    """A restriction_audit row (either engine) as an OrderAuditRecord."""
    return OrderAuditRecord(
        seq=row["seq"],
        at=stored_time(row["at"]),
        order_id=row["order_id"],
        action=row["action"],
        actor=row["actor"],
        target=OrderTarget(row["target"]),
        masked_target=row["masked_target"],
        scope=OrderScope(row["scope"]),
        state=OrderState(row["state"]),
        note=row["note"],
    )


def masked_target(order: RestrictionOrder) -> str:
    """The order's target as the audit keeps it: a phone number masked."""
    return mask(order.target_value) if order.target is OrderTarget.PHONE else order.target_value


def _log(
    conn: sqlite3.Connection,
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
    cursor = conn.execute(
        "INSERT INTO policy_changes (changed_at, kind, user_id, sender_id, phone_number, value, "
        "order_id, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (to_iso(now), kind, user_id, sender_id, phone_number, value, order_id, scope),
    )
    return int(cursor.lastrowid or 0)


def _require_known(conn: sqlite3.Connection, user_id: str) -> None:
    if conn.execute("SELECT 1 FROM identifications WHERE user_id = ?", (user_id,)).fetchone():
        return
    raise UserUnknown.of(user_id)


def _audit(
    conn: sqlite3.Connection,
    now: datetime,
    order: RestrictionOrder,
    action: str,
    actor: str,
    note: str = "",
) -> None:
    conn.execute(
        "INSERT INTO restriction_audit (at, order_id, action, actor, target, masked_target, "
        "scope, state, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            to_iso(now),
            order.order_id,
            action,
            actor,
            order.target,
            masked_target(order),
            order.scope,
            order.state,
            note,
        ),
    )


def order_change(order: RestrictionOrder) -> dict[str, str]:
    """The change-log fields of an order's new state (either engine): its target in user_id or
    phone_number."""
    phone = order.target is OrderTarget.PHONE
    return {
        "value": str(order.state),
        "user_id": "" if phone else order.target_value,
        "phone_number": order.target_value if phone else "",
        "order_id": order.order_id,
        "scope": str(order.scope),
    }


def _log_order(conn: sqlite3.Connection, now: datetime, order: RestrictionOrder) -> int:
    return _log(conn, now, ChangeKind.RESTRICTION_ORDER, **order_change(order))


class SqlitePolicyStore:
    """The PolicyStore port (policy/ports.py) on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextlib.asynccontextmanager
    async def changes_signalled(self, wake: ChangeSignal) -> AsyncIterator[None]:
        """Nothing to listen to: other processes on the file are caught up with by the poll."""
        yield

    # --- preferences -------------------------------------------------------------------------

    async def set_sender_rule(
        self, recipient: str, sender: str, rule: SenderRule, now: datetime
    ) -> int:
        """Store the rule (NONE deletes it); returns the change's version."""

        def write(conn: sqlite3.Connection) -> int:
            _require_known(conn, recipient)
            if rule is SenderRule.NONE:
                conn.execute(
                    "DELETE FROM policy_sender_rules WHERE recipient_id = ? AND sender_id = ?",
                    (recipient, sender),
                )
            else:
                conn.execute(
                    "INSERT INTO policy_sender_rules (recipient_id, sender_id, rule, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (recipient_id, sender_id) DO UPDATE SET "
                    "rule = excluded.rule, updated_at = excluded.updated_at",
                    (recipient, sender, rule, to_iso(now)),
                )
            return _log(
                conn, now, ChangeKind.SENDER_RULE, value=rule, user_id=recipient, sender_id=sender
            )

        return await self._db.run(write)

    async def set_unaccepted_policy(
        self, user_id: str, policy: UnacceptedPolicy, now: datetime
    ) -> int:
        def write(conn: sqlite3.Connection) -> int:
            _require_known(conn, user_id)
            if policy is UnacceptedPolicy.DEFAULT:
                conn.execute("DELETE FROM policy_unaccepted WHERE user_id = ?", (user_id,))
            else:
                conn.execute(
                    "INSERT INTO policy_unaccepted (user_id, policy, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET policy = excluded.policy, "
                    "updated_at = excluded.updated_at",
                    (user_id, policy, to_iso(now)),
                )
            return _log(conn, now, ChangeKind.UNACCEPTED_POLICY, value=policy, user_id=user_id)

        return await self._db.run(write)

    async def set_automated_consent(
        self, recipient: str, sender: str, consent: Consent, now: datetime
    ) -> tuple[AutomatedConsent, int]:
        """Grant (granted_at now) or revoke (revoked_at now) consent; the other time is kept."""
        granted = consent is Consent.GRANTED

        def write(conn: sqlite3.Connection) -> tuple[AutomatedConsent, int]:
            _require_known(conn, recipient)
            stamp = to_iso(now)
            row = conn.execute(
                """INSERT INTO policy_automated_consents
                       (recipient_id, sender_id, granted, granted_at, revoked_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (recipient_id, sender_id) DO UPDATE SET
                       granted = excluded.granted,
                       granted_at = COALESCE(excluded.granted_at, granted_at),
                       revoked_at = COALESCE(excluded.revoked_at, revoked_at),
                       updated_at = excluded.updated_at
                   RETURNING *""",
                (
                    recipient,
                    sender,
                    int(granted),
                    stamp if granted else None,
                    None if granted else stamp,
                    stamp,
                ),
            ).fetchone()
            version = _log(
                conn,
                now,
                ChangeKind.AUTOMATED_CONSENT,
                value=consent,
                user_id=recipient,
                sender_id=sender,
            )
            return consent_from_row(row), version

        return await self._db.run(write)

    async def preferences(self, user_id: str, default: UnacceptedPolicy) -> Preferences | None:
        """The user's preferences; None if the user is unknown."""
        known = await self._db.fetchone(
            "SELECT 1 FROM identifications WHERE user_id = ? LIMIT 1", (user_id,)
        )
        if known is None:
            return None
        policy_row = await self._db.fetchone(
            "SELECT policy FROM policy_unaccepted WHERE user_id = ?", (user_id,)
        )
        rules = await self._db.fetchall(
            "SELECT sender_id, rule, updated_at FROM policy_sender_rules "
            "WHERE recipient_id = ? ORDER BY sender_id",
            (user_id,),
        )
        consents = await self._db.fetchall(
            "SELECT * FROM policy_automated_consents WHERE recipient_id = ? ORDER BY sender_id",
            (user_id,),
        )
        policy = UnacceptedPolicy(policy_row[0]) if policy_row else UnacceptedPolicy.DEFAULT
        return Preferences(
            user_id=user_id,
            unaccepted_policy=policy,
            effective_unaccepted_policy=default if policy is UnacceptedPolicy.DEFAULT else policy,
            sender_rules=tuple(
                SenderRuleEntry(r[0], SenderRule(r[1]), stored_time(r[2])) for r in rules
            ),
            automated_consents=tuple(consent_from_row(r) for r in consents),
        )

    # --- restriction orders ----------------------------------------------------------------

    async def record_order(
        self, order: RestrictionOrder, *, actor: str, now: datetime
    ) -> tuple[RestrictionOrder, bool]:
        """Insert the order (and its audit record, and its change); (stored order, created).
        The same order recorded again returns the stored one (created False); another order
        under the same id is OrderConflict."""

        def write(conn: sqlite3.Connection) -> tuple[RestrictionOrder, bool]:
            row = conn.execute(
                "SELECT * FROM restriction_orders WHERE order_id = ?", (order.order_id,)
            ).fetchone()
            if row is not None:
                stored = order_from_row(row)
                if stored.same_order(order):
                    return stored, False
                raise OrderConflict(
                    f"restriction order {order.order_id!r} was recorded with another target, "
                    "scope or receipt time: give a new order_id, or lift that order first"
                )
            conn.execute(
                """INSERT INTO restriction_orders (order_id, target, target_value, scope, state,
                       received_at, recorded_at, in_force_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    order.order_id,
                    order.target,
                    order.target_value,
                    order.scope,
                    order.state,
                    to_iso(order.received_at),
                    to_iso(order.recorded_at),
                    None if order.in_force_at is None else to_iso(order.in_force_at),
                ),
            )
            _audit(conn, now, order, "RECORDED", actor)
            _log_order(conn, now, order)
            return order, True

        return await self._db.run(write)

    async def change_order(
        self, order_id: str, event: OrderEvent, *, actor: str, now: datetime, note: str = ""
    ) -> RestrictionOrder:
        """ENFORCE or LIFT the order by its state machine, audited and logged."""

        def write(conn: sqlite3.Connection) -> RestrictionOrder:
            row = conn.execute(
                "SELECT * FROM restriction_orders WHERE order_id = ?", (order_id,)
            ).fetchone()
            if row is None:
                raise OrderNotFound(
                    f"no restriction order {order_id!r}: list them with ListRestrictionOrders"
                )
            order = order_from_row(row)
            new = order_transition(order, event)
            stamp = to_iso(now)
            if event is OrderEvent.ENFORCE:
                conn.execute(
                    "UPDATE restriction_orders SET state = ?, in_force_at = ? "
                    "WHERE order_id = ? AND state = ?",
                    (new, stamp, order_id, order.state),
                )
                action = "ENFORCED"
            else:
                conn.execute(
                    "UPDATE restriction_orders SET state = ?, lifted_at = ?, lift_reason = ? "
                    "WHERE order_id = ? AND state = ?",
                    (new, stamp, note, order_id, order.state),
                )
                action = "LIFTED"
            changed = order_from_row(
                conn.execute(
                    "SELECT * FROM restriction_orders WHERE order_id = ?", (order_id,)
                ).fetchone()
            )
            _audit(conn, now, changed, action, actor, note)
            _log_order(conn, now, changed)
            return changed

        return await self._db.run(write)

    async def orders(self, state: OrderState | None, limit: int) -> list[RestrictionOrder]:
        """Newest first."""
        if state is None:
            rows = await self._db.fetchall(
                "SELECT * FROM restriction_orders ORDER BY seq DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._db.fetchall(
                "SELECT * FROM restriction_orders WHERE state = ? ORDER BY seq DESC LIMIT ?",
                (state, limit),
            )
        return [order_from_row(r) for r in rows]

    async def order_audit(self, order_id: str | None, limit: int) -> list[OrderAuditRecord]:
        """Oldest first."""
        sql = "SELECT * FROM restriction_audit"
        params: tuple[Any, ...] = ()
        if order_id:
            sql += " WHERE order_id = ?"
            params = (order_id,)
        rows = await self._db.fetchall(sql + " ORDER BY seq LIMIT ?", (*params, limit))
        return [audit_from_row(r) for r in rows]

    async def order_sla(self) -> OrderSla:
        limit_days = ORDER_LIMIT.total_seconds() / 86400
        row = await self._db.fetchone(
            f"""SELECT
                  sum(state = 'RECEIVED'),
                  min(CASE WHEN state = 'RECEIVED' THEN received_at END),
                  sum(state = 'IN_FORCE'),
                  sum(in_force_at IS NOT NULL
                      AND julianday(in_force_at) - julianday(received_at) > {limit_days})
                FROM restriction_orders"""
        )
        assert row is not None
        return OrderSla(
            received=int(row[0] or 0),
            oldest_received_at=_opt(row[1]),
            in_force=int(row[2] or 0),
            late=int(row[3] or 0),
        )

    # --- the change log ----------------------------------------------------------------------

    async def changes_after(self, version: int, limit: int) -> list[PolicyChange]:
        rows = await self._db.fetchall(
            f"SELECT {CHANGE_COLUMNS} FROM policy_changes WHERE version > ? "
            "ORDER BY version LIMIT ?",
            (version, limit),
        )
        return [change_from_row(r) for r in rows]

    async def log_bounds(self) -> tuple[int, int]:
        """(the oldest version kept, the head version); (0, 0) when the log is empty."""
        row = await self._db.fetchone("SELECT min(version), max(version) FROM policy_changes")
        if row is None or row[1] is None:
            return 0, 0
        return int(row[0]), int(row[1])

    async def prune_changes(self, before: datetime) -> int:
        """Delete entries older than `before`, always keeping the head (it carries the
        version forward)."""

        def prune(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM policy_changes WHERE changed_at < ? "
                "AND version < (SELECT max(version) FROM policy_changes)",
                (to_iso(before),),
            ).rowcount

        return await self._db.run(prune)

    async def load_index(self, *, refuse_unaccepted_by_default: bool) -> PolicyIndex:
        """A new index built from the whole store at one version (read_snapshot)."""
        return await self.read_snapshot(partial(built_index, refuse_unaccepted_by_default))

    async def read_snapshot(self, build: Callable[[Snapshot], T]) -> T:
        """build(the store at one version): read on a connection of its own in one read
        transaction (WAL: every SELECT sees the same commit), streamed into build row by row,
        off the event loop."""
        path = self._db.path
        if path is None:
            raise RuntimeError("SqlitePolicyStore.read_snapshot needs the database file")
        return await asyncio.to_thread(_read_snapshot, path, build)


def built_index(refuse_unaccepted_by_default: bool, snapshot: Snapshot) -> PolicyIndex:
    """The whole index from a snapshot (each store's load_index)."""
    index = PolicyIndex(refuse_unaccepted_by_default=refuse_unaccepted_by_default)
    index.load(snapshot)
    return index


def _read_snapshot(path: Path, build: Callable[[Snapshot], T]) -> T:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN")  # one read transaction: every SELECT sees the same version
        head = conn.execute("SELECT max(version) FROM policy_changes").fetchone()[0] or 0
        snapshot = Snapshot(
            version=int(head),
            # in seq order: a user's latest identification (the current one) comes last
            users=conn.execute(
                "SELECT user_id, phone_number, state FROM identifications ORDER BY seq"
            ),
            sender_rules=conn.execute(
                "SELECT recipient_id, sender_id, rule FROM policy_sender_rules"
            ),
            unaccepted=conn.execute("SELECT user_id, policy FROM policy_unaccepted"),
            consents=conn.execute(
                "SELECT recipient_id, sender_id FROM policy_automated_consents WHERE granted = 1"
            ),
            orders=conn.execute(
                "SELECT order_id, target, target_value, scope FROM restriction_orders "
                "WHERE state = 'IN_FORCE'"
            ),
        )
        built = build(snapshot)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return built
