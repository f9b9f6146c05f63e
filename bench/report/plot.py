"""docs/benchmarks.png: throughput and p99 against concurrency, for each scenario that declares
what to plot of its levels (Scenario.plotted): the real services and their same-run baselines
on SQLite, the real services on each PostgreSQL pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config import SQLITE, engine_label
from bench.report.result import ok, passes
from bench.scenarios import ALL, Scenario


def plot(
    result: dict[str, Any], path: Path, scenarios_plotted: Sequence[Scenario] | None = None
) -> None:
    """The scenarios that declare what to plot (Scenario.plotted), of ALL unless given."""
    if scenarios_plotted is None:
        scenarios_plotted = [scenario for scenario in ALL if scenario.plotted]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["scenarios"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: list[tuple[str, list[int], list[float], list[float], str]] = []
    for declared in scenarios_plotted:
        key, label, kinds = declared.name, declared.title, dict(declared.plotted)
        scenario = s.get(key, {})
        for kind, kind_label in kinds.items() if ok(scenario) else ():
            levels = scenario["levels"]
            series.append(
                (
                    f"{label}: {kind_label}",
                    [lv["concurrency"] for lv in levels],
                    [lv[kind]["throughput"] for lv in levels],
                    [lv[kind]["latency"]["p99_ms"] for lv in levels],
                    "-" if kind == "mesh" else "--",
                )
            )
        # the real services on PostgreSQL (the baselines plotted: the SQLite pass's)
        for engine, scenarios, _ran in passes(result):
            pg = scenarios.get(key, {})
            if engine == SQLITE or not ok(pg):
                continue
            levels = pg["levels"]
            series.append(
                (
                    f"{label}: {kinds['mesh']}, {engine_label(engine)}",
                    [lv["concurrency"] for lv in levels],
                    [lv["mesh"]["throughput"] for lv in levels],
                    [lv["mesh"]["latency"]["p99_ms"] for lv in levels],
                    ":" if engine.endswith("x1") else "-.",
                )
            )
    ticks: set[int] = set()
    for label, xs, throughput, p99, style in series:
        left.plot(xs, throughput, style, marker="o", label=label)
        right.plot(xs, p99, style, marker="o", label=label)
        ticks.update(xs)
    for ax, title, unit in (
        (left, "throughput", "operations/s"),
        (right, "p99 latency", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ticks:
            ax.set_xticks(sorted(ticks), [str(x) for x in sorted(ticks)])
        ax.set_xlabel("concurrency (closed-loop clients)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    if series:
        left.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(
        f"idmesh bench {result['started_at']}: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
