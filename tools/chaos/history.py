"""The run's record: every request and fault as one JSON line in history.jsonl."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass
class Record:
    """One request (kind "op") or fault (kind "fault") and what came of it.

    ok: the call succeeded (True), was refused with a definite status (False, with code), or its
    outcome is unknown (None: UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED; the write may or may
    not have happened). result holds what the reply said that the checker uses."""

    kind: str
    name: str
    round: int
    args: dict[str, Any]
    t0: float
    t1: float = 0.0
    ok: bool | None = None
    code: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Record:
        return cls(**json.loads(line))


class History:
    """Appends records to a JSON-lines file (flushed per record: a crash of the driver keeps
    what happened until then) and keeps them in memory for the checker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Record] = []
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._began = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self._began, 4)

    def begin(self, kind: str, name: str, round_no: int, **args: Any) -> Record:
        return Record(kind=kind, name=name, round=round_no, args=args, t0=self.now())

    def end(self, record: Record, ok: bool | None, code: str = "", **result: Any) -> Record:
        record.t1 = self.now()
        record.ok = ok
        record.code = code
        record.result = result
        self.records.append(record)
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        return record

    def note(self, name: str, round_no: int, **args: Any) -> Record:
        """A record with no outcome: the round's plan, a heal, a quiesce."""
        return self.end(self.begin("note", name, round_no, **args), True)

    def ops(self) -> Iterator[Record]:
        return (r for r in self.records if r.kind == "op")

    def close(self) -> None:
        self._file.close()


def load(path: Path) -> list[Record]:
    return [Record.from_json(line) for line in path.read_text().splitlines() if line.strip()]
