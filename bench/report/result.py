"""Reading a run's result (bench.report.jsonfile): its passes, its failures."""

from __future__ import annotations

import math
from typing import Any

from bench.config import SQLITE


def passes(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(engine, its scenarios, the scenarios it ran) of each pass of the run, SQLite first
    (a result from before the PostgreSQL passes has the SQLite pass only)."""
    engines = result["config"].get("engines", [SQLITE])
    out = []
    if SQLITE in engines:
        out.append((SQLITE, result["scenarios"], tuple(result["config"]["scenarios"])))
    for engine, run in (result.get("postgresql") or {}).items():
        out.append((engine, run["scenarios"], tuple(run["config"]["scenarios"])))
    return out


def failed(result: dict[str, Any]) -> list[str]:
    """engine/scenario of every scenario that failed, over every pass."""
    return [
        f"{engine}/{name}"
        for engine, scenarios, _ran in passes(result)
        for name, scenario in scenarios.items()
        if scenario.get("status") == "failed"
    ]


def ok(scenario: dict[str, Any]) -> bool:
    return scenario.get("status") == "ok"


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)
