"""The bench's report over a run with PostgreSQL passes (bench.report), on a made-up result:
rows per engine, failures from any pass, the engines side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
from bench.config import POSTGRES_SCENARIOS, SCENARIOS


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
