"""The bench's scenarios, a module each, in the order a pass runs them: each returns a plain
dict (JSON-ready) with its figures and their baselines, and declares its targets (spec.Target)
beside its code; bench.report.targets reads every pass's results through those declarations.

Every baseline is measured in the same run, right next to the figure it normalises, because the
machine is shared and noisy: only ratios carry from one run to the next.

    context         what the scenarios of a pass share (Context), CPU per operation, ratios
    sweep           the level sweep: a closed loop of the real server and its baselines at
                    each concurrency
    stores          read-only queries on the services' stores, and their sizes
    spec            Scenario and Target, what a scenario declares
    identification, verify, fanout, bulk_import, memory, policy, replication    the scenarios
"""

from __future__ import annotations

from bench.scenarios import (
    bulk_import,
    fanout,
    identification,
    memory,
    policy,
    replication,
    verify,
)
from bench.scenarios.context import BenchFailure, Context, idle_cpu
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.stores import snapshot_all

# In the order of bench.config.SCENARIOS: the order of the results and of the table's rows.
ALL: tuple[Scenario, ...] = (
    identification.SCENARIO,
    verify.SCENARIO,
    fanout.SCENARIO,
    bulk_import.SCENARIO,
    memory.SCENARIO,
    policy.SCENARIO,
    replication.SCENARIO,
)
BY_NAME = {scenario.name: scenario for scenario in ALL}

__all__ = [
    "ALL",
    "BY_NAME",
    "BenchFailure",
    "Context",
    "Scenario",
    "Target",
    "idle_cpu",
    "snapshot_all",
]
