"""The table of targets as text (what `python -m bench` prints) and its cells, which the
markdown table shares."""

from __future__ import annotations

import math
from typing import Any

from bench.report.result import finite


def num(value: Any, digits: int = 1) -> str:
    """A figure for a table: "-" when absent, "n/a" when NaN, whole from 100 up."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int | float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def result_cell(row: dict[str, Any]) -> str:
    status: str = row["status"]
    if status != "ok":
        return status
    if row["met"] is None:
        return "-"
    return "met" if row["met"] else "MISSED"


def cells(row: dict[str, Any]) -> list[str]:
    """A target row's cells, in the order of HEADER."""
    value = f"{num(row['value'])} {row['unit']}".strip() if finite(row["value"]) else "n/a"
    if row["value"] is None:
        value = "-"
    baseline = (
        f"{num(row['baseline'])} ({row['baseline_name']})"
        if row["baseline"] is not None
        else (row["baseline_name"] or "-")
    )
    ratio = f"{num(row['ratio'], 2)}x" if finite(row["ratio"]) else "-"
    engine = row.get("engine", "SQLite")
    return [row["name"], engine, value, baseline, ratio, row["target"] or "-", result_cell(row)]


HEADER = ["figure", "engine", "value", "baseline (same run)", "ratio", "target", "result"]


def text_table(result: dict[str, Any]) -> str:
    rows = [HEADER, *(cells(r) for r in result["targets"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
