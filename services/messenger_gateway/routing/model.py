"""The routing feature's values: the ported-numbers table's rows and an import's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# --- the ported-numbers table ----------------------------------------------------------------


class RouteOrigin(StrEnum):
    """Where a ported-numbers row came from."""

    IMPORT = "import"  # the messenger's copy of the central database of ported numbers
    HINT = "hint"  # a donor operator's hint, remembered


@dataclass(frozen=True, slots=True)
class PortedNumber:
    phone_number: str  # E.164
    operator_id: str  # the recipient, now serving the number
    ported_at: datetime
    origin: RouteOrigin = RouteOrigin.IMPORT


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    imported: int  # rows stored (new numbers, or a later porting date than the stored one)
    rejected: int  # invalid rows
    errors: tuple[RowError, ...]  # the first MAX_ROW_ERRORS of them, by line
    committed: bool  # False: all-or-nothing and a row was invalid, so nothing was stored
    unchanged: int = 0  # valid rows not stored: the table already had a later porting date
