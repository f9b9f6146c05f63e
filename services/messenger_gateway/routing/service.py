"""Routing use cases: which operator serves a number, and the ported-numbers import."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidInput
from services.common.logging import get_logger
from services.common.phone import parse_mobile
from services.common.timeutil import Clock
from services.messenger_gateway.identification.ports import (
    GatewayStore,
    NumberRouter,
    OperatorDirectory,
)
from services.messenger_gateway.routing.model import ImportOutcome, PortedNumber, RowError
from services.messenger_gateway.routing.ported import (
    MAX_ROW_ERRORS,
    MAX_ROWS_PER_BATCH,
    PortedRowInput,
    validate_row,
)
from services.messenger_gateway.routing.router import Route

log = get_logger("idmesh.gateway")


@dataclass(frozen=True, slots=True)
class PortedBatch:
    """One message of a ported-numbers import stream."""

    all_or_nothing: bool
    rows: Sequence[PortedRowInput]


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    phone_number: str
    route: Route
    configured: bool  # the gateway has the operator's registry address


class RoutingService:
    def __init__(
        self,
        *,
        store: GatewayStore,
        router: NumberRouter,
        operators: OperatorDirectory,
        clock: Clock,
    ) -> None:
        self._store = store
        self._router = router
        self._operators = operators
        self._clock = clock

    async def resolve_operator(self, phone_number: str) -> ResolvedRoute:
        phone = parse_mobile(phone_number)
        route = await self._router.resolve(phone)
        configured = bool(route.operator_id) and self._operators.knows(route.operator_id or "")
        return ResolvedRoute(phone, route, configured)

    async def import_ported_numbers(self, batches: AsyncIterable[PortedBatch]) -> ImportOutcome:
        """Check every row; stage the valid ones; when the stream ends store them (a number
        already in the table only with a later porting date), unless all_or_nothing (the first
        batch's) and a row was invalid. Nothing is stored if the stream fails."""
        import_id = uuid.uuid4().hex
        all_or_nothing: bool | None = None
        rejected = valid = 0
        errors: list[RowError] = []
        try:
            async for batch in batches:
                if all_or_nothing is None:
                    all_or_nothing = batch.all_or_nothing
                if len(batch.rows) > MAX_ROWS_PER_BATCH:
                    raise InvalidInput(
                        f"a batch has {len(batch.rows)} rows: send at most {MAX_ROWS_PER_BATCH} "
                        "rows per message",
                        field="rows",
                    )
                now = self._clock.now()
                good: list[tuple[int, PortedNumber]] = []
                for row in batch.rows:
                    try:
                        good.append((row.line, validate_row(row, now=now)))
                    except InvalidInput as exc:
                        rejected += 1
                        if len(errors) < MAX_ROW_ERRORS:
                            errors.append(RowError(row.line, exc.message))
                if good and not (all_or_nothing and rejected):
                    await self._store.stage_ported(import_id, good)
                valid += len(good)
            if all_or_nothing and rejected:
                outcome = ImportOutcome(0, rejected, tuple(errors), committed=False)
            else:
                imported = await self._store.commit_ported(import_id, self._clock.now())
                outcome = ImportOutcome(
                    imported, rejected, tuple(errors), committed=True, unchanged=valid - imported
                )
        finally:
            await asyncio.shield(self._store.discard_ported(import_id))
        log.info(
            "ported_numbers.imported",
            imported=outcome.imported,
            unchanged=outcome.unchanged,
            rejected=outcome.rejected,
            committed=outcome.committed,
            all_or_nothing=bool(all_or_nothing),
        )
        return outcome
