"""The routing feature's store port: the ported-numbers table and its staged imports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.messenger_gateway.routing.model import PortedNumber


class PortedNumbersStore(Protocol):
    async def ported_number(self, phone_number: str) -> PortedNumber | None: ...

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool: ...

    async def stage_ported(
        self, import_id: str, rows: Sequence[tuple[int, PortedNumber]]
    ) -> None: ...

    async def commit_ported(self, import_id: str, now: datetime) -> int: ...

    async def discard_ported(self, import_id: str) -> None: ...
