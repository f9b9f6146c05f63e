"""The ported-numbers table's input: the rules every imported row must meet.

The table is the messenger's copy of the central database of ported numbers, imported in
batches of rows (the CLI reads them from CSV: services/cli/csv_import.py):

- phone_number: a mobile number, E.164 or any form phonenumbers reads with region RU;
- recipient_operator_id: the operator now serving the number (an idmesh operator id: lowercase
  letters, digits and '-'); it need not be configured at the gateway;
- ported_at: when the number moved; not in the future.

The gateway checks each row (validate_row) and reports the bad ones by line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.errors import InvalidInput
from services.common.identity import validate_id
from services.common.phone import parse_mobile
from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin

MAX_ROWS_PER_BATCH = 10_000
MAX_ROW_ERRORS = 1_000


@dataclass(frozen=True, slots=True)
class PortedRowInput:
    """One row as received: unchecked text, and ported_at None when missing or unreadable."""

    line: int
    phone_number: str
    recipient_operator_id: str
    ported_at: datetime | None


def validate_row(row: PortedRowInput, *, now: datetime) -> PortedNumber:
    """The stored form of a row, or InvalidInput saying what is wrong with it."""
    phone = parse_mobile(row.phone_number)
    if not row.recipient_operator_id:
        raise InvalidInput(
            "recipient_operator_id is empty: name the operator now serving the number"
        )
    recipient = validate_id(row.recipient_operator_id, "recipient_operator_id")
    if row.ported_at is None:
        raise InvalidInput("ported_at is missing: give the porting date (YYYY-MM-DD or RFC 3339)")
    if row.ported_at > now:
        raise InvalidInput(
            f"ported_at {row.ported_at.isoformat()} is in the future: only numbers already "
            "ported belong in the table"
        )
    return PortedNumber(phone, recipient, row.ported_at, RouteOrigin.IMPORT)
