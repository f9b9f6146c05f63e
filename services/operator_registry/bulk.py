"""Bulk import of contracts (RegistryAdminService.ImportSubscribers): row checks and the use case.

Rows come in batches from a stream and are never all held in memory. Each batch is checked row
by row (a mobile number, a contract id, an activation time) and staged (import_store); when the
stream ends, duplicates within the file and conflicts with existing contracts are found over
the staged rows, and the good rows are merged into the contracts table:

- IMPORT_MODE_ALL_OR_NOTHING: one invalid or conflicting row and nothing is committed; otherwise
  every row is committed in one transaction.
- IMPORT_MODE_VALID_ROWS: the good rows are committed, the others reported. A small import (next
  to the table) commits in chunks of MERGE_CHUNK_ROWS, one transaction each, so that
  verifications are answered in between; a large one in one transaction.

Nothing is committed before the whole stream has arrived: a stream broken off commits nothing.
A large import (REBUILD_MIN_ROWS rows or more, and at least as many as the table holds) drops the
contracts table's secondary indexes and builds them again in its transaction (a sort instead of
millions of random index insertions). While a merge transaction runs, this registry's other
writes (verifications that bind, terminations) wait for it; they are not refused.

A number or contract id on several rows: the first row counts, each later one is reported as a
duplicate of it. A number with an active contract, or a contract id that exists, is a conflict.
The report lists the first MAX_REPORTED_ERRORS problems by line and counts all of them.

Numbers: services.common.phone.parse_mobile takes ~60 us a row (10M rows: ten minutes). Rows
already in the E.164 form +7XXXXXXXXXX take a fast path with the same answers: whether such a
number is a valid mobile number depends only on its first 6 national digits, so parse_mobile's
verdict is cached per "+7" and 6-digit prefix (services.common.phone.PrefixVerdicts, where the
reason is explained and tested); every number that is not valid goes through parse_mobile itself
for its exact message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from prometheus_client import Counter

from services.common.errors import InvalidInput, quote
from services.common.logging import get_logger
from services.common.phone import PrefixVerdicts, mask, parse_mobile
from services.common.timeutil import Clock
from services.operator_registry.domain import validate_contract_id
from services.operator_registry.import_store import (
    ACTIVE_CONTRACT,
    CONTRACT_TAKEN,
    DUPLICATE_CONTRACT,
    DUPLICATE_NUMBER,
    StagedRow,
)
from services.operator_registry.ports import ImportStaging

log = get_logger("idmesh.operator_registry.bulk")

MAX_ROWS_PER_BATCH: Final = 10_000
MAX_REPORTED_ERRORS: Final = 1_000
MERGE_CHUNK_ROWS: Final = 50_000  # VALID_ROWS: rows per merge transaction
# An import at least this large, and at least as large as the table, rebuilds its indexes.
REBUILD_MIN_ROWS: Final = 200_000
EARLIEST_ACTIVATION: Final = datetime(1990, 1, 1, tzinfo=UTC)  # before: surely a data error
FUTURE_SLACK: Final = timedelta(minutes=5)  # clock skew allowed for "not in the future"
INVALID: Final = "invalid"  # the problem code of a row that failed the row checks

IMPORTED_ROWS = Counter(
    "idmesh_registry_import_rows",
    "Rows of bulk imports, by result: imported (committed) or rejected (reported).",
    ["result"],
)
IMPORTS = Counter(
    "idmesh_registry_imports",
    "Bulk imports finished, by mode and whether they committed.",
    ["mode", "committed"],
)


class ImportMode(StrEnum):
    ALL_OR_NOTHING = "all_or_nothing"
    VALID_ROWS = "valid_rows"


# One row as it arrives: (line, phone_number, contract_id, activated_at seconds since the epoch
# or None when missing, nanos).
RawRow = tuple[int, str, str, int | None, int]


@dataclass(frozen=True, slots=True)
class ImportBatch:
    mode: ImportMode | None  # None: unspecified (only the first batch's mode counts)
    rows: Sequence[RawRow]


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    mode: ImportMode
    imported: int
    rejected: int
    errors: tuple[RowProblem, ...]
    committed: bool


# --- row checks ---------------------------------------------------------------------------------


class MobileNumbers:
    """parse_mobile's answers, with its verdict cached per +7 prefix (PrefixVerdicts); one per
    import."""

    def __init__(self) -> None:
        self.check = PrefixVerdicts(parse_mobile)


_DAYS: dict[int, str] = {}
_WHOLE_SECONDS: dict[int, str] = {}  # files often repeat times (dates at midnight)


def activation_text(seconds: int, nanos: int) -> str:
    """services.common.timeutil.to_iso of the instant, without building a datetime per row."""
    if nanos == 0:
        text = _WHOLE_SECONDS.get(seconds)
        if text is None:
            text = _format_instant(seconds, 0)
            if len(_WHOLE_SECONDS) >= 100_000:
                _WHOLE_SECONDS.clear()
            _WHOLE_SECONDS[seconds] = text
        return text
    return _format_instant(seconds, nanos)


def _format_instant(seconds: int, nanos: int) -> str:
    day, rest = divmod(seconds, 86_400)
    date = _DAYS.get(day)
    if date is None:
        date = (datetime(1970, 1, 1) + timedelta(days=day)).date().isoformat()
        if len(_DAYS) < 100_000:
            _DAYS[day] = date
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return f"{date}T{hours:02d}:{minutes:02d}:{secs:02d}.{nanos // 1000:06d}+00:00"


class RowChecker:
    """Checks rows one by one: the number, the contract id and the activation time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._numbers = MobileNumbers()
        self._earliest = int(EARLIEST_ACTIVATION.timestamp())

    def check(self, rows: Sequence[RawRow]) -> list[StagedRow]:
        latest = int((self._clock.now() + FUTURE_SLACK).timestamp())
        numbers = self._numbers.check
        staged: list[StagedRow] = []
        append = staged.append
        for line, raw_phone, contract_id, seconds, nanos in rows:
            try:
                phone = numbers(raw_phone)
                validate_contract_id(contract_id)
                if seconds is None:
                    raise InvalidInput(
                        "activated_at is missing: give the time the contract came into force"
                    )
                if not self._earliest <= seconds <= latest or not 0 <= nanos < 1_000_000_000:
                    raise InvalidInput(_bad_activation(seconds, nanos))
            except InvalidInput as exc:
                append((line, None, None, None, INVALID, exc.message))
                continue
            append((line, phone, contract_id, activation_text(seconds, nanos), None, None))
        return staged


