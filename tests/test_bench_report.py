"""The bench's report (bench.report) on a made-up result: the rows of the table of targets come
from the targets each scenario declares (bench.scenarios), per engine; failures from any pass;
the engines side by side."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.config import POSTGRES_SCENARIOS, SCENARIOS
from bench.scenarios import ALL, Scenario, Target, identification, verify
from bench.scenarios.sweep import sweep


def run(throughput: float, p99: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "concurrency": 0,
        "throughput": throughput,
        "latency": {"p50_ms": p99 / 2, "p99_ms": p99},
        "errors": 0,
        "cpu_ms_per_op": cpu,
    }


def levels(concurrencies: tuple[int, ...], mesh: float, cpu: dict[str, float]) -> list[Any]:
    return [
        {
            "concurrency": c,
            "mesh": run(mesh * c, 10.0 * c, cpu),
            "echo": run(2 * mesh * c, 5.0 * c, {"echo": 0.5}),
            "raw": run(3 * mesh * c, 4.0 * c, {"raw": 0.3}),
            "throughput_ratio": 0.5,
            "p99_ratio": 2.0,
        }
        for c in concurrencies
    ]


def scenarios(
    concurrencies: tuple[int, ...], cpu: dict[str, float], baseline: str
) -> dict[str, Any]:
    result: dict[str, Any] = {name: {"status": "skipped"} for name in SCENARIOS}
    result["identification"] = {"status": "ok", "levels": levels(concurrencies, 10.0, cpu)}
    result["verify"] = {
        "status": "ok",
        "subscribers": 1000,
        "levels": levels(concurrencies, 100.0, cpu),
    }
    result["import"] = {
        "status": "ok",
        "rows": 1000,
        "batch": 100,
        "seconds": 1.0,
        "rows_per_second": 1000.0,
        "baseline_name": baseline,
        "baseline_seconds": 0.5,
        "baseline_rows_per_second": 2000.0,
        "ratio": 0.5,
    }
    return result


def made_up_result() -> dict[str, Any]:
    sqlite = scenarios((1, 16, 64), {"registry-beeline": 2.0}, "sqlite3 executemany")
    sqlite["memory"] = {"status": "failed", "reason": "made up"}
    pg_cpu = {"registry-beeline": 1.0, "registry-beeline-2": 1.0, "postgres": 0.75}
    pg = scenarios((16, 64), pg_cpu, "asyncpg COPY")
    pg["verify"] = {"status": "failed", "reason": "made up too"}
    result: dict[str, Any] = {
        "started_at": "2026-11-29T00:00:00Z",
        "seconds": 1.0,
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "grpcio": "1"},
        "config": {
            "preset": "test",
            "engines": ["sqlite", "postgresql-x2"],
            "scenarios": list(SCENARIOS),
            "notes": [],
        },
        "scenarios": sqlite,
        "postgresql": {
            "postgresql-x2": {
                "config": {"engine": "postgresql-x2", "scenarios": list(POSTGRES_SCENARIOS)},
                "scenarios": pg,
            }
        },
        "profiles": {},
        "idle_cpu": {
            "sqlite": {"registry-beeline": 0.01},
            "postgresql-x2": {"registry-beeline": 0.02, "postgres": 0.05},
        },
    }
    result["targets"] = report.targets(result)
    return result


def test_every_pass_has_its_rows_and_its_failures() -> None:
    result = made_up_result()
    by_engine: dict[str, list[str]] = {}
    for row in result["targets"]:
        by_engine.setdefault(row["engine"], []).append(row["name"])
    assert set(by_engine) == {"SQLite", "PostgreSQL x2"}
    # PostgreSQL: its scenarios only (no memory or policy rows), its import baseline named
    assert not any("RSS" in name or "Check" in name for name in by_engine["PostgreSQL x2"])
    assert any("RSS" in name for name in by_engine["SQLite"])
    baselines = {
        r["engine"]: r["baseline_name"] for r in result["targets"] if "import" in r["name"]
    }
    assert baselines == {"SQLite": "sqlite3 executemany", "PostgreSQL x2": "asyncpg COPY"}
    assert report.failed(result) == ["sqlite/memory", "postgresql-x2/verify"]
    assert "PostgreSQL x2" in report.text_table(result)


def test_the_engines_side_by_side_at_the_common_concurrency() -> None:
    result = made_up_result()
    result["postgresql"]["postgresql-x2"]["scenarios"]["verify"] = {
        "status": "ok",
        "subscribers": 1000,
        "levels": levels((16, 64), 100.0, {"registry-beeline": 1.0, "postgres": 0.75}),
    }
    text = report.markdown(result, "benchmarks.png")
    table = text.split("### The engines side by side", 1)[1].split("###", 1)[0]
    assert "| figure | SQLite | PostgreSQL x2 |" in table
    assert "identification c=64" in table and "VerifySubscriber c=64" in table
    assert "c=16" not in table
    assert "| 2.00 | 1.00 + 0.75 server |" in table  # services + the server, per op
    assert "bulk import" in table
    assert "| idle mesh, CPU per second: services + server | 1% | 2% + 5% server |" in table
    assert "### VerifySubscriber over 1,000 subscribers, PostgreSQL x2" in text


def test_a_result_from_before_the_postgresql_passes_still_renders() -> None:
    result = made_up_result()
    del result["postgresql"]
    del result["config"]["engines"]
    result["targets"] = report.targets(result)
    assert {row["engine"] for row in result["targets"]} == {"SQLite"}
    assert "### The engines side by side" not in report.markdown(result, "benchmarks.png")


def test_a_regenerated_page_keeps_the_method_first_and_where_the_time_goes_last() -> None:
    generated = report.markdown(made_up_result(), "benchmarks.png")
    assert generated.startswith(report.BEGIN) and "## Results" in generated
    new = report.rewrite_page(None, generated, "benchmarks.png")
    assert (
        new.index("## Method")
        < new.index(report.BEGIN)
        < new.index("## Results")
        < new.index(report.END)
        < new.index("## Where the time goes")
    )
    edited = new.replace("(The scenarios, each figure", "The scenarios, as written by hand (each")
    again = report.rewrite_page(edited, generated, "benchmarks.png")
    assert again == edited  # the hand-written method and analysis survive a regeneration
    assert again.count(report.BEGIN) == 1 and again.count("## Where the time goes") == 1


def test_the_committed_page_has_the_shape_the_generator_keeps() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    head, _, rest = page.partition(report.BEGIN)
    results, _, tail = rest.partition(report.END)
    assert "## Method" in head and "## Results" in results
    assert tail.lstrip().startswith("## Where the time goes")
    assert "scrypt" not in page.lower() and "what changed" not in page.lower()


# --- the rows come from the scenarios' declared targets -----------------------------------


def test_every_scenario_declares_targets_in_the_configs_order() -> None:
    assert tuple(s.name for s in ALL) == SCENARIOS
    for scenario in ALL:
        assert scenario.targets, f"{scenario.name} declares no target"
        for target in scenario.targets:
            assert target.doc, f"{scenario.name}: {target.name} has no doc"
    with pytest.raises(ValueError, match="declares no target"):
        Scenario(name="empty", title="empty", targets=(), run=identification.run)


def test_each_row_is_a_declared_target_of_a_scenario_that_ran() -> None:
    result = made_up_result()
    declared = {s.name: s.targets for s in ALL}
    for row in result["targets"]:
        if row["status"] != "ok":
            title = next(s.title for s in ALL if s.name == row["scenario"])
            assert row["name"] == title  # the scenario's one row saying it did not run
            continue
        goals = {t.goal for t in declared[row["scenario"]]}
        units = {t.unit for t in declared[row["scenario"]]}
        assert row["target"] in goals and row["unit"] in units, row
    sqlite = [r for r in result["targets"] if r["engine"] == "SQLite"]
    # identification: each declared target at each of the three levels, level by level
    ident = [r["name"] for r in sqlite if r["scenario"] == "identification"]
    assert ident == [
        f"identification c={c}: {what}" for c in (1, 16, 64) for what in ("throughput", "p99")
    ]
    # VerifySubscriber: its three targets, at its highest level
    verify_rows = [r for r in sqlite if r["scenario"] == "verify"]
    assert [r["baseline_name"] for r in verify_rows] == [
        "echo, same stack",
        "bare grpc.aio echo",
        "echo, same stack",
    ]
    assert all(r["name"].startswith("VerifySubscriber c=64") for r in verify_rows)


def test_a_target_added_to_a_declaration_becomes_a_row_and_its_goal_is_evaluated() -> None:
    result = made_up_result()
    extra = (
        Target(
            name="VerifySubscriber c={levels.top.concurrency}: p50",
            figure="levels.top.mesh.latency.p50_ms",
            unit="ms",
            baseline="levels.top.echo.latency.p50_ms",
            baseline_name="echo",
            op="<=",
            threshold=1.9,
            doc="made up",
        ),
        Target(
            name="VerifySubscriber: errors at c={levels.top.concurrency}",
            figure="levels.top.mesh.errors",
            unit="",
            against="value",
            op="<",
            threshold=1,
            doc="made up",
        ),
    )
    verify_with_more = dataclasses.replace(verify.SCENARIO, targets=extra)
    rows = report.targets(result, [verify_with_more])
    sqlite = [r for r in rows if r["engine"] == "SQLite"]
    # identification and the others are no longer declared: no rows but the missing ones
    assert {r["scenario"] for r in rows} == {"verify"}
    p50, errors = sqlite
    # mesh p50 = 320, echo p50 = 160 at c=64 (made_up_result): 2.0x, over 1.9x
    assert p50["name"] == "VerifySubscriber c=64: p50"
    assert (p50["value"], p50["baseline"], p50["ratio"]) == (320.0, 160.0, 2.0)
    assert (p50["target"], p50["met"]) == ("<= 1.9x", False)
    assert (errors["value"], errors["target"], errors["met"]) == (0, "< 1", True)
    # the PostgreSQL pass's verify failed: its one row says so
    pg = [r for r in rows if r["engine"] == "PostgreSQL x2"]
    assert [(r["status"], r["baseline_name"]) for r in pg] == [("failed", "made up too")]


def test_a_ratio_goal_reads_the_scenarios_ratio_and_an_absolute_goal_the_value() -> None:
    result = made_up_result()
    result["scenarios"]["fanout"] = {
        "status": "ok",
        "burst": {
            "terminations": 10,
            "events_per_second": 6_000.0,
        },
        "steady": {
            "overload": 3.0,
            "rate_terminations_per_second": 30.0,
            "terminate_to_revoked": {"p99_ms": math.nan},
        },
    }
    result["scenarios"]["identification"]["levels"][0]["throughput_ratio"] = 0.61
    rows = {r["name"]: r for r in report.targets(result) if r["engine"] == "SQLite"}
    burst = rows["fan-out: 10 terminations, events/s end to end"]
    # the same pass's bare echo at VerifySubscriber's highest level: 3 x 100 x 64 calls/s
    assert burst["baseline"] == 19_200.0 and burst["ratio"] == 0.312
    assert burst["met"] is True and burst["target"] == ">= 5,000/s"
    # no bulk phase: that optional target gives no row
    assert not any("TerminateContracts" in name for name in rows)
    steady = rows[
        "fan-out under overload (3x capacity, 30 terminations/s): accepted terminate->revoked p99"
    ]
    assert steady["met"] is False and steady["baseline"] is None  # NaN never meets a goal
    # identification's ratio is the scenario's own, not value / baseline recomputed (0.5)
    ident = rows["identification c=1: throughput"]
    assert (ident["value"], ident["baseline"], ident["ratio"]) == (10.0, 20.0, 0.61)
    assert ident["met"] is True
    p99 = rows["VerifySubscriber c=64: p99"]
    assert (p99["target"], p99["met"]) == ("(none)", None)


def test_a_result_without_the_import_baselines_name_names_sqlite() -> None:
    result = made_up_result()
    del result["scenarios"]["import"]["baseline_name"]
    (row,) = (
        r
        for r in report.targets(result)
        if r["name"] == "bulk import 1,000 rows" and r["engine"] == "SQLite"
    )
    assert row["baseline_name"] == "sqlite3 executemany"
    del result["scenarios"]["import"]["rows"]
    with pytest.raises(KeyError, match="'rows'"):
        report.targets(result)


def test_a_target_refuses_a_goal_it_cannot_evaluate() -> None:
    with pytest.raises(ValueError, match="not one of"):
        Target(name="x", figure="x", unit="", op="=>", threshold=1.0)
    with pytest.raises(ValueError, match="needs a threshold"):
        Target(name="x", figure="x", unit="", op=">=")
    with pytest.raises(ValueError, match="needs a baseline"):
        Target(name="x", figure="x", unit="", op=">=", threshold=1.0)


def test_the_docs_list_what_every_declared_target_means() -> None:
    text = report.markdown(made_up_result(), "benchmarks.png")
    section = text.split("### The targets", 1)[1].split("###", 1)[0]
    for scenario in ALL:
        for target in scenario.targets:
            assert f"- {scenario.title}: {target.doc}." in section


def test_the_scenarios_know_nothing_of_the_report() -> None:
    """Declarations point one way: the report reads the scenarios' targets; a scenario module
    imports no part of bench.report (nor bench.cli)."""
    folder = Path(verify.__file__).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        wrong = sorted(m for m in imported if m.startswith(("bench.report", "bench.cli")))
        assert not wrong, f"{path.name} imports {wrong}"


def test_top_is_the_level_of_the_highest_concurrency_in_any_order() -> None:
    result = made_up_result()
    verify_result = result["scenarios"]["verify"]
    verify_result["levels"] = list(reversed(verify_result["levels"]))  # 64, 16, 1
    verify_result["levels"].insert(1, verify_result["levels"].pop(0))  # 16, 64, 1
    rows = [r for r in report.targets(result) if r["scenario"] == "verify"]
    assert rows[0]["name"] == "VerifySubscriber c=64: throughput"
    assert rows[0]["value"] == 6_400.0


async def test_a_sweep_measures_the_real_server_first_against_an_echo() -> None:
    async def op(i: int) -> None:
        del i

    for ops in ({"echo": op, "mesh": op}, {"mesh": op, "raw": op}):
        with pytest.raises(ValueError, match="runs 'mesh' first and needs 'echo'"):
            await sweep(None, label="x", levels=(1,), seconds=0.1, ops=ops, names={})  # type: ignore[arg-type]
