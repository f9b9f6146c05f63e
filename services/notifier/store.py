"""The notifier's SQLite store (the NotifierStore port, ports.py): events (the per-messenger
log) and sequences (head/acked/floor).

Sequence numbers are assigned inside the write transaction (BEGIN IMMEDIATE and one writer at a
time), so seq N+1 is never committed before N and a reader (which sees only committed data)
never observes a gap. Publish and Ack are each one function run on the database's writer thread
(Database.run: the whole transaction in one thread hop). The `sequences` row of a messenger
outlives pruning, so head, acked position, floor and the late-delivery count are never lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

from services.common.db import Database
from services.common.errors import quote
from services.common.failpoints import failpoint
from services.common.storage import Row
from services.common.timeutil import from_iso, to_iso
from services.notifier.domain import (
    ContractTerminated,
    EventIdConflict,
    OldestUnacked,
    PublishResult,
    SequenceState,
    StoredEvent,
)
from services.notifier.ports import Wake

MIGRATIONS: Final[list[str]] = [
    """
    CREATE TABLE sequences (
        messenger_id    TEXT PRIMARY KEY,
        head_seq        INTEGER NOT NULL CHECK (head_seq >= 0),
        acked_seq       INTEGER NOT NULL DEFAULT 0 CHECK (acked_seq BETWEEN 0 AND head_seq),
        floor_seq       INTEGER NOT NULL DEFAULT 1 CHECK (floor_seq BETWEEN 1 AND acked_seq + 1),
        late_deliveries INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE events (
        messenger_id          TEXT NOT NULL REFERENCES sequences (messenger_id),
        seq                   INTEGER NOT NULL CHECK (seq >= 1),
        event_id              TEXT NOT NULL UNIQUE,
        operator_id           TEXT NOT NULL,
        phone_number          TEXT NOT NULL,
        identification_code   TEXT NOT NULL,
        reason                INTEGER NOT NULL,
        occurred_at           TEXT NOT NULL,
        recipient_operator_id TEXT NOT NULL,
        published_at          TEXT NOT NULL,
        acked_at              TEXT,
        PRIMARY KEY (messenger_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_published_at ON events (messenger_id, published_at);
    """,
    # 2 (trace ids): the trace id of the operator's call that ended the contract.
    """
    ALTER TABLE events ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
    """,
]

_EVENT_COLUMNS: Final = (
    "messenger_id, seq, event_id, operator_id, phone_number, identification_code, reason, "
    "occurred_at, recipient_operator_id, published_at, trace_id"
)


def event_identity(event: ContractTerminated) -> tuple[Any, ...]:
    """What makes two publications of one event_id the same event (times as ISO text)."""
    assert event.occurred_at is not None
    return (
        event.event_id,
        event.operator_id,
        event.messenger_id,
        event.phone_number,
        event.identification_code,
        int(event.reason),
        to_iso(event.occurred_at),
        event.recipient_operator_id,
    )


def row_identity(row: Row) -> tuple[Any, ...]:
    """event_identity of a stored event's row (occurred_at as ISO text or a datetime)."""
    occurred_at = row["occurred_at"]
    return (
        row["event_id"],
        row["operator_id"],
        row["messenger_id"],
        row["phone_number"],
        row["identification_code"],
        int(row["reason"]),
        occurred_at if isinstance(occurred_at, str) else to_iso(occurred_at),
        row["recipient_operator_id"],
    )


KNOWN_EVENTS_COLUMNS: Final = (
    "event_id, operator_id, messenger_id, phone_number, identification_code, reason, "
    "occurred_at, recipient_operator_id"
)


def split_fresh(
    events: Sequence[ContractTerminated], known: dict[str, tuple[Any, ...]]
) -> tuple[list[ContractTerminated], int]:
    """The events of a batch not stored yet, and how many are duplicates (an id stored, or
    earlier in the batch, for the same event). known (event id -> row_identity of the stored
    event) is updated; EventIdConflict for an id stored for a different event."""
    fresh: list[ContractTerminated] = []
    duplicates = 0
    for index, event in enumerate(events):
        identity = event_identity(event)
        seen = known.get(event.event_id)
        if seen is None:
            known[event.event_id] = identity
            fresh.append(event)
        elif seen == identity:
            duplicates += 1
        else:
            raise EventIdConflict(
                f"events[{index}].event_id {quote(event.event_id)} is already stored for a "
                "different event: an event id names exactly one event; give this "
                "event a new id"
            )
    return fresh, duplicates


def _stored_event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        seq=int(row["seq"]),
        event=ContractTerminated(
            event_id=row["event_id"],
            operator_id=row["operator_id"],
            messenger_id=row["messenger_id"],
            phone_number=row["phone_number"],
            identification_code=row["identification_code"],
            reason=int(row["reason"]),
            occurred_at=from_iso(row["occurred_at"]),
            recipient_operator_id=row["recipient_operator_id"],
            trace_id=row["trace_id"],
        ),
        published_at=from_iso(row["published_at"]),
    )


def sequence_state(messenger_id: str, row: Row | None) -> SequenceState:
    if row is None:
        return SequenceState(messenger_id)
    return SequenceState(
        messenger_id=messenger_id,
        head_seq=int(row["head_seq"]),
        acked_seq=int(row["acked_seq"]),
        floor_seq=int(row["floor_seq"]),
        late_deliveries=int(row["late_deliveries"]),
    )


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


_STATE_SQL: Final = (
    "SELECT head_seq, acked_seq, floor_seq, late_deliveries FROM sequences WHERE messenger_id = ?"
)


class SqliteNotifierStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def publications(self, wake: Wake) -> AsyncIterator[None]:
        """Nothing to listen to: the streams' poll (the progress interval) picks up what
        another process sharing the file committed."""
        yield

    async def publish(
        self, events: Sequence[ContractTerminated], published_at: datetime
    ) -> tuple[PublishResult, set[str]]:
        """Store the new events of a batch in one transaction; the messengers that got events.

        Four statements whatever the batch size: look up known ids, read the heads, move the
        heads, insert the events; all in one thread hop (Database.run). An id already stored
        for the same event is a duplicate; an id stored for a different event is refused
        (EventIdConflict) and nothing is stored.
        """
        return await self._db.run(lambda conn: _publish(conn, events, published_at))

    async def state(self, messenger_id: str) -> SequenceState:
        return sequence_state(messenger_id, await self._db.fetchone(_STATE_SQL, (messenger_id,)))

    async def read_after(self, messenger_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE messenger_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (messenger_id, after_seq, limit),
        )
        return [_stored_event(row) for row in rows]

    async def ack(
        self,
        messenger_id: str,
        up_to_seq: int,
        acked_at: datetime,
        late_if_published_before: datetime,
    ) -> tuple[SequenceState, int]:
        """Move the acked position to up_to_seq if that is higher; record when each newly
        acknowledged event was delivered and count those published before the given time.
        The state after the ack, and how many of the newly acknowledged events were late.
        One transaction, one thread hop (Database.run)."""
        return await self._db.run(
            lambda conn: _ack(conn, messenger_id, up_to_seq, acked_at, late_if_published_before)
        )

    async def published_at(self, messenger_id: str, seq: int) -> datetime | None:
        row = await self._db.fetchone(
            "SELECT published_at FROM events WHERE messenger_id = ? AND seq = ?",
            (messenger_id, seq),
        )
        return None if row is None else from_iso(row["published_at"])

    async def delivery_overview(self) -> list[tuple[SequenceState, datetime | None]]:
        """Every messenger's position, with its oldest unacknowledged event's publication time
        (None when everything is acknowledged)."""
        rows = await self._db.fetchall(
            "SELECT s.messenger_id, s.head_seq, s.acked_seq, s.floor_seq, s.late_deliveries, "
            "e.published_at FROM sequences s LEFT JOIN events e "
            "ON e.messenger_id = s.messenger_id AND e.seq = s.acked_seq + 1 "
            "AND s.acked_seq < s.head_seq ORDER BY s.messenger_id"
        )
        return [
            (
                sequence_state(row["messenger_id"], row),
                from_iso(row["published_at"]) if row["published_at"] else None,
            )
            for row in rows
        ]

    async def oldest_unacked(self) -> list[OldestUnacked]:
        """Every messenger with unacknowledged events, with its oldest one's publication time."""
        rows = await self._db.fetchall(
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
                published_at=from_iso(row["published_at"]),
            )
            for row in rows
        ]

    async def prune(self, published_before: datetime, max_rows: int) -> dict[str, int]:
        """Delete, per messenger, the longest prefix of its retained events that are all
        acknowledged and published before the cutoff; at most max_rows events per messenger
        and transaction. Unacknowledged events are never deleted, and the retained events stay
        one contiguous range (the floor rises, no hole opens). Returns the new floors."""
        cutoff = to_iso(published_before)
        candidates = await self._db.fetchall(
            "SELECT messenger_id FROM sequences WHERE floor_seq <= acked_seq ORDER BY messenger_id"
        )
        floors: dict[str, int] = {}
        for candidate in candidates:
            messenger_id = candidate["messenger_id"]
            while (floor := await self._prune_chunk(messenger_id, cutoff, max_rows)) is not None:
                floors[messenger_id] = floor
        return floors

    async def _prune_chunk(self, messenger_id: str, cutoff: str, max_rows: int) -> int | None:
        async with self._db.transaction() as conn:
            async with conn.execute(_STATE_SQL, (messenger_id,)) as cursor:
                state = sequence_state(messenger_id, await cursor.fetchone())
            async with conn.execute(
                "SELECT MIN(seq) FROM events WHERE messenger_id = ? AND published_at >= ?",
                (messenger_id, cutoff),
            ) as cursor:
                row = await cursor.fetchone()
            last = state.acked_seq
            if row is not None and row[0] is not None:
                last = min(last, int(row[0]) - 1)
            last = min(last, state.floor_seq + max_rows - 1)
            if last < state.floor_seq:
                return None
            await conn.execute(
                "DELETE FROM events WHERE messenger_id = ? AND seq <= ?", (messenger_id, last)
            )
            await conn.execute(
                "UPDATE sequences SET floor_seq = ? WHERE messenger_id = ?",
                (last + 1, messenger_id),
            )
        return last + 1


# --- transactions on the writer thread (Database.run) -------------------------------------------


def _publish(
    conn: sqlite3.Connection, events: Sequence[ContractTerminated], published_at: datetime
) -> tuple[PublishResult, set[str]]:
    ids = sorted({e.event_id for e in events})
    known = {
        row["event_id"]: row_identity(row)
        for row in conn.execute(
            f"SELECT {KNOWN_EVENTS_COLUMNS} "
            f"FROM events WHERE event_id IN ({_placeholders(len(ids))})",
            ids,
        )
    }
    fresh, duplicates = split_fresh(events, known)
    messengers = sorted({e.messenger_id for e in fresh})
    if not fresh:
        return PublishResult(accepted=0, duplicates=duplicates), set()
    heads = {
        row["messenger_id"]: int(row["head_seq"])
        for row in conn.execute(
            "SELECT messenger_id, head_seq FROM sequences "
            f"WHERE messenger_id IN ({_placeholders(len(messengers))})",
            messengers,
        )
    }
    published = to_iso(published_at)
    rows: list[tuple[Any, ...]] = []
    for event in fresh:
        seq = heads.get(event.messenger_id, 0) + 1
        heads[event.messenger_id] = seq
        assert event.occurred_at is not None
        rows.append(
            (
                event.messenger_id,
                seq,
                event.event_id,
                event.operator_id,
                event.phone_number,
                event.identification_code,
                int(event.reason),
                to_iso(event.occurred_at),
                event.recipient_operator_id,
                published,
                event.trace_id,
            )
        )
    conn.executemany(
        "INSERT INTO sequences (messenger_id, head_seq) VALUES (?, ?) "
        "ON CONFLICT (messenger_id) DO UPDATE SET head_seq = excluded.head_seq",
        [(m, heads[m]) for m in messengers],
    )
    conn.executemany(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({_placeholders(11)})", rows)
    failpoint("notifier.publish.before_commit")
    return PublishResult(accepted=len(fresh), duplicates=duplicates), set(messengers)


def _ack(
    conn: sqlite3.Connection,
    messenger_id: str,
    up_to_seq: int,
    acked_at: datetime,
    late_if_published_before: datetime,
) -> tuple[SequenceState, int]:
    state = sequence_state(messenger_id, conn.execute(_STATE_SQL, (messenger_id,)).fetchone())
    state.check_ack(up_to_seq)
    if up_to_seq <= state.acked_seq:
        return state, 0
    span = (messenger_id, state.acked_seq, up_to_seq)
    row = conn.execute(
        "SELECT COUNT(*) FROM events WHERE messenger_id = ? AND seq > ? AND seq <= ? "
        "AND published_at < ?",
        (*span, to_iso(late_if_published_before)),
    ).fetchone()
    late = int(row[0]) if row else 0
    conn.execute(
        "UPDATE events SET acked_at = ? WHERE messenger_id = ? AND seq > ? AND seq <= ?",
        (to_iso(acked_at), *span),
    )
    conn.execute(
        "UPDATE sequences SET acked_seq = ?, late_deliveries = late_deliveries + ? "
        "WHERE messenger_id = ?",
        (up_to_seq, late, messenger_id),
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
