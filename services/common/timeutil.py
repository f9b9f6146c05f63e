"""Time: an injectable clock (UTC, aware datetimes) and protobuf Timestamp/Duration conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
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
