"""The result of a run as JSON (bench/results/latest.json): everything measured. `scenarios`
holds the SQLite pass's, `postgresql` each PostgreSQL pass's (its config and scenarios, by
engine: "postgresql-x1", "postgresql-x2"), `targets` the rows of the table of targets
(bench.report.targets), `idle_cpu` each pass's idle mesh, `stores` each pass's store sizes
(bench.report.stores: the snapshots, bytes per row, rows written per operation), `profiles` the
py-spy summaries."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.report.targets import targets

SCHEMA = 1


def build(
    *,
    config: BenchConfig,
    machine: dict[str, Any],
    started_at: float,
    seconds: float,
    seed_seconds: float,
    scenarios: dict[str, Any],
    profiles: dict[str, Any],
    postgresql: dict[str, Any] | None = None,
    idle_cpu: dict[str, dict[str, float]] | None = None,
    stores: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    result = {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "seconds": round(seconds, 1),
        "seed_seconds": round(seed_seconds, 1),
        "machine": machine,
        "config": config.as_dict(),
        "scenarios": scenarios,
        "postgresql": postgresql or {},
        "idle_cpu": idle_cpu or {},
        "stores": stores or {},
        "profiles": profiles,
    }
    result["targets"] = targets(result)
    return result


def read_json(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def write_json(result: dict[str, Any], path: Path) -> None:
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=default, allow_nan=True) + "\n")
    tmp.replace(path)
