"""The notifier's store port: what the service layer needs from a store, whatever the engine.

Adapters: store.SqliteNotifierStore (SQLite, one process writes at a time) and
store_pg.PgNotifierStore (PostgreSQL, several replicas on one database). Both pass the same
tests (tests/notifier, parametrised by engine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from services.notifier.domain import (
    ContractTerminated,
    OldestUnacked,
    PublishResult,
    SequenceState,
    StoredEvent,
)

# Called with the messengers that may have new events; an empty list: any messenger may have.
Wake = Callable[[list[str]], None]


class NotifierStore(Protocol):
    async def publish(
        self, events: Sequence[ContractTerminated], published_at: datetime
    ) -> tuple[PublishResult, set[str]]:
        """Store the new events of a batch in one transaction, each new event with the next seq
        of its messenger (gap-free and in commit order, whichever replica publishes); the
        messengers that got events. An id already stored for the same event is a duplicate; for
        a different event, EventIdConflict and nothing is stored."""
        ...

    async def state(self, messenger_id: str) -> SequenceState: ...

    async def read_after(
        self, messenger_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]: ...

    async def ack(
        self,
        messenger_id: str,
        up_to_seq: int,
        acked_at: datetime,
        late_if_published_before: datetime,
    ) -> tuple[SequenceState, int]:
        """Move the acked position to up_to_seq if higher (AckBeyondHead past the head); the
        state after, and how many newly acknowledged events were published before the time."""
        ...

    async def published_at(self, messenger_id: str, seq: int) -> datetime | None: ...

    async def delivery_overview(self) -> list[tuple[SequenceState, datetime | None]]: ...

    async def oldest_unacked(self) -> list[OldestUnacked]: ...

    async def prune(self, published_before: datetime, max_rows: int) -> dict[str, int]:
        """Delete each messenger's acknowledged events published before the cutoff (a prefix:
        no hole opens); the new floors."""
        ...

    def publications(self, wake: Wake) -> AbstractAsyncContextManager[None]:
        """While the block runs, call wake(messenger_ids) when another process (a replica)
        commits events; a no-op where no other process can write."""
        ...
