"""Streaming a CSV file to an import RPC, one path for every import (`idmesh registry import`:
subscribers' contracts; `idmesh gateway import-ported`: the ported-numbers table).

A file is UTF-8 with a header line naming its columns (in any order, case-insensitive), e.g.

    phone_number,contract_id,activated_at
    +79031234567,BEE-0001,2024-01-15
    +79051112233,BEE-0002,2024-02-01T09:30:00+03:00

The column names are the field names of the import's row message. One column is a time: a
date (midnight UTC) or an RFC 3339 time with an offset. Blank lines are skipped; line numbers
count every line of the file, the header being line 1.

The whole file is checked to be UTF-8 before anything is sent (memory stays flat whatever its
size), then sent in batches of `batch` rows with a progress bar on a terminal. Rows the CLI
cannot read (a wrong number of fields, an unreadable time) are sent without the time, so that
the service rejects them too (an all-or-nothing import then commits nothing), and their errors
carry the CLI's explanation. The service commits only once the whole file has arrived, so an
import broken off half-way (Ctrl-C) commits nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from google.protobuf.message import Message
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

from services.cli.command import Handler
from services.cli.connection import CliError, Target, connect
from services.common.timeutil import parse_time

MAX_BATCH: Final = 10_000  # the services' limit of rows per message
MAX_LOCAL_ERRORS: Final = 1_000


class CsvError(Exception):
    """The file cannot be imported at all (no header, wrong columns, not UTF-8)."""


@dataclass(frozen=True)
class CsvFormat:
    """An importable file: its columns (the row message's field names; `optional` ones may be
    left out of the header), the one read as a time (None: none), the import request (a
    function of all-or-nothing), and `convert`, which turns a row's texts into the row
    message's field values (the texts themselves by default)."""

    columns: tuple[str, ...]
    time_column: str | None
    new_request: Callable[[bool], Message]
    retry_hint: str  # how to commit the valid rows when an all-or-nothing import failed
    optional: tuple[str, ...] = ()
    convert: Callable[[dict[str, str]], dict[str, Any]] | None = None

    @property
    def header(self) -> str:
        return ",".join(self.columns + tuple(f"[{c}]" for c in self.optional))


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A row of the file: its text by column, its time (None when missing or unreadable), and
    what the CLI already found wrong with it."""

    line: int
    fields: dict[str, str]
    when: datetime | None
    problem: str | None = None


def read_rows(lines: Iterable[str], fmt: CsvFormat) -> Iterator[CsvRow]:
    """The rows of a file in fmt; CsvError if its header is missing or wrong."""
    reader = csv.reader(lines)
    order: list[str] | None = None
    for record in reader:
        line = reader.line_num
        if not any(f.strip() for f in record):
            continue
        if order is None:
            order = _header(line, record, fmt)
            continue
        yield _row(line, [f.strip() for f in record], order, fmt)
    if order is None:
        raise CsvError(f"the file is empty: the first line is the header {fmt.header!r}")


def _header(line: int, record: list[str], fmt: CsvFormat) -> list[str]:
    names = [f.strip().lower().lstrip("\ufeff") for f in record]
    known = set(fmt.columns) | set(fmt.optional)
    if len(set(names)) != len(names) or not set(fmt.columns) <= set(names) <= known:
        raise CsvError(
            f"line {line}: expected the header {fmt.header!r} (the columns in any order), "
            f"got {','.join(record)[:120]!r}"
        )
    return names


def _row(line: int, values: list[str], order: list[str], fmt: CsvFormat) -> CsvRow:
    fields = dict(zip(order, [*values, *[""] * len(order)], strict=False))
    if len(values) != len(order):
        problem = f"expected {len(order)} fields, got {len(values)} ({fmt.header})"
        return CsvRow(line, fields, None, problem)
    if fmt.time_column is None:
        return CsvRow(line, fields, None)
    raw = fields[fmt.time_column]
    if not raw:
        return CsvRow(line, fields, None)  # the service says it is missing
    try:
        return CsvRow(line, fields, _parse_time(raw, fmt.time_column))
    except ValueError as exc:
        return CsvRow(line, fields, None, str(exc))


@lru_cache(maxsize=65_536)
def _parse_time(text: str, name: str) -> datetime:
    return parse_time(text, name)  # files repeat their dates: parse each once


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
class Upload:
    """The file's rows as import requests of `batch` rows; counts the rows and keeps the CLI's
    own row errors."""

    path: Path
    fmt: CsvFormat
    batch: int
    all_or_nothing: bool
    rows: int = 0
    local_errors: dict[int, str] = field(default_factory=dict)

    def check_header(self) -> None:
        """Refuse a file without the header before anything is sent (an error raised while
        the stream is being sent only cancels the call)."""
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            next(read_rows(f, self.fmt), None)

    def requests(self) -> Iterator[Any]:
        fmt = self.fmt
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            request: Any = fmt.new_request(self.all_or_nothing)
            for row in read_rows(f, fmt):
                self.rows += 1
                if row.problem and len(self.local_errors) < MAX_LOCAL_ERRORS:
                    self.local_errors[row.line] = row.problem
                values = {k: v for k, v in row.fields.items() if k != fmt.time_column}
                item = request.rows.add(line=row.line, **(fmt.convert or dict)(values))
                if row.when is not None and fmt.time_column is not None:
                    getattr(item, fmt.time_column).FromDatetime(row.when)
                if len(request.rows) >= self.batch:
                    yield request
                    request = fmt.new_request(self.all_or_nothing)
            if request.rows or self.rows == 0:
                yield request

    def explain(self, line: int, message: str) -> str:
        """The service's error for a row, with what the CLI found wrong with it: the CLI's
        reason replaces the service's complaint about the time the CLI left out."""
        local = self.local_errors.get(line)
        if not local:
            return message
        time_column = self.fmt.time_column
        if (time_column and message.startswith(time_column)) or local.startswith("expected "):
            return local
        return f"{message}; {local}"


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


