"""What the bulk imports share: the line number a client gives each row, checked at the edge.

A row's `line` (uint64 on the wire) is stored with the staged row and echoed in the report; it
must fit a signed 64-bit INTEGER (SQLite's, PostgreSQL's bigint), so larger values are refused
before any work as InvalidInput naming the field.
"""

from __future__ import annotations

from typing import Final

from services.common.errors import InvalidInput

MAX_LINE: Final = 2**63 - 1


def checked_line(line: int, *, field: str) -> int:
    """line itself, or InvalidInput naming `field` when no store can hold it."""
    if not 0 <= line <= MAX_LINE:
        raise InvalidInput(
            f"{field} {line} is not a line number: give the row's line in the file, "
            f"at most {MAX_LINE}"
        )
    return line
