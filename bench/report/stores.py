"""The stores' sizes a pass measured, read as bytes per row and rows written per operation.

A pass takes a snapshot of every deployment's store (bench.scenarios.stores.snapshot) before
the scenarios ("start") and after each scenario that ran: each table's rows and bytes (its
indexes counted with it), and what lies on disk. From them:

- FIGURES: bytes per row of a named kind, either a store (or some of its tables) at one
  snapshot divided by a table's rows, or what a scenario added (bytes and rows from the
  snapshot before it to the one after it);
- WRITES: the rows each operation of a scenario added to every table of every store (net: an
  update or a delete that frees a row is not counted), per the rows of one table that counts
  the scenario's operations; times the scenario's throughput, its write rate.

Each derived figure names its deployment, snapshot, tables and rows; a figure the pass could not
measure (a scenario that did not run, no rows) is recorded as missing, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench import topology

START = "start"
REGISTRY = f"registry-{topology.SEEDED_OPERATOR}"
IMPORT_REGISTRY = f"registry-{topology.IMPORT_OPERATOR}"
GATEWAY = f"gateway-{topology.MESSENGERS[0]}"
NOTIFIER = "notifier"
PREFERENCE_TABLES = ("policy_sender_rules", "policy_unaccepted", "policy_automated_consents")


@dataclass(frozen=True, slots=True)
class StoreFigure:
    """Bytes per row: the bytes of `tables` (None: the whole store) over the rows of `per`, at
    the snapshot after `scenario` ("start": before any), or what the scenario added to both
    (growth)."""

    key: str
    name: str
    deployment: str
    per: tuple[str, ...]
    scenario: str
    tables: tuple[str, ...] | None = None
    growth: bool = False


FIGURES: tuple[StoreFigure, ...] = (
    StoreFigure(
        "registry_per_subscriber",
        "registry, per subscriber (the seeded contracts, with their bindings; the whole store)",
        REGISTRY,
        per=("contracts",),
        scenario=START,
    ),
    StoreFigure(
        "registry_per_binding",
        "registry, per binding (the bindings table)",
        REGISTRY,
        per=("bindings",),
        tables=("bindings",),
        scenario=START,
    ),
    StoreFigure(
        "registry_per_verification",
        "registry, per VerifySubscriber answer (what the calls added: answer and audit record)",
        REGISTRY,
        per=("verifications",),
        scenario="verify",
        growth=True,
    ),
    StoreFigure(
        "registry_per_outbox_event",
        "registry, per termination event (what the fan-out added: outbox rows)",
        REGISTRY,
        per=("outbox",),
        scenario="fanout",
        growth=True,
    ),
    StoreFigure(
        "registry_per_imported_row",
        "registry, per imported row (what ImportSubscribers added)",
        IMPORT_REGISTRY,
        per=("contracts",),
        scenario="import",
        growth=True,
    ),
    StoreFigure(
        "gateway_per_identified_user",
        "gateway, per identified user (the seeded identifications table)",
        GATEWAY,
        per=("identifications",),
        tables=("identifications",),
        scenario=START,
    ),
    StoreFigure(
        "gateway_per_identification",
        "gateway, per identification through the API (what the identifications added, "
        "the policy change log included)",
        GATEWAY,
        per=("identifications",),
        scenario="identification",
        growth=True,
    ),
    StoreFigure(
        "gateway_per_preference_row",
        "gateway, per preference row (the seeded rules, policies and consents tables)",
        GATEWAY,
        per=PREFERENCE_TABLES,
        tables=PREFERENCE_TABLES,
        scenario=START,
    ),
    StoreFigure(
        "gateway_per_notice",
        "gateway, per termination notice applied (what the fan-out added)",
        GATEWAY,
        per=("notice_inbox",),
        scenario="fanout",
        growth=True,
    ),
    StoreFigure(
        "notifier_per_event",
        "notifier, per event (the whole store after the fan-out)",
        NOTIFIER,
        per=("events",),
        scenario="fanout",
    ),
)


@dataclass(frozen=True, slots=True)
class Writes:
    """What a scenario's operations write: `deployment`.`table` gains a row per operation, and
    `throughput` (a path into the scenario's result) is the operations per second."""

    scenario: str
    operation: str
    deployment: str
    table: str
    throughput: str
    throughput_name: str


WRITES: tuple[Writes, ...] = (
    Writes(
        "identification",
        "identification",
        GATEWAY,
        "identifications",
        "levels.top.mesh.throughput",
        "identifications/s at the highest concurrency",
    ),
    Writes(
        "verify",
        "VerifySubscriber call",
        REGISTRY,
        "verifications",
        "levels.top.mesh.throughput",
        "calls/s at the highest concurrency",
    ),
    Writes(
        "fanout",
        "termination event",
        NOTIFIER,
        "events",
        "burst.events_per_second",
        "events/s end to end, TerminateContract burst",
    ),
    Writes(
        "import",
        "imported row",
        IMPORT_REGISTRY,
        "contracts",
        "rows_per_second",
        "rows/s through ImportSubscribers",
    ),
)


def derive(snapshots: Mapping[str, Any], scenarios: Mapping[str, Any]) -> dict[str, Any]:
    """The `stores` entry of a pass: its snapshots, the FIGURES and the WRITES read from them
    (scenarios: the pass's results, for the throughputs)."""
    return {
        "snapshots": dict(snapshots),
        "figures": [figure(f, snapshots) for f in FIGURES],
        "writes": [writes(w, snapshots, scenarios) for w in WRITES],
    }


def _before(snapshots: Mapping[str, Any], scenario: str) -> str | None:
    """The snapshot taken just before `scenario` ran (the one after the scenario before it)."""
    names = list(snapshots)
    if scenario not in names or names.index(scenario) == 0:
        return None
    return names[names.index(scenario) - 1]


def _bytes(store: Mapping[str, Any], tables: tuple[str, ...] | None) -> int:
    if tables is None:
        return int(store["bytes"])
    return sum(int(store["tables"].get(t, {}).get("bytes", 0)) for t in tables)


def _rows(store: Mapping[str, Any], tables: tuple[str, ...]) -> int:
    return sum(int(store["tables"].get(t, {}).get("rows", 0)) for t in tables)


def figure(f: StoreFigure, snapshots: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": f.key,
        "name": f.name,
        "deployment": f.deployment,
        "scenario": f.scenario,
        "growth": f.growth,
        "tables": list(f.tables) if f.tables is not None else "all",
        "per": list(f.per),
    }
    after = snapshots.get(f.scenario, {}).get(f.deployment)
    if after is None:
        return {**out, "missing": f"no snapshot of {f.deployment} after {f.scenario}"}
    tables = after["tables"]
    if f.tables is not None and any(t in tables and "bytes" not in tables[t] for t in f.tables):
        return {**out, "missing": f"no bytes per table of {f.deployment} after {f.scenario}"}
    rows, size = _rows(after, f.per), _bytes(after, f.tables)
    if f.growth:
        before_name = _before(snapshots, f.scenario)
        before = snapshots.get(before_name or "", {}).get(f.deployment)
        if before is None:
            return {**out, "missing": f"no snapshot of {f.deployment} before {f.scenario}"}
        rows -= _rows(before, f.per)
        size -= _bytes(before, f.tables)
        out["from"] = before_name
    if rows <= 0:
        return {**out, "missing": f"no {'/'.join(f.per)} rows added" if f.growth else "no rows"}
    disk = {k: after[k] for k in ("file_bytes", "database_bytes") if k in after}
    return {**out, "rows": rows, "bytes": size, "bytes_per_row": round(size / rows, 1), **disk}


def writes(w: Writes, snapshots: Mapping[str, Any], scenarios: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": w.scenario,
        "operation": w.operation,
        "counted_by": f"{w.deployment}.{w.table}",
        "throughput_figure": w.throughput,
        "throughput_name": w.throughput_name,
    }
    before_name = _before(snapshots, w.scenario)
    if before_name is None:
        return {**out, "missing": f"{w.scenario} did not run in this pass"}
    before, after = snapshots[before_name], snapshots[w.scenario]
    ops = _table_rows(after, w.deployment, w.table) - _table_rows(before, w.deployment, w.table)
    if ops <= 0:
        return {**out, "missing": f"no rows added to {w.deployment}.{w.table}"}
    per_op: dict[str, float] = {}
    for deployment, store in after.items():
        for table in store["tables"]:
            added = _table_rows(after, deployment, table) - _table_rows(before, deployment, table)
            if added > 0:
                per_op[f"{deployment}.{table}"] = round(added / ops, 3)
    throughput = _path(scenarios.get(w.scenario, {}), w.throughput)
    out.update(operations=ops, rows_per_operation=per_op, throughput=throughput)
    if isinstance(throughput, int | float):
        out["rows_per_second"] = round(throughput * sum(per_op.values()), 1)
    return out


def _table_rows(snapshot: Mapping[str, Any], deployment: str, table: str) -> int:
    return int(snapshot.get(deployment, {}).get("tables", {}).get(table, {}).get("rows", 0))


def _path(node: Any, path: str) -> Any:
    """A dotted path into a scenario's result; "top" is the level of the highest concurrency."""
    for part in path.split("."):
        if part == "top" and isinstance(node, list):
            node = max(node, key=lambda lv: lv["concurrency"]) if node else None
        elif isinstance(node, Mapping):
            node = node.get(part)
        else:
            return None
    return node
