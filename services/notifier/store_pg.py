"""The notifier's PostgreSQL store (the NotifierStore port, ports.py), for several replicas on one
database.

Sequence numbers stay gap-free and ordered whichever replica publishes: a publish moves its
messengers' heads (`head_seq = head_seq + n ... RETURNING`) in its own transaction, and that
row lock is held until the commit, so the next publish for the messenger gets its numbers only
after this one has committed (or rolled back, giving its numbers back). The heads are taken in
messenger order, so two publishes never deadlock. A commit NOTIFYs the messengers it touched:
every replica LISTENs and wakes its streams of those messengers at once (the streams' poll is
the safety net). Acks and pruning lock the messenger's row, so any replica may take them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import asyncpg
from asyncpg import Connection

from services.common.failpoints import failpoint
from services.common.pg import PgDatabase
from services.common.storage import Row
from services.notifier.domain import (
    ContractTerminated,
    OldestUnacked,
    PublishResult,
    SequenceState,
    StoredEvent,
)
from services.notifier.ports import Wake
from services.notifier.store import KNOWN_EVENTS_COLUMNS, row_identity, sequence_state, split_fresh

SERVICE: Final = "notifier"
CHANNEL: Final = "idmesh_notifier_published"  # payload: a messenger id

PG_MIGRATIONS: Final[list[str]] = [
    """
    CREATE TABLE sequences (
        messenger_id    TEXT PRIMARY KEY,
        head_seq        BIGINT NOT NULL CHECK (head_seq >= 0),
        acked_seq       BIGINT NOT NULL DEFAULT 0 CHECK (acked_seq BETWEEN 0 AND head_seq),
        floor_seq       BIGINT NOT NULL DEFAULT 1 CHECK (floor_seq BETWEEN 1 AND acked_seq + 1),
        late_deliveries BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE events (
        messenger_id          TEXT NOT NULL REFERENCES sequences (messenger_id),
        seq                   BIGINT NOT NULL CHECK (seq >= 1),
        event_id              TEXT NOT NULL UNIQUE,
        operator_id           TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        identification_code   TEXT NOT NULL,
        reason                INTEGER NOT NULL,
        occurred_at           TIMESTAMPTZ NOT NULL,
        recipient_operator_id TEXT NOT NULL,
        published_at          TIMESTAMPTZ NOT NULL,
        acked_at              TIMESTAMPTZ,
        trace_id              TEXT NOT NULL DEFAULT '',  -- the operator's call that ended it
        PRIMARY KEY (messenger_id, seq)
    );
    CREATE INDEX events_by_published_at ON events (messenger_id, published_at);
    """,
]

_EVENT_COLUMNS: Final = (
    "messenger_id, seq, event_id, operator_id, phone_number, identification_code, reason, "
    "occurred_at, recipient_operator_id, published_at, trace_id"
)
_STATE_SQL: Final = (
    "SELECT head_seq, acked_seq, floor_seq, late_deliveries FROM sequences WHERE messenger_id = $1"
)
# A publish that raced another replica's publish of the same event id is tried again: the id
# is then known, and the event a duplicate (or a conflict).
_PUBLISH_ATTEMPTS: Final = 3


def _stored_event(row: Row) -> StoredEvent:
    return StoredEvent(
        seq=int(row["seq"]),
        event=ContractTerminated(
            event_id=row["event_id"],
            operator_id=row["operator_id"],
            messenger_id=row["messenger_id"],
            phone_number=row["phone_number"],
            identification_code=row["identification_code"],
            reason=int(row["reason"]),
            occurred_at=row["occurred_at"],
            recipient_operator_id=row["recipient_operator_id"],
            trace_id=row["trace_id"],
        ),
        published_at=row["published_at"],
    )


class PgNotifierStore:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    @asynccontextmanager
    async def publications(self, wake: Wake) -> AsyncIterator[None]:
        async with self._db.listening(CHANNEL, wake):
            yield

    async def publish(
        self, events: Sequence[ContractTerminated], published_at: datetime
    ) -> tuple[PublishResult, set[str]]:
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            try:
                async with self._db.transaction() as conn:
                    return await _publish(conn, events, published_at)
            except asyncpg.UniqueViolationError:
                if attempt == _PUBLISH_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def state(self, messenger_id: str) -> SequenceState:
        return sequence_state(messenger_id, await self._db.fetchrow(_STATE_SQL, messenger_id))

    async def read_after(self, messenger_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        rows = await self._db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE messenger_id = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3",
            messenger_id,
            after_seq,
            limit,
        )
        return [_stored_event(row) for row in rows]

    async def ack(
        self,
        messenger_id: str,
        up_to_seq: int,
        acked_at: datetime,
        late_if_published_before: datetime,
    ) -> tuple[SequenceState, int]:
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(_STATE_SQL + " FOR UPDATE", messenger_id)
            state = sequence_state(messenger_id, row)
            state.check_ack(up_to_seq)
            if up_to_seq <= state.acked_seq:
                return state, 0
            span = (messenger_id, state.acked_seq, up_to_seq)
            late = int(
                await conn.fetchval(
                    "SELECT count(*) FROM events WHERE messenger_id = $1 AND seq > $2 "
                    "AND seq <= $3 AND published_at < $4",
                    *span,
                    late_if_published_before,
                )
            )
            await conn.execute(
                "UPDATE events SET acked_at = $4 "
                "WHERE messenger_id = $1 AND seq > $2 AND seq <= $3",
                *span,
                acked_at,
            )
            await conn.execute(
                "UPDATE sequences SET acked_seq = $2, late_deliveries = late_deliveries + $3 "
                "WHERE messenger_id = $1",
                messenger_id,
                up_to_seq,
                late,
            )
            failpoint("notifier.ack.before_commit")
        after = SequenceState(
            messenger_id=messenger_id,
            head_seq=state.head_seq,
            acked_seq=up_to_seq,
            floor_seq=state.floor_seq,
            late_deliveries=state.late_deliveries + late,
        )
        return after, late

    async def published_at(self, messenger_id: str, seq: int) -> datetime | None:
        value: datetime | None = await self._db.fetchval(
            "SELECT published_at FROM events WHERE messenger_id = $1 AND seq = $2",
            messenger_id,
            seq,
        )
        return value

    async def delivery_overview(self) -> list[tuple[SequenceState, datetime | None]]:
        rows = await self._db.fetch(
            "SELECT s.messenger_id, s.head_seq, s.acked_seq, s.floor_seq, s.late_deliveries, "
            "e.published_at FROM sequences s LEFT JOIN events e "
            "ON e.messenger_id = s.messenger_id AND e.seq = s.acked_seq + 1 "
            "AND s.acked_seq < s.head_seq ORDER BY s.messenger_id"
        )
        return [(sequence_state(row["messenger_id"], row), row["published_at"]) for row in rows]

    async def oldest_unacked(self) -> list[OldestUnacked]:
        rows = await self._db.fetch(
            "SELECT s.messenger_id, s.head_seq, s.acked_seq, e.published_at "
            "FROM sequences s JOIN events e "
            "ON e.messenger_id = s.messenger_id AND e.seq = s.acked_seq + 1 "
            "WHERE s.acked_seq < s.head_seq ORDER BY s.messenger_id"
        )
        return [
            OldestUnacked(
                messenger_id=row["messenger_id"],
                head_seq=int(row["head_seq"]),
                acked_seq=int(row["acked_seq"]),
                published_at=row["published_at"],
            )
            for row in rows
        ]

    async def prune(self, published_before: datetime, max_rows: int) -> dict[str, int]:
        candidates = await self._db.fetch(
            "SELECT messenger_id FROM sequences WHERE floor_seq <= acked_seq ORDER BY messenger_id"
        )
        floors: dict[str, int] = {}
        for candidate in candidates:
            messenger_id = candidate["messenger_id"]
            while (
                floor := await self._prune_chunk(messenger_id, published_before, max_rows)
            ) is not None:
                floors[messenger_id] = floor
        return floors

    async def _prune_chunk(self, messenger_id: str, cutoff: datetime, max_rows: int) -> int | None:
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(_STATE_SQL + " FOR UPDATE", messenger_id)
            state = sequence_state(messenger_id, row)
            first_recent = await conn.fetchval(
                "SELECT min(seq) FROM events WHERE messenger_id = $1 AND published_at >= $2",
                messenger_id,
                cutoff,
            )
            last = state.acked_seq
            if first_recent is not None:
                last = min(last, int(first_recent) - 1)
            last = min(last, state.floor_seq + max_rows - 1)
            if last < state.floor_seq:
                return None
            await conn.execute(
                "DELETE FROM events WHERE messenger_id = $1 AND seq <= $2", messenger_id, last
            )
            await conn.execute(
                "UPDATE sequences SET floor_seq = $2 WHERE messenger_id = $1",
                messenger_id,
                last + 1,
            )
        return last + 1


async def _publish(
    conn: Connection, events: Sequence[ContractTerminated], published_at: datetime
) -> tuple[PublishResult, set[str]]:
    ids = sorted({e.event_id for e in events})
    rows = await conn.fetch(
        f"SELECT {KNOWN_EVENTS_COLUMNS} FROM events WHERE event_id = ANY($1::text[])", ids
    )
    known = {row["event_id"]: row_identity(row) for row in rows}
    fresh, duplicates = split_fresh(events, known)
    if not fresh:
        return PublishResult(accepted=0, duplicates=duplicates), set()
    counts = Counter(e.messenger_id for e in fresh)
    messengers = sorted(counts)
    # The row locks on the heads, in messenger order, held until the commit.
    heads = await conn.fetch(
        "INSERT INTO sequences (messenger_id, head_seq) "
        "SELECT * FROM unnest($1::text[], $2::bigint[]) "
        "ON CONFLICT (messenger_id) "
        "DO UPDATE SET head_seq = sequences.head_seq + excluded.head_seq "
        "RETURNING messenger_id, head_seq",
        messengers,
        [counts[m] for m in messengers],
    )
    last_taken = {
        row["messenger_id"]: int(row["head_seq"]) - counts[row["messenger_id"]] for row in heads
    }
    records: list[tuple[Any, ...]] = []
    for event in fresh:
        seq = last_taken[event.messenger_id] + 1
        last_taken[event.messenger_id] = seq
        records.append(
            (
                event.messenger_id,
                seq,
                event.event_id,
                event.operator_id,
                event.phone_number,
                event.identification_code,
                int(event.reason),
                event.occurred_at,
                event.recipient_operator_id,
                published_at,
                event.trace_id,
            )
        )
    await conn.executemany(
        f"INSERT INTO events ({_EVENT_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        records,
    )
    # Delivered to the listeners when (and only if) this transaction commits.
    await conn.execute("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m", CHANNEL, messengers)
    failpoint("notifier.publish.before_commit")
    return PublishResult(accepted=len(fresh), duplicates=duplicates), set(messengers)
