"""Time: an injectable clock (UTC, aware datetimes) and protobuf Timestamp/Duration conversion.

A Timestamp from a request is checked here (from_timestamp): a value outside what a Timestamp
may hold (nanos outside 0..999,999,999, seconds outside years 1..9999 UTC) is the caller's
InvalidInput naming the field, never a ValueError deep in a handler.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, overload

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidInput

# The range of google.protobuf.Timestamp (timestamp.proto): 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z; also the range of a Python datetime.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def to_timestamp(value: datetime) -> Timestamp: ...
@overload
def to_timestamp(value: None) -> None: ...
@overload
def to_timestamp(value: datetime | None) -> Timestamp | None: ...


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: Timestamp, *, field: str = "timestamp") -> datetime:
    """The aware UTC datetime of ts; InvalidInput naming `field` when ts is out of range."""
    if not (
        0 <= ts.nanos < 1_000_000_000
        and MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS
    ):
        raise InvalidInput(
            f"{field} is not a valid time (seconds {ts.seconds}, nanos {ts.nanos}): give a time "
            "between years 1 and 9999 UTC, with nanos from 0 to 999999999"
        )
    return ts.ToDatetime(tzinfo=UTC)


def to_duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def to_iso(value: datetime) -> str:
    """The storage form: ISO 8601 in UTC with microseconds, which sorts as text."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def stored_time(value: str | datetime) -> datetime:
    """A time as a store returns it: ISO text from SQLite (to_iso), a datetime from PostgreSQL."""
    return value if isinstance(value, datetime) else from_iso(value)


def parse_time(text: str, name: str = "time") -> datetime:
    """A time as people write it in files and on command lines: an RFC 3339 time with a UTC
    offset, or a date YYYY-MM-DD (midnight UTC). ValueError naming `name` otherwise."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name} {value[:40]!r} is not a date: give YYYY-MM-DD or an RFC 3339 time "
            "such as 2024-01-15T09:30:00+03:00"
        ) from None
    if parsed.tzinfo is None:
        if any(mark in value.upper() for mark in "T :"):  # a time of day, not a date alone
            raise ValueError(
                f"{name} {value[:40]!r} has no UTC offset (time zone): add one (Z, +03:00) or "
                "give a date alone"
            )
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
