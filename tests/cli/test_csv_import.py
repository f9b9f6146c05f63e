"""The one CSV-import path of the CLI (services/cli/csv_import.py), without a mesh: headers,
line numbers, times, and what the CLI finds wrong before the service does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.cli.csv_import import CsvError, count_data_lines, read_rows
from services.cli.gateway import PORTED_NUMBERS_CSV
from services.cli.registry import SUBSCRIBERS_CSV
from services.common.timeutil import parse_time

REPO = Path(__file__).resolve().parents[2]


def ported_rows(text: str) -> list[Any]:
    return list(read_rows(text.splitlines(keepends=True), PORTED_NUMBERS_CSV))


def test_the_reader_keeps_line_numbers_and_finds_what_it_can() -> None:
    rows = ported_rows(
        "\ufeffphone_number,recipient_operator_id,ported_at\n"
        "+79035550101,megafon,2024-05-14\n"
        "\n"
        '"+7 903 555-01-02",mts,2024-06-01T09:30:00+03:00\n'
        "+79035550103,megafon\n"
        "+79035550104,megafon,14.05.2024\n"
        "+79035550105,megafon,2024-05-14T10:00:00\n"
        "+79035550106,megafon,\n"
    )
    assert [r.line for r in rows] == [2, 4, 5, 6, 7, 8]
    first, second, short, dotted, naive, empty = rows
    assert first.problem is None
    assert first.when == datetime(2024, 5, 14, tzinfo=UTC)
    assert second.fields["phone_number"] == "+7 903 555-01-02"
    assert second.when == datetime(2024, 6, 1, 6, 30, tzinfo=UTC)
    assert short.problem is not None and "expected 3 fields, got 2" in short.problem
    assert short.fields == {
        "phone_number": "+79035550103",
        "recipient_operator_id": "megafon",
        "ported_at": "",
    }
    assert dotted.problem is not None and "not a date" in dotted.problem
    assert naive.problem is not None and "time zone" in naive.problem
    assert (empty.problem, empty.when) == (None, None)  # the service says it is missing
    for bad in (short, dotted, naive):
        assert bad.when is None  # so the service rejects it too


def test_the_columns_may_come_in_any_order() -> None:
    [row] = read_rows(
        ["Contract_ID,activated_at,phone_number\n", "BEE-1,2024-01-15,+79031234567\n"],
        SUBSCRIBERS_CSV,
    )
    assert row.fields == {
        "contract_id": "BEE-1",
        "activated_at": "2024-01-15",
        "phone_number": "+79031234567",
    }
    assert row.when == datetime(2024, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("number,operator,date\n+79035550101,megafon,2024-05-14\n", "line 1: expected the header"),
        ("\n\n+79035550101,megafon,2024-05-14\n", "line 3: expected the header"),
    ],
)
def test_a_file_without_the_header_is_refused(text: str, problem: str) -> None:
    with pytest.raises(CsvError, match=problem):
        ported_rows(text)


def test_the_sample_ported_numbers_file_is_valid() -> None:
    rows = ported_rows((REPO / "deploy" / "demo" / "ported-numbers.csv").read_text())
    assert rows and all(r.problem is None for r in rows)


def test_a_file_that_is_not_utf8_is_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"phone_number,contract_id,activated_at\n+79061234567,X-\xe9,2024-01-01\n")
    with pytest.raises(CsvError, match=r"not UTF-8 .*line 2"):
        count_data_lines(path)


def test_times_are_dates_or_rfc3339_with_an_offset() -> None:
    assert parse_time("2024-01-15") == datetime(2024, 1, 15, tzinfo=UTC)
    assert parse_time("2024-01-15T03:00:00+03:00") == datetime(2024, 1, 15, tzinfo=UTC)
    assert parse_time("2024-01-15T00:00:00.25Z") == datetime(2024, 1, 15, 0, 0, 0, 250_000, UTC)
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("2024-01-15T10:00:00")
    with pytest.raises(ValueError, match=r"activated_at '15\.01\.2024' is not a date"):
        parse_time("15.01.2024", "activated_at")
    with pytest.raises(ValueError, match="is not a date"):
        parse_time("2024-13-01")
