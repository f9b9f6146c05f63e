"""What a scenario declares: its name, how it runs, and its targets.

A Target names a figure of the scenario's result (a path into its JSON), the same-run baseline
it is read against, and the goal; bench.report.targets turns each declaration into rows of the
table of targets, for every pass that ran the scenario. Paths are dotted keys into the
scenario's result ("burst.events_per_second"); in a list of levels, "top" is the level of the
highest concurrency ("levels.top.raw.throughput"); a target declared `each_level` gives a row per
level, the level read as "level" ("level.mesh.throughput"); "verify:levels.top.raw.throughput"
reads another scenario of the same pass. A row's name and baseline name may hold {path},
{path:format} and {path|default} fields ("fan-out: {burst.terminations:,} terminations").
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.config import BenchConfig

if TYPE_CHECKING:
    from bench.scenarios.context import Context

# The comparisons a goal can make; "" is a figure shown for information, with no goal.
OPS = (">=", "<=", "<", ">", "")


@dataclass(frozen=True, slots=True)
class Target:
    """One figure of a scenario, its same-run baseline and its goal."""

    name: str  # the row's name, with {path} fields
    figure: str  # path of the value
    unit: str
    op: str = ""  # of OPS: the goal is `figure-or-ratio op threshold`
    threshold: float = math.nan
    # what the goal applies to: the ratio to the baseline, or the value itself (an absolute goal)
    against: Literal["ratio", "value"] = "ratio"
    baseline: str | None = None  # path of the same-run baseline
    baseline_name: str = ""  # what the baseline is, with {path} fields
    ratio: str | None = None  # path of the ratio as the scenario computed it; else value/baseline
    goal_unit: str = ""  # after an absolute goal's threshold: "/s", " ms", " MB"
    each_level: bool = False  # a row per entry of the result's "levels", read as "level"
    optional: bool = False  # no row when the result has no such figure
    doc: str = ""  # what the figure is and why the goal, in a sentence

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target {self.name!r}: op {self.op!r} is not one of {OPS}")
        if self.op and math.isnan(self.threshold):
            raise ValueError(f"target {self.name!r}: a goal needs a threshold")
        if self.against == "ratio" and self.op and self.baseline is None:
            raise ValueError(f"target {self.name!r}: a goal on the ratio needs a baseline")

    @property
    def goal(self) -> str:
        """The goal as the table shows it: ">= 0.7x", "< 1,000 ms", "(none)"."""
        if not self.op:
            return "(none)"
        if self.against == "ratio":
            return f"{self.op} {self.threshold:g}x"
        return f"{self.op} {self.threshold:,.0f}{self.goal_unit}"


Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario of the bench: its key in the results (and in --only), the name of its row when
    it did not run, its targets, and how it runs: `run` in the pass's meshes, or `run_alone`
    with a mesh of its own once the pass's meshes have stopped."""

    name: str
    title: str
    targets: tuple[Target, ...]
    run: Callable[[Context], Awaitable[Result]] | None = None
    run_alone: Callable[[BenchConfig, Path], Awaitable[Result]] | None = None
    needs_gateways: bool = False  # the pass starts the gateways (and the notifier) for it
    # the plot's series of its levels, in order: (kind in each level, label); "mesh" first
    plotted: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if (self.run is None) == (self.run_alone is None):
            raise ValueError(f"scenario {self.name!r}: give one of run and run_alone")
        if not self.targets:
            raise ValueError(f"scenario {self.name!r} declares no target")