def _bad_activation(seconds: int, nanos: int) -> str:
    try:
        shown = datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        shown = f"{seconds} s since 1970"
    if not 0 <= nanos < 1_000_000_000:
        return f"activated_at has {nanos} nanoseconds: a time has 0 to 999999999"
    return (
        f"activated_at {shown} is not plausible: give a time between "
        f"{EARLIEST_ACTIVATION.date().isoformat()} and now"
    )


def describe(problem: str, detail: str | None, phone: str | None, contract_id: str | None) -> str:
    """The message a person reads for a staged row's problem."""
    if problem == DUPLICATE_NUMBER:
        return (
            f"phone_number {mask(phone or '')} is also on line {detail}: a number holds one "
            "contract; keep one of the rows"
        )
    if problem == DUPLICATE_CONTRACT:
        return f"contract_id {quote(contract_id)} is also on line {detail}: contract ids are unique"
    if problem == ACTIVE_CONTRACT:
        return (
            f"{mask(phone or '')} already has an active contract ({detail}): terminate it "
            "before importing another"
        )
    if problem == CONTRACT_TAKEN:
        return f"contract_id {quote(contract_id)} is already taken: choose another contract_id"
    return detail or problem


# --- the use case -------------------------------------------------------------------------------


class SubscriberImport:
    """One ImportSubscribers call."""

    def __init__(
        self,
        open_staging: Callable[[], ImportStaging],
        *,
        clock: Clock,
        merge_chunk_rows: int = MERGE_CHUNK_ROWS,
    ) -> None:
        self._open_staging = open_staging
        self._checker = RowChecker(clock)
        self._merge_chunk_rows = merge_chunk_rows

    async def run(self, batches: AsyncIterable[ImportBatch]) -> ImportOutcome:
        started = time.monotonic()
        mode: ImportMode | None = None
        staging = await self._open_staging().open()
        staging_batch: asyncio.Task[None] | None = None  # overlaps with checking the next one
        try:
            async for batch in batches:
                if mode is None:
                    mode = batch.mode or ImportMode.ALL_OR_NOTHING
                    log.info("import.started", mode=mode.value)
                if len(batch.rows) > MAX_ROWS_PER_BATCH:
                    raise InvalidInput(
                        f"a message holds {len(batch.rows)} rows: send at most "
                        f"{MAX_ROWS_PER_BATCH} rows per message; nothing was imported",
                        field="rows",
                    )
                if batch.rows:
                    checked = await asyncio.to_thread(self._checker.check, batch.rows)
                    if staging_batch is not None:
                        await staging_batch
                    staging_batch = asyncio.create_task(staging.stage(checked))
            if staging_batch is not None:
                await staging_batch
            mode = mode or ImportMode.ALL_OR_NOTHING
            staged_seconds = time.monotonic() - started
            await staging.mark_duplicates()
            await staging.mark_conflicts()
            _, rejected = await staging.counts()
            imported, committed = 0, False
            if rejected == 0 or mode is ImportMode.VALID_ROWS:
                imported, committed = await self._merge(staging, mode)
                _, rejected = await staging.counts()  # with conflicts found while merging
            problems = await staging.problems(MAX_REPORTED_ERRORS)
        finally:
            if staging_batch is not None:
                staging_batch.cancel()
                await asyncio.wait({staging_batch})
                if not staging_batch.cancelled():
                    staging_batch.exception()  # retrieved: the first error is what we raise
            await staging.close()
        outcome = ImportOutcome(
            mode=mode,
            imported=imported,
            rejected=rejected,
            errors=tuple(
                RowProblem(line, describe(problem, detail, phone, contract_id))
                for line, problem, detail, phone, contract_id in problems
            ),
            committed=committed,
        )
        IMPORTED_ROWS.labels(result="imported").inc(imported)
        IMPORTED_ROWS.labels(result="rejected").inc(rejected)
        IMPORTS.labels(mode=mode.value, committed=str(committed).lower()).inc()
        elapsed = time.monotonic() - started
        log.info(
            "import.finished",
            mode=mode.value,
            rows=staging.staged,
            imported=imported,
            rejected=rejected,
            committed=committed,
            staged_seconds=round(staged_seconds, 3),
            seconds=round(elapsed, 3),
            rows_per_second=round(staging.staged / elapsed) if elapsed > 0 else None,
        )
        return outcome

    async def _merge(self, staging: ImportStaging, mode: ImportMode) -> tuple[int, bool]:
        """(rows inserted, committed)."""
        good, _ = await staging.counts()
        large = good >= max(REBUILD_MIN_ROWS, await staging.count_contracts())
        if mode is ImportMode.ALL_OR_NOTHING or large:
            for _attempt in range(3):
                inserted = await staging.merge_all(rebuild_indexes=large)
                if inserted is not None:
                    return inserted, True
                # A contract created meanwhile conflicts with a row (now marked).
                log.warning("import.conflict_while_merging", mode=mode.value)
                if mode is ImportMode.ALL_OR_NOTHING:
                    return 0, False
            raise RuntimeError("contracts kept conflicting with the import while it merged")
        inserted = 0
        for low in range(0, staging.staged, self._merge_chunk_rows):
            inserted += await staging.merge_chunk(low, low + self._merge_chunk_rows)
        return inserted, True
