"""The ported-numbers table's input: the CSV file format and the rules every row must meet.

The file is the messenger's copy of the central database of ported numbers, as CSV with a
header line:

    phone_number,recipient_operator_id,ported_at
    +79035550102,megafon,2024-05-14
    +79051230000,mts,2024-06-01T09:30:00+03:00

- phone_number: a mobile number, E.164 or any form phonenumbers reads with region RU;
- recipient_operator_id: the operator now serving the number (an idmesh operator id: lowercase
  letters, digits and '-'); it need not be configured at the gateway;
- ported_at: RFC 3339 with a time zone, or a date YYYY-MM-DD (midnight UTC); not in the future.

Blank lines are skipped; line numbers count every line of the file, the header being line 1.
The CLI reads the file (read_ported_csv) and streams the rows; the gateway checks each row
(validate_row) and reports the bad ones by line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from services.common.errors import InvalidInput, quote
from services.common.identity import validate_id
from services.common.phone import parse_mobile
from services.messenger_gateway.domain import PortedNumber, RouteOrigin

CSV_HEADER = ("phone_number", "recipient_operator_id", "ported_at")
MAX_ROWS_PER_BATCH = 10_000
MAX_ROW_ERRORS = 1_000


class PortedCsvError(ValueError):
    """The file cannot be read as a ported-numbers CSV at all (for example a wrong header)."""


@dataclass(frozen=True, slots=True)
class PortedRowInput:
    """One row as received: unchecked text, and ported_at None when missing or unreadable."""

    line: int
    phone_number: str
    recipient_operator_id: str
    ported_at: datetime | None


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A row of the file; problem says what the CLI already found wrong with it."""

    row: PortedRowInput
    problem: str | None = None


def parse_ported_at(text: str) -> datetime:
    """RFC 3339 with a time zone, or YYYY-MM-DD (midnight UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"ported_at {quote(value)} is not a date: use YYYY-MM-DD or an RFC 3339 time "
            "such as 2024-05-14T10:00:00+03:00"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(
            f"ported_at {quote(value)} has no time zone: add one (such as Z or +03:00), or give "
            "only the date"
        )
    return parsed.astimezone(UTC)


def read_ported_csv(lines: Iterable[str]) -> Iterator[CsvRow]:
    """The rows of a ported-numbers CSV; PortedCsvError if the header is missing or wrong."""
    reader = csv.reader(lines)
    header_seen = False
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if not header_seen:
            got = tuple(f.strip().lower().lstrip("\ufeff") for f in fields)
            if got != CSV_HEADER:
                raise PortedCsvError(
                    f"line {line}: expected the header {','.join(CSV_HEADER)!r}, "
                    f"got {','.join(fields)[:120]!r}"
                )
            header_seen = True
            continue
        yield _csv_row(line, [f.strip() for f in fields])
    if not header_seen:
        raise PortedCsvError(f"the file is empty: expected the header {','.join(CSV_HEADER)!r}")


def _csv_row(line: int, fields: list[str]) -> CsvRow:
    padded = [*fields, "", "", ""][:3]
    if len(fields) != len(CSV_HEADER):
        return CsvRow(
            PortedRowInput(line, padded[0], padded[1], None),
            f"expected {len(CSV_HEADER)} fields ({','.join(CSV_HEADER)}), got {len(fields)}",
        )
    phone, recipient, raw_date = padded
    if not raw_date:
        return CsvRow(PortedRowInput(line, phone, recipient, None))  # the gateway says why
    try:
        ported_at = parse_ported_at(raw_date)
    except InvalidInput as exc:
        return CsvRow(PortedRowInput(line, phone, recipient, None), exc.message)
    return CsvRow(PortedRowInput(line, phone, recipient, ported_at))


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
