"""The bench harness at its smallest (`python -m bench --smoke`): every scenario runs over real
processes with tiny counts, so the bench code cannot rot unnoticed; then the PostgreSQL pass,
two replicas of every service over an embedded server, and the synchronous standby's cost on
servers of its own. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.config import (
    POSTGRES_ONCE,
    POSTGRES_SCENARIOS,
    SCENARIOS,
    SQLITE_SCENARIOS,
    engine_label,
)
from bench.scenarios import ALL

ROOT = Path(__file__).resolve().parents[1]
RUN_KEYS = {"concurrency", "seconds", "completed", "errors", "throughput", "latency"}


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "latest.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--out",
            str(out),
            "--work-dir",
            str(folder / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # two passes, the second starting 10 services and a PostgreSQL server, then 3 services
        # over a primary and its standby
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "figure" in proc.stdout  # the table of targets was printed
    assert not (folder / "work").exists(), "the work folder is removed after the run"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.mesh
def test_smoke_run_reports_every_scenario(smoke_result: dict[str, Any]) -> None:
    scenarios = smoke_result["scenarios"]
    assert isinstance(scenarios, dict)
    assert set(scenarios) == set(SCENARIOS)
    for name, scenario in scenarios.items():
        expected = {"ok", "pending"} if name in SQLITE_SCENARIOS else {"skipped"}
        assert scenario["status"] in expected, (name, scenario)
    for level in scenarios["identification"]["levels"]:
        assert set(level["mesh"]) >= RUN_KEYS and set(level["echo"]) >= RUN_KEYS
        assert level["mesh"]["completed"] > 0 and level["mesh"]["errors"] == 0
    for level in scenarios["verify"]["levels"]:
        for kind in ("mesh", "echo", "raw"):
            assert set(level[kind]) >= RUN_KEYS
            assert level[kind]["errors"] == 0
    fanout = scenarios["fanout"]
    assert fanout["burst"]["terminate_to_revoked"]["missing"] == 0
    steady = fanout["steady"]
    assert steady["terminate_to_revoked"]["missing"] == 0
    assert steady["accepted"] + steady["shed"] + steady["failed"] == steady["terminations"]
    assert steady["failed"] == 0 and steady["accepted"] > 0
    assert fanout["bulk"]["terminations"] == 30 and fanout["bulk"]["events_per_second"] > 0
    memory = scenarios["memory"]
    assert memory["pending"] == 20
    assert set(memory["rss_after_scenario_mb"]) == {
        "start",
        "identification",
        "verify",
        "fanout",
        "import",
        "policy",
    }
    policy = scenarios["policy"]
    for level in policy["levels"]:
        for kind in ("mesh", "echo"):
            assert set(level[kind]) >= RUN_KEYS and level[kind]["errors"] == 0
    assert policy["batch"]["mesh"]["errors"] == 0
    assert policy["batch"]["mesh"]["decisions_per_second"] > 0
    assert "DELIVERY_REASON_ALLOWED" in policy["decisions_seen"]


@pytest.mark.mesh
def test_smoke_run_has_a_target_row_per_figure(smoke_result: dict[str, Any]) -> None:
    targets = smoke_result["targets"]
    assert isinstance(targets, list) and targets
    for row in targets:
        assert {"name", "value", "baseline", "ratio", "target", "met", "status"} <= set(row)
    names = " ".join(row["name"] for row in targets)
    for figure in (
        "identification",
        "VerifySubscriber",
        "fan-out",
        "bulk import",
        "gateway RSS",
        "CheckDelivery",
        "synchronous standby",
    ):
        assert figure in names
    assert "figure" in report.text_table(smoke_result)


@pytest.mark.mesh
def test_every_declared_target_is_read_from_the_smoke_result(
    smoke_result: dict[str, Any],
) -> None:
    """Each target a scenario declares gives its rows (one per level where declared so), each
    with its figure found in the real result."""
    rows = smoke_result["targets"]
    assert isinstance(rows, list)
    for engine, results, _ran in report.passes(smoke_result):
        for scenario in ALL:
            if results[scenario.name]["status"] != "ok":
                continue
            levels = len(results[scenario.name].get("levels", []))
            expected = sum(levels if t.each_level else 1 for t in scenario.targets)
            got = [
                r
                for r in rows
                if r["engine"] == engine_label(engine) and r["scenario"] == scenario.name
            ]
            assert len(got) == expected, (engine, scenario.name, got)
            for row in got:
                assert row["status"] == "ok" and row["value"] is not None, row


@pytest.mark.mesh
def test_smoke_result_renders_the_docs(smoke_result: dict[str, Any], tmp_path: Path) -> None:
    text = report.markdown(smoke_result, "benchmarks.png")
    assert text.startswith(report.BEGIN) and text.rstrip().endswith(report.END)
    assert "| figure |" in text
    md, png = report.write_docs(smoke_result, tmp_path)
    assert png.stat().st_size > 0
    assert report.BEGIN in md.read_text()
    assert "### Store sizes" in md.read_text()
    capacity = report.write_capacity(smoke_result, tmp_path).read_text()
    assert f"From the run of {smoke_result['started_at']}" in capacity


@pytest.mark.mesh
def test_smoke_run_measures_the_stores_of_every_pass(smoke_result: dict[str, Any]) -> None:
    """Bytes per row of every store, on both engines, from the stores the scenarios filled (the
    delivery policy's preferences on SQLite only), and the rows each operation wrote."""
    stores = smoke_result["stores"]
    assert set(stores) == {"sqlite", "postgresql-x2"}
    for engine, measured in stores.items():
        for figure in measured["figures"]:
            if engine != "sqlite" and figure["key"] == "gateway_per_preference_row":
                assert figure["missing"] == "no rows"
                continue
            assert "missing" not in figure, (engine, figure)
            assert figure["rows"] > 0 and figure["bytes_per_row"] > 0, (engine, figure)
        start = measured["snapshots"]["start"]["registry-beeline"]
        assert start["tables"]["contracts"]["rows"] == 2_000
        files = start.get("file_bytes", {})
        disk = files["main"] + files["wal"] if engine == "sqlite" else start["database_bytes"]
        assert disk >= start["bytes"] > 0
        writes = {w["scenario"]: w for w in measured["writes"]}
        assert writes["import"]["rows_per_operation"]["registry-megafon.contracts"] == 1.0
        assert writes["verify"]["rows_per_operation"]["registry-beeline.verifications"] == 1.0
        assert writes["fanout"]["rows_per_operation"]["notifier.events"] == 1.0


@pytest.mark.mesh
def test_smoke_run_has_a_postgresql_pass_with_two_replicas(smoke_result: dict[str, Any]) -> None:
    passes = smoke_result["postgresql"]
    assert isinstance(passes, dict) and set(passes) == {"postgresql-x2"}
    pg = passes["postgresql-x2"]
    assert pg["config"]["engine"] == "postgresql-x2"
    scenarios = pg["scenarios"]
    for name in SCENARIOS:
        ran = name in POSTGRES_SCENARIOS or name in POSTGRES_ONCE
        expected = {"ok", "pending"} if ran else {"skipped"}
        assert scenarios[name]["status"] in expected, (name, scenarios[name])
    # the load went to both replicas, and the database server's CPU is counted beside them
    for level in scenarios["verify"]["levels"]:
        cpu = level["mesh"]["cpu_ms_per_op"]
        assert {"registry-beeline", "registry-beeline-2", "postgres"} <= set(cpu), cpu
        assert level["mesh"]["errors"] == 0 and level["mesh"]["completed"] > 0
    for level in scenarios["identification"]["levels"]:
        assert level["mesh"]["errors"] == 0 and level["mesh"]["completed"] > 0
        assert {"gateway-alpha", "gateway-alpha-2"} <= set(level["mesh"]["cpu_ms_per_op"])
    fanout = scenarios["fanout"]
    assert fanout["burst"]["terminations"] == 10
    assert fanout["burst"]["terminate_to_revoked"]["missing"] == 0
    steady = fanout["steady"]
    assert steady["terminate_to_revoked"]["missing"] == 0 and steady["failed"] == 0
    assert fanout["bulk"]["terminations"] == 16
    imported = scenarios["import"]
    assert imported["rows"] == 300 and imported["baseline_name"] == "asyncpg COPY"
    # the synchronous standby: both setups measured, in the slices' order, with their ratios
    replication = scenarios["replication"]
    assert replication["schedule"].count("alone") == replication["schedule"].count("sync")
    for setup in ("alone", "sync"):
        for kind in ("identification", "terminations"):
            figures = replication[setup][kind]
            assert figures["completed"] > 0, (setup, kind, figures)
            assert len(figures["slices_throughput"]) == replication["schedule"].count(setup)
    assert replication["identification_ratio"]["throughput"] > 0
    assert replication["terminations_ratio"]["p99"] > 0
    engines = {row["engine"] for row in smoke_result["targets"]}
    assert engines == {"SQLite", "PostgreSQL x2"}
    text = report.markdown(smoke_result, "benchmarks.png")
    assert "### VerifySubscriber over" in text and ", PostgreSQL x2" in text
    assert "### The engines side by side" in text
    assert "### Synchronous standby" in text
    idle = smoke_result["idle_cpu"]
    assert isinstance(idle, dict) and "postgres" in idle["postgresql-x2"] and "sqlite" in idle
