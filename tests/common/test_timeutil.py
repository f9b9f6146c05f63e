"""Request Timestamps and line numbers are checked in one place: out of range is InvalidInput
naming the field, never a ValueError or an OverflowError further in."""

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidInput
from services.common.rows import MAX_LINE, checked_line
from services.common.timeutil import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    from_timestamp,
    to_timestamp,
)


def test_a_timestamp_converts_to_an_aware_utc_datetime() -> None:
    value = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert from_timestamp(to_timestamp(value) or Timestamp(), field="since") == value


def test_the_edges_of_the_timestamp_range_are_accepted() -> None:
    first = from_timestamp(Timestamp(seconds=MIN_TIMESTAMP_SECONDS), field="since")
    last = from_timestamp(
        Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999), field="since"
    )
    assert first == datetime(1, 1, 1, tzinfo=UTC)
    assert last == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, -1),
        (0, 1_000_000_000),
        (2**40, 0),
        (MAX_TIMESTAMP_SECONDS + 1, 0),
        (MIN_TIMESTAMP_SECONDS - 1, 0),
        (-(2**63), 0),
        (2**63 - 1, 0),
    ],
)
def test_a_timestamp_out_of_range_is_invalid_input_naming_the_field(
    seconds: int, nanos: int
) -> None:
    with pytest.raises(InvalidInput, match=r"^rows\[3\]\.ported_at is not a valid time"):
        from_timestamp(Timestamp(seconds=seconds, nanos=nanos), field="rows[3].ported_at")


def test_line_numbers_up_to_the_largest_signed_64_bit_integer_are_accepted() -> None:
    assert checked_line(0, field="rows[0].line") == 0
    assert checked_line(MAX_LINE, field="rows[0].line") == 2**63 - 1


@pytest.mark.parametrize("line", [2**63, 2**64 - 1, -1])
def test_a_line_number_no_store_can_hold_is_invalid_input_naming_the_field(line: int) -> None:
    with pytest.raises(InvalidInput, match=r"^rows\[0\]\.line "):
        checked_line(line, field="rows[0].line")
