"""`idmesh registry import`: stream a subscribers CSV to a registry, with a progress bar.

The file is read as a stream (memory stays flat whatever its size) and sent in batches of
`--batch` rows (ImportSubscribersRequest). Format, UTF-8, a header line required:

    phone_number,contract_id,activated_at
    +79031234567,BEE-0001,2024-01-15
    +79051112233,BEE-0002,2024-02-01T09:30:00+03:00

activated_at is a date (midnight UTC) or an RFC 3339 time with an offset. Rows the CLI cannot
read (a wrong number of fields, an unreadable time) are sent without activated_at, so that the
registry rejects them too (an all-or-nothing import then commits nothing), and their errors carry
the CLI's explanation. The registry commits only once the whole file has arrived, so an import
broken off half-way (Ctrl-C, a bad byte) commits nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from idmesh.registry.v1 import registry_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

COLUMNS: Final = ("phone_number", "contract_id", "activated_at")
MAX_BATCH: Final = 10_000  # the registry's limit per message
MAX_LOCAL_ERRORS: Final = 1_000


class CsvError(Exception):
    """The file cannot be imported at all (no header, wrong columns, not UTF-8)."""


@lru_cache(maxsize=65_536)
def parse_activated_at(text: str) -> tuple[int, int]:
    """(seconds, nanos) since the epoch of a date (midnight UTC) or an RFC 3339 time with an
    offset; ValueError with a message a person can act on."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"activated_at {value[:40]!r} is not a date: give YYYY-MM-DD or an RFC 3339 time "
            "such as 2024-01-15T09:30:00+03:00"
        ) from None
    if parsed.tzinfo is None:
        if len(value) != 10:
            raise ValueError(
                f"activated_at {value[:40]!r} has no UTC offset: add one (Z, +03:00) or give "
                "a date alone"
            )
        parsed = parsed.replace(tzinfo=UTC)
    seconds = int(parsed.timestamp() // 1)
    return seconds, parsed.microsecond * 1000


def count_data_lines(path: Path) -> int:
    """Lines after the header (for the progress bar's total); also proves the file is UTF-8
    before anything is sent."""
    if not path.is_file():
        raise CsvError(f"{path}: no such file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0
    last = b"\n"
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = newlines + chunk[: exc.start].count(b"\n") + 1
                raise CsvError(
                    f"{path}: not UTF-8 at byte {offset + exc.start} (line {line}): save the "
                    "file as UTF-8"
                ) from None
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
            offset += len(chunk)
    lines = newlines + (0 if last == b"\n" else 1)
    return max(0, lines - 1)


@dataclass
class Reader:
    """The CSV's rows as SubscriberRow batches; counts rows, keeps the CLI's own row errors."""

    path: Path
    batch: int
    mode: registry_pb2.ImportMode
    rows: int = 0
    local_errors: dict[int, str] = field(default_factory=dict)

    def batches(self) -> Iterator[registry_pb2.ImportSubscribersRequest]:
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            order = self._header(next(reader, None))
            phone_i, contract_i, activated_i = order
            request = registry_pb2.ImportSubscribersRequest(mode=self.mode)
            add = request.rows.add
            for record in reader:
                line = reader.line_num
                if not record:
                    continue  # a blank line
                self.rows += 1
                if len(record) != len(COLUMNS):
                    self._local(line, f"expected {len(COLUMNS)} fields, got {len(record)}")
                    add(line=line, phone_number="", contract_id="")
                else:
                    row = add(
                        line=line,
                        phone_number=record[phone_i].strip(),
                        contract_id=record[contract_i].strip(),
                    )
                    try:
                        seconds, nanos = parse_activated_at(record[activated_i])
                    except ValueError as exc:
                        self._local(line, str(exc))
                    else:
                        row.activated_at.seconds = seconds
                        row.activated_at.nanos = nanos
                if len(request.rows) >= self.batch:
                    yield request
                    request = registry_pb2.ImportSubscribersRequest(mode=self.mode)
                    add = request.rows.add
            if request.rows or self.rows == 0:
                yield request

    def check_header(self) -> None:
        """Refuse a file without the header before anything is sent (an error raised while
        the stream is being sent only cancels the call)."""
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            self._header(next(csv.reader(f), None))

    def _header(self, header: list[str] | None) -> tuple[int, int, int]:
        if header is None:
            raise CsvError(f"{self.path} is empty: the first line is the header {_HEADER}")
        names = [h.strip().lower() for h in header]
        if sorted(names) != sorted(COLUMNS):
            raise CsvError(
                f"{self.path}: the header is {','.join(header)!r}; expected the columns "
                f"{_HEADER} (in any order)"
            )
        return names.index(COLUMNS[0]), names.index(COLUMNS[1]), names.index(COLUMNS[2])

    def _local(self, line: int, message: str) -> None:
        if len(self.local_errors) < MAX_LOCAL_ERRORS:
            self.local_errors[line] = message


_HEADER: Final = ",".join(COLUMNS)


class RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


async def run_import(
    stub: Any, path: Path, *, valid_rows: bool, batch: int, quiet: bool = False
) -> dict[str, Any]:
    """Stream the file to the registry (stub: RegistryAdminServiceStub); the report."""
    total = await asyncio.to_thread(count_data_lines, path)
    mode = (
        registry_pb2.IMPORT_MODE_VALID_ROWS
        if valid_rows
        else registry_pb2.IMPORT_MODE_ALL_OR_NOTHING
    )
    reader = Reader(path, batch=batch, mode=mode)
    await asyncio.to_thread(reader.check_header)
    console = Console(stderr=True, quiet=quiet)
    started = time.monotonic()
    with progress_bar(console) as progress:
        task = progress.add_task(f"importing {path.name}", total=total or None)

        async def requests() -> AsyncIterator[registry_pb2.ImportSubscribersRequest]:
            for request in reader.batches():
                yield request
                progress.advance(task, len(request.rows))
            progress.update(task, description="checking and committing")

        reply = await stub.ImportSubscribers(requests())
    elapsed = time.monotonic() - started
    errors = []
    for error in reply.errors:
        errors.append(
            {"line": error.line, "message": reader.local_errors.get(error.line) or error.message}
        )
    return {
        "file": str(path),
        "rows": reader.rows,
        "imported": reply.imported,
        "rejected": reply.rejected,
        "committed": reply.committed,
        "mode": "valid-rows" if valid_rows else "all-or-nothing",
        "seconds": round(elapsed, 3),
        "rows_per_second": round(reader.rows / elapsed) if elapsed > 0 else None,
        "errors": errors,
    }


def print_report(
    report: dict[str, Any], *, show: int = 20, out: io.TextIOBase | None = None
) -> None:
    lines = [
        f"rows: {report['rows']}",
        f"imported: {report['imported']}",
        f"rejected: {report['rejected']}",
        f"committed: {report['committed']}",
        f"seconds: {report['seconds']} ({report['rows_per_second']} rows/s)",
    ]
    errors = report["errors"]
    lines += [f"  line {e['line']}: {e['message']}" for e in errors[:show]]
    more = report["rejected"] - min(show, len(errors))
    if more > 0:
        lines.append(f"  ... and {more} more (--json lists the first {len(errors)})")
    if not report["committed"] and report["rejected"]:
        lines.append("nothing was committed: fix the rows, or import with --valid-rows")
    print("\n".join(lines), file=out, flush=True)
