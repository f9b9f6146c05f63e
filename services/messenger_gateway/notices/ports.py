"""The notices feature's store port (the notices are applied by a transaction function over
the identification store's unit of work: identification.transactions.apply_notices)."""

from __future__ import annotations

from typing import Protocol


class NoticeStore(Protocol):
    async def notice_cursor(self, messenger_id: str) -> int: ...

    async def inbox_has(self, event_id: str) -> bool: ...
