"""The table of targets: for each pass and each scenario (bench.scenarios.ALL), a row per target
the scenario declares (bench.scenarios.spec.Target), read from the pass's results; a scenario
that should have run and did not gives one row saying so.

A row: the figure's name, engine, value and unit, the same-run baseline and what it is, the
ratio, the goal, whether this run met it (None: no goal), its status (a scenario that did not
run: "skipped", "failed", "pending") and the scenario that declares it."""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from bench.config import SQLITE, SQLITE_SCENARIOS, engine_label
from bench.report.result import finite, ok, passes
from bench.scenarios import ALL, Scenario, Target

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    ">": operator.gt,
}
# "{burst.terminations:,}" in a name: a path, then an optional format spec; "{path|text}": text
# when the result has no such path (a result written before the scenario recorded it)
FIELD = re.compile(r"\{([^{}:|]+)(?:\|([^{}:]*))?(?::([^{}]*))?\}")


def targets(result: dict[str, Any], scenarios: Sequence[Scenario] = ALL) -> list[dict[str, Any]]:
    """Every pass's rows, SQLite first. On SQLite every scenario of SQLITE_SCENARIOS has rows
    (or one saying it did not run); on PostgreSQL, the scenarios of its pass."""
    rows: list[dict[str, Any]] = []
    for engine, results, ran in passes(result):
        wanted = SQLITE_SCENARIOS if engine == SQLITE else ran
        for scenario in scenarios:
            got = results.get(scenario.name, {})
            if ok(got):
                found = list(scenario_rows(scenario, Scope(got, results)))
            elif scenario.name in wanted:
                found = [missing(scenario, got)]
            else:
                continue
            rows += (
                {"engine": engine_label(engine), **row, "scenario": scenario.name} for row in found
            )
    return rows


class Scope:
    """A scenario's result as targets read it: dotted paths, "top" for the level of the
    highest concurrency, "other:path" for another scenario of the same pass (when it ran)."""

    def __init__(self, result: Mapping[str, Any], others: Mapping[str, Any]) -> None:
        self.result = result
        self.others = others

    def at_level(self, level: Mapping[str, Any]) -> Scope:
        return Scope({**self.result, "level": level}, self.others)

    def levels(self) -> list[Mapping[str, Any]]:
        levels: list[Mapping[str, Any]] = self.result.get("levels", [])
        return levels

    def get(self, path: str) -> Any:
        node: Any = self.result
        scenario, sep, rest = path.partition(":")
        if sep:
            node = self.others.get(scenario, {})
            if not ok(node):
                return None
            path = rest
        for key in path.split("."):
            if isinstance(node, list) and key == "top":
                node = max(node, key=lambda level: level["concurrency"]) if node else None
            elif isinstance(node, Mapping) and key in node:
                node = node[key]
            else:
                return None
        return node

    def format(self, template: str) -> str:
        """The template with each {path}, {path:spec} or {path|default} field filled in."""

        def fill(match: re.Match[str]) -> str:
            value = self.get(match[1])
            if value is None:
                if match[2] is None:
                    raise KeyError(f"{template!r}: the result has no {match[1]!r}")
                return match[2]
            return format(value, match[3] or "")

        return FIELD.sub(fill, template)


def scenario_rows(scenario: Scenario, scope: Scope) -> Iterator[dict[str, Any]]:
    """The rows of a scenario that ran: its targets in the order declared; consecutive targets
    declared each_level, level by level."""
    for each_level, group in itertools.groupby(scenario.targets, lambda t: t.each_level):
        declared = list(group)
        scopes = [scope.at_level(level) for level in scope.levels()] if each_level else [scope]
        for at in scopes:
            for target in declared:
                if (row := _row(target, at)) is not None:
                    yield row


def _row(target: Target, scope: Scope) -> dict[str, Any] | None:
    """A target's row, None when the result has no such figure and the target is optional."""
    value = scope.get(target.figure)
    if value is None and target.optional:
        return None
    baseline = scope.get(target.baseline) if target.baseline is not None else None
    exact = value / baseline if is_number(value) and baseline else None
    if target.ratio is not None:
        ratio = scope.get(target.ratio)  # the scenario's own
    else:
        ratio = round(exact, 3) if exact is not None else None
    met: bool | None = None
    if target.op:
        measured: Any = value
        if target.against == "ratio":  # the scenario's ratio, else the unrounded one
            measured = ratio if target.ratio is not None else exact
        met = finite(measured) and COMPARE[target.op](float(measured), target.threshold)
    return {
        "name": scope.format(target.name),
        "value": value,
        "unit": target.unit,
        "baseline": baseline,
        "baseline_name": scope.format(target.baseline_name),
        "ratio": ratio,
        "target": target.goal,
        "met": met,
        "status": "ok",
    }


def is_number(value: Any) -> bool:
    """A number (NaN included, as the ratio of a NaN is NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def missing(scenario: Scenario, result: Mapping[str, Any]) -> dict[str, Any]:
    """The row of a scenario that should have run and did not: its status and why."""
    return {
        "name": scenario.title,
        "value": None,
        "unit": "",
        "baseline": None,
        "baseline_name": result.get("reason", ""),
        "ratio": None,
        "target": "",
        "met": None,
        "status": result.get("status", "skipped"),
    }