async def stream_file(
    send: Callable[[AsyncIterator[Any]], Awaitable[Any]],
    upload: Upload,
    *,
    quiet: bool,
    doing: str,
    finishing: str,
) -> tuple[Any, float]:
    """Stream upload's file through send with a progress bar on stderr (a terminal only);
    the reply and the seconds it took."""
    path = upload.path
    total = await asyncio.to_thread(count_data_lines, path)
    try:
        await asyncio.to_thread(upload.check_header)
    except CsvError as exc:
        raise CsvError(f"{path}: {exc}") from None
    console = Console(stderr=True, quiet=quiet)
    started = time.monotonic()
    with progress_bar(console) as progress:
        task = progress.add_task(f"{doing} {path.name}", total=total or None)

        async def requests() -> AsyncIterator[Any]:
            for request in upload.requests():
                yield request
                progress.advance(task, len(request.rows))
            progress.update(task, description=finishing)

        reply = await send(requests())
    return reply, time.monotonic() - started


async def run_import(
    send: Callable[[AsyncIterator[Any]], Awaitable[Any]],
    path: Path,
    fmt: CsvFormat,
    *,
    all_or_nothing: bool,
    batch: int,
    quiet: bool = False,
) -> dict[str, Any]:
    """Stream the file through send (the import RPC of a stub); the report."""
    upload = Upload(path, fmt, batch=batch, all_or_nothing=all_or_nothing)
    reply, elapsed = await stream_file(
        send, upload, quiet=quiet, doing="importing", finishing="checking and committing"
    )
    return {
        "file": str(path),
        "rows": upload.rows,
        "imported": reply.imported,
        # the gateway's reply counts rows the table already had; a registry has no such rows
        "unchanged": int(getattr(reply, "unchanged", 0)),
        "rejected": reply.rejected,
        "committed": reply.committed,
        "mode": "all-or-nothing" if all_or_nothing else "valid-rows",
        "seconds": round(elapsed, 3),
        "rows_per_second": round(upload.rows / elapsed) if elapsed > 0 else None,
        "errors": [
            {"line": e.line, "message": upload.explain(e.line, e.message)} for e in reply.errors
        ],
    }


def print_report(report: dict[str, Any], fmt: CsvFormat, *, show: int = 20) -> None:
    lines = [
        f"rows: {report['rows']}",
        f"imported: {report['imported']}",
        f"unchanged: {report['unchanged']}",
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
        lines.append(f"nothing was committed: fix the rows, or {fmt.retry_hint}")
    print("\n".join(lines), flush=True)


def import_command(
    target: Target,
    method: str,
    fmt: CsvFormat,
    *,
    all_or_nothing: Callable[[argparse.Namespace], bool],
    batch: Callable[[argparse.Namespace], int],
) -> Handler:
    """A command that streams the file args.file to target's import method and prints the
    report; exit status 0 when every row was committed."""

    async def handler(args: argparse.Namespace) -> int:
        async with connect(args, target) as stub:
            try:
                report = await run_import(
                    getattr(stub, method),
                    Path(args.file),
                    fmt,
                    all_or_nothing=all_or_nothing(args),
                    batch=batch(args),
                    quiet=args.json,
                )
            except CsvError as exc:
                raise CliError(str(exc)) from None
        if args.json:
            print(json.dumps(report, ensure_ascii=False), flush=True)
        else:
            print_report(report, fmt)
        return 0 if report["committed"] and report["rejected"] == 0 else 1

    return handler
