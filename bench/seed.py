"""Seeding the services' stores directly, before the services start.

Each store is created with the service's own MIGRATIONS (so the schema is exactly the one the
service would create, and the service finds it up to date), then filled with executemany in one
transaction (SQLite) or COPY (PostgreSQL, the services' PG_MIGRATIONS applied as a replica
would). This is how the bench gets 1,000,000 subscribers, or 2 x N bindings, in seconds rather
than through N RPCs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from services.common.pg import migrate
from services.common.timeutil import from_iso, to_iso


def beeline_number(i: int) -> str:
    """Subscriber i of the bench's Beeline registry: +7 903 0000000 + i (a Beeline range)."""
    return f"+7903{i:07d}"


def import_number(i: int) -> str:
    """Row i of the bulk import: +7 921 0000000 + i (a MegaFon range)."""
    return f"+7921{i:07d}"


def pending_number(i: int) -> str:
    """+7 900 ...: T2 in phonenumbers' carrier data, routed to an operator that never answers."""
    return f"+7900{i:07d}"


def binding_code(messenger_id: str, i: int) -> str:
    """A unique 32-hex-digit identification code per (messenger, subscriber)."""
    return f"{ord(messenger_id[0]) & 0xF:x}{i:031x}"


def open_store(path: Path, migrations: Sequence[str]) -> sqlite3.Connection:
    """A fresh store at path with the service's schema (as services.common.db would make it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # seeding only; the services use their own setting
    conn.execute("PRAGMA cache_size=-200000")
    for number, script in enumerate(migrations, start=1):
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    return conn


@dataclass(frozen=True, slots=True)
class RegistrySeed:
    """`subscribers` active contracts (beeline_number(i), contract "c<i>"), active agreements
    with `messengers`, and the first `bound` subscribers bound to every one of them."""

    subscribers: int
    messengers: Sequence[str]
    bound: int
    now: datetime


def seed_registry(path: Path, migrations: Sequence[str], plan: RegistrySeed) -> None:
    """plan's rows into a fresh SQLite store at path."""
    subscribers, messengers, bound = plan.subscribers, plan.messengers, plan.bound
    conn = open_store(path, migrations)
    at = to_iso(plan.now - timedelta(days=30))
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO agreements (messenger_id, display_name, state, updated_at) "
            "VALUES (?, ?, 'active', ?)",
            [(m, m, at) for m in messengers],
        )
        conn.executemany(
            "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
            "VALUES (?, ?, 'active', ?)",
            ((f"c{i:08d}", beeline_number(i), at) for i in range(subscribers)),
        )
        conn.executemany(
            "INSERT INTO bindings (contract_id, messenger_id, identification_code, bound_at) "
            "VALUES (?, ?, ?, ?)",
            ((f"c{i:08d}", m, binding_code(m, i), at) for m in messengers for i in range(bound)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def seed_gateway(
    path: Path,
    migrations: Sequence[str],
    rows: Iterable[tuple[object, ...]],
) -> None:
    """Identifications given as rows of IDENTIFICATION_COLUMNS."""
    conn = open_store(path, migrations)
    marks = ", ".join("?" * len(IDENTIFICATION_COLUMNS))
    try:
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO identifications ({', '.join(IDENTIFICATION_COLUMNS)}) VALUES ({marks})",
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


IDENTIFICATION_COLUMNS = (
    "identification_id",
    "user_id",
    "phone_number",
    "state",
    "reason",
    "operator_id",
    "started_at",
    "code_expires_at",
    "attempts_left",
    "verify_key",
    "verification_deadline",
    "identification_code",
    "completed_at",
)


def fanout_user(i: int) -> str:
    return f"fan-{i}"


def identified_rows(
    messenger_id: str, operator_id: str, count: int, now: datetime
) -> Iterator[tuple[object, ...]]:
    """Users fan-<i>, IDENTIFIED with operator_id under binding_code(messenger_id, i)."""
    at = to_iso(now - timedelta(days=30))
    for i in range(count):
        yield (
            f"{messenger_id}-fan-{i}",
            fanout_user(i),
            beeline_number(i),
            "IDENTIFIED",
            "UNSPECIFIED",
            operator_id,
            at,
            at,
            5,
            f"{messenger_id}-req-{i}",
            at,
            binding_code(messenger_id, i),
            at,
        )


def verifying_rows(
    operator_id: str, count: int, now: datetime, window: timedelta
) -> Iterator[tuple[object, ...]]:
    """Users pend-<i>, VERIFYING with operator_id until now + window (the code was confirmed)."""
    started = to_iso(now)
    expires = to_iso(now + timedelta(minutes=5))
    deadline = to_iso(now + window)
    for i in range(count):
        yield (
            f"pend-{i}",
            f"pend-{i}",
            pending_number(i),
            "VERIFYING",
            "UNSPECIFIED",
            operator_id,
            started,
            expires,
            5,
            f"pend-req-{i}",
            deadline,
            None,
            None,
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the delivery policy's users -----------------------------------------------------------


def policy_user(i: int) -> str:
    return f"pu-{i}"


def policy_number(i: int) -> str:
    """User i of the policy scenario: +7 905 0000000 + i (a Beeline range)."""
    return f"+7905{i:07d}"


def seed_policy(
    path: Path, users: int, now: datetime, *, rules_per_user: int | None = None
) -> None:
    """`users` IDENTIFIED users of the gateway at `path` (seeded already: this adds to it) and
    their preferences, by the rules of policy_preferences (or of many_rules, `rules_per_user`
    rules each). Like a restored backup, the rows are not in the policy change log (its
    triggers are dropped for the insert and recreated): a gateway loads them from the tables at
    start, and logs every change after."""
    conn = sqlite3.connect(path, isolation_level=None)
    at = to_iso(now - timedelta(days=1))
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("BEGIN")
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND tbl_name = 'identifications'"
        ).fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.executemany(
            f"INSERT INTO identifications ({', '.join(IDENTIFICATION_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(IDENTIFICATION_COLUMNS))})",
            policy_identification_rows(users, at),
        )
        rules, policies, consents = policy_preferences(users)
        if rules_per_user is not None:
            rules = many_rules(users, rules_per_user)
        conn.executemany(
            "INSERT INTO policy_sender_rules (recipient_id, sender_id, rule, updated_at) "
            "VALUES (?, ?, ?, ?)",
            ((r, s, rule, at) for r, s, rule in rules),
        )
        conn.executemany(
            "INSERT INTO policy_unaccepted (user_id, policy, updated_at) VALUES (?, ?, ?)",
            ((u, p, at) for u, p in policies),
        )
        conn.executemany(
            "INSERT INTO policy_automated_consents "
            "(recipient_id, sender_id, granted, granted_at, updated_at) VALUES (?, ?, 1, ?, ?)",
            ((r, s, at, at) for r, s in consents),
        )
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def policy_identification_rows(users: int, at: str) -> Iterator[tuple[object, ...]]:
    """The IDENTIFIED identifications of the policy scenario's users (IDENTIFICATION_COLUMNS)."""
    for i in range(users):
        yield (
            f"pol-{i}",
            policy_user(i),
            policy_number(i),
            "IDENTIFIED",
            "UNSPECIFIED",
            "beeline",
            at,
            at,
            5,
            f"pol-req-{i}",
            at,
            f"pol-code-{i}",
            at,
        )


def policy_preferences(
    users: int,
) -> tuple[Iterator[tuple[str, str, str]], Iterator[tuple[str, str]], Iterator[tuple[str, str]]]:
    """Each user i refuses user i+1 (i % 3 == 0) or accepts user i+2 (i % 3 == 1); one in ten
    refuses senders not accepted; one in five consents to user i+3's automated messages."""
    u = policy_user
    rules = (
        (u(i), u((i + 1) % users), "REFUSED")
        if i % 3 == 0
        else (u(i), u((i + 2) % users), "ACCEPTED")
        for i in range(users)
        if i % 3 != 2
    )
    policies = ((u(i), "REFUSE") for i in range(0, users, 10))
    consents = ((u(i), u((i + 3) % users)) for i in range(0, users, 5))
    return rules, policies, consents


def many_rules(users: int, per_user: int) -> Iterator[tuple[str, str, str]]:
    """per_user rules for each user i: senders i + 1 + k * 7919 (k < per_user), refused for
    even k, accepted for odd."""
    u = policy_user
    for i in range(users):
        for k in range(per_user):
            yield u(i), u((i + 1 + k * 7919) % users), "ACCEPTED" if k % 2 else "REFUSED"


# --- PostgreSQL ----------------------------------------------------------------------------


async def seed_registry_pg(url: str, plan: RegistrySeed) -> None:
    """plan's rows into the registry's PostgreSQL database at url (COPY)."""
    from services.operator_registry.store_pg import PG_MIGRATIONS, SERVICE

    subscribers, messengers, bound = plan.subscribers, plan.messengers, plan.bound
    at = plan.now - timedelta(days=30)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, SERVICE, PG_MIGRATIONS)
        async with conn.transaction():
            await conn.copy_records_to_table(
                "agreements",
                records=[(m, m, "active", at) for m in messengers],
                columns=("messenger_id", "display_name", "state", "updated_at"),
            )
            await conn.copy_records_to_table(
                "contracts",
                records=(
                    (f"c{i:08d}", beeline_number(i), "active", at) for i in range(subscribers)
                ),
                columns=("contract_id", "phone_number", "state", "activated_at"),
            )
            await conn.copy_records_to_table(
                "bindings",
                records=(
                    (f"c{i:08d}", m, binding_code(m, i), at)
                    for m in messengers
                    for i in range(bound)
                ),
                columns=("contract_id", "messenger_id", "identification_code", "bound_at"),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# The columns of IDENTIFICATION_COLUMNS that PostgreSQL keeps as TIMESTAMPTZ.
_TIMESTAMPS = frozenset(
    IDENTIFICATION_COLUMNS.index(c)
    for c in ("started_at", "code_expires_at", "verification_deadline", "completed_at")
)


async def seed_gateway_pg(url: str, rows: Iterable[tuple[object, ...]]) -> None:
    """seed_gateway's identifications, into the gateway's PostgreSQL database at url (COPY)."""
    from services.messenger_gateway.adapters.schema_pg import PG_MIGRATIONS, SERVICE

    records = (
        tuple(
            from_iso(v) if i in _TIMESTAMPS and isinstance(v, str) else v for i, v in enumerate(row)
        )
        for row in rows
    )
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, SERVICE, PG_MIGRATIONS)
        # Like a restored backup (pg_restore --disable-triggers), and as seed_policy does on
        # SQLite: the rows are not in the policy's change log (its triggers, a NOTIFY per row,
        # would take most of the seeding); a gateway loads them from the table at start.
        async with conn.transaction():
            await conn.execute("ALTER TABLE identifications DISABLE TRIGGER USER")
            await conn.copy_records_to_table(
                "identifications", records=records, columns=IDENTIFICATION_COLUMNS
            )
            await conn.execute("ALTER TABLE identifications ENABLE TRIGGER USER")
        await conn.execute("ANALYZE identifications")
    finally:
        await conn.close()


async def seed_policy_pg(url: str, users: int, now: datetime) -> None:
    """seed_policy into the gateway's PostgreSQL database at url (migrated here if new): the
    identifications by seed_gateway_pg, the preferences by COPY, none of it in the change log."""
    at = now - timedelta(days=1)
    await seed_gateway_pg(url, policy_identification_rows(users, to_iso(at)))
    rules, policies, consents = policy_preferences(users)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "policy_sender_rules",
                records=[(r, s, rule, at) for r, s, rule in rules],
                columns=("recipient_id", "sender_id", "rule", "updated_at"),
            )
            await conn.copy_records_to_table(
                "policy_unaccepted",
                records=[(u, p, at) for u, p in policies],
                columns=("user_id", "policy", "updated_at"),
            )
            await conn.copy_records_to_table(
                "policy_automated_consents",
                records=[(r, s, True, at, at) for r, s in consents],
                columns=("recipient_id", "sender_id", "granted", "granted_at", "updated_at"),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
