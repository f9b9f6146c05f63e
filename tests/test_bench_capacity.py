"""The capacity model (bench.report.capacity) and the store sizes it reads (bench.report.stores),
on a small result document in the shape `python -m bench` writes: every number of the generated
page is an input with its source, a stated workload figure, or a quantity computed from named
inputs; what the run did not measure is printed as missing, never made up."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.config import SCENARIOS
from bench.report import capacity
from bench.report.stores import FIGURES, derive

RUN = "2026-12-07T12:00:00Z"
GATEWAY_CPU = 4.25  # made-up figures, each used once so that the page can be searched for it
SERVER_CPU = 3.5


def level(concurrency: int, throughput: float, cpu: dict[str, float]) -> dict[str, Any]:
    run = {
        "concurrency": concurrency,
        "throughput": throughput,
        "latency": {"p50_ms": 1.0, "p99_ms": 2.0},
        "errors": 0,
        "cpu_ms_per_op": cpu,
    }
    return {"concurrency": concurrency, "mesh": run, "echo": dict(run), "throughput_ratio": 0.5}


def store(tables: dict[str, tuple[int, int]], engine: str) -> dict[str, Any]:
    """A snapshot of one store: table -> (rows, bytes)."""
    snap: dict[str, Any] = {
        "bytes": sum(b for _r, b in tables.values()),
        "tables": {t: {"rows": r, "bytes": b} for t, (r, b) in tables.items()},
    }
    if engine == "sqlite":
        snap["file_bytes"] = {"main": snap["bytes"], "wal": 0}
    else:
        snap["database_bytes"] = snap["bytes"] + 7_000_000
    return snap


def snapshots(engine: str, scale: int) -> dict[str, Any]:
    """start, then after each scenario: the stores grow as the scenarios write."""

    def at(ident: int, verif: int, outbox: int, imported: int, events: int) -> dict[str, Any]:
        return {
            "registry-beeline": store(
                {
                    "contracts": (1000, 150_000 * scale),
                    "bindings": (100, 15_000 * scale),
                    "verifications": (verif, 300 * verif * scale),
                    "outbox": (outbox, 400 * outbox * scale),
                },
                engine,
            ),
            "registry-megafon": store({"contracts": (imported, 160 * imported * scale)}, engine),
            "gateway-alpha": store(
                {
                    "identifications": (2000 + ident, 350 * (2000 + ident) * scale),
                    "policy_sender_rules": (1500, 120_000 * scale),
                    "policy_unaccepted": (200, 10_000 * scale),
                    "notice_inbox": (events // 2, 300 * events * scale),
                },
                engine,
            ),
            "notifier": store({"events": (events, 500 * events * scale)}, engine),
        }

    return {
        "start": at(0, 0, 0, 0, 0),
        "identification": at(100, 100, 0, 0, 0),
        "verify": at(100, 600, 0, 0, 0),
        "fanout": at(100, 600, 80, 0, 80),
        "import": at(100, 600, 80, 400, 80),
    }


def pass_scenarios(engine: str) -> dict[str, Any]:
    sqlite = engine == "sqlite"
    server = {} if sqlite else {"postgres": SERVER_CPU}
    result: dict[str, Any] = {name: {"status": "skipped"} for name in SCENARIOS}
    result["identification"] = {
        "status": "ok",
        "levels": [
            level(16, 150.0, {"gateway-alpha": 9.0, "registry-beeline": 1.0}),
            level(64, 225.0, {"gateway-alpha": GATEWAY_CPU, "registry-beeline": 1.5, **server}),
        ],
    }
    result["verify"] = {
        "status": "ok",
        "levels": [level(64, 800.0, {"registry-beeline": 1.25, **server})],
    }
    result["fanout"] = {
        "status": "ok",
        "burst": {
            "terminations_per_second": 1700.0,
            "events_per_second": 1150.0,
            "cpu_ms_per_event": {"registry-beeline": 0.8, "notifier": 0.6, "gateway-alpha": 0.3},
        },
    }
    result["import"] = {"status": "ok", "rows": 400, "rows_per_second": 91_000.0}
    rss = {"start": {"gateway-alpha": 374.0, "gateway-beta": 99.0}}
    rss["fanout"] = {"registry-beeline": 85.0, "notifier": 80.0}
    result["memory"] = {"status": "skipped", "rss_after_scenario_mb": rss}
    if sqlite:
        result["memory"] = {"status": "ok", "idle_rss_mb": 92.0, "rss_after_scenario_mb": rss}
        result["policy"] = {
            "status": "ok",
            "users": 1_000_000,
            "levels": [level(16, 1500.0, {"gateway-alpha": 0.55})],
            "batch": {"mesh": {"decisions_per_cpu_second": 125_000.0}},
        }
    return result


def made_up_result() -> dict[str, Any]:
    sqlite, pg = pass_scenarios("sqlite"), pass_scenarios("postgresql-x1")
    return {
        "started_at": RUN,
        "seconds": 1.0,
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "grpcio": "1"},
        "config": {"preset": "test", "engines": ["sqlite", "postgresql-x1"], "notes": []},
        "scenarios": sqlite,
        "postgresql": {"postgresql-x1": {"config": {"scenarios": []}, "scenarios": pg}},
        "stores": {
            "sqlite": derive(snapshots("sqlite", 1), sqlite),
            "postgresql-x1": derive(snapshots("postgresql-x1", 2), pg),
        },
        "targets": [],
    }


def generated_lines(result: dict[str, Any]) -> list[str]:
    text = capacity.generated(result)
    assert text.startswith(report.BEGIN) and text.rstrip().endswith(report.END)
    return text.splitlines()


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


ID = re.compile(r"\b(?:I\d+|W\d)\b")


def test_every_number_of_the_page_is_an_input_with_its_source_or_computed_from_named_ones() -> None:
    lines = generated_lines(made_up_result())
    inputs: dict[str, list[str]] = {}
    workload: set[str] = set()
    for line in lines:
        row = cells(line)
        if re.fullmatch(r"I\d+", row[0]):
            inputs[row[0]] = row
        elif re.fullmatch(r"W\d|H", row[0]):
            workload.add(row[0])
    assert len(workload) == len(capacity.WORKLOAD) + 1
    # each measured input: its value and its source, naming the scenario, engine and run
    for key, (_id, name, value, source) in inputs.items():
        assert value and name, key
        assert f"(run of {RUN})" in source, source
        assert re.search(r", (SQLite|PostgreSQL x\d): ", source), source
        scenario = source.split(",")[0].split(" c=")[0]
        assert scenario in {*SCENARIOS, "stores"}, source
    # each computed row: a formula over ids that the page defines, for every number it shows
    computed = [
        line
        for line in lines
        if line.startswith("| ") and not ID.fullmatch(cells(line)[0]) and cells(line)[0] != "H"
    ]
    computed = [line for line in computed if cells(line)[0] not in {"id", "quantity"}]
    assert len(computed) > 20
    for line in computed:
        row = cells(line)
        shown = [c for c in row[1:-1] if re.search(r"\d", c)]
        if not shown:
            continue
        used = set(ID.findall(row[-1]))
        assert used, line
        assert used <= set(inputs) | workload, line
    # the notes' numbers come with the formula they were computed by, or name the inputs
    for line in lines:
        if line and not line.startswith(("|", "<!--", "#")) and re.search(r"\d", line):
            assert ID.search(line) or RUN in line, line


def test_the_inputs_carry_the_measured_figures_and_the_quantities_follow_from_them() -> None:
    text = capacity.generated(made_up_result())
    rows = {
        cells(line)[1] + " / " + cells(line)[3]: cells(line)
        for line in text.splitlines()
        if line.startswith("| I")
    }
    gateway = next(
        r
        for k, r in rows.items()
        if "gateway-alpha: CPU per identification" in k and "identification c=64, SQLite" in k
    )
    assert gateway[2] == f"{GATEWAY_CPU:.3f} ms"
    # 500 identifications/s x 4.25 ms x headroom 2 = 4.25 cores
    line = next(x for x in text.splitlines() if x.startswith("| cores for W3 identifications"))
    assert cells(line)[1] == f"{500 * GATEWAY_CPU / 1000 * capacity.HEADROOM:.1f} cores"
    assert f"W3 x {gateway[0]} / 1000 x headroom" in cells(line)[-1]
    server = next(
        r for k, r in rows.items() if "the PostgreSQL server: CPU per identification" in k
    )
    assert "PostgreSQL x1" in server[3] and server[2] == f"{SERVER_CPU:.3f} ms"
    # the notifier: 500 bytes per event on SQLite, the store after the fan-out
    notifier = next(
        r for k, r in rows.items() if k.startswith("notifier, per event") and "SQLite" in k
    )
    assert notifier[2] == "500 bytes/row" and "after fanout over 80 events rows" in notifier[3]


def test_a_figure_the_run_did_not_measure_is_missing_and_so_is_what_needs_it() -> None:
    result = made_up_result()
    del result["postgresql"]
    del result["stores"]["postgresql-x1"]
    result["config"]["engines"] = ["sqlite"]
    result["scenarios"]["policy"] = {"status": "skipped"}
    text = capacity.generated(result)
    rows = [cells(line) for line in text.splitlines() if line.startswith("| I")]
    missing = {r[0] for r in rows if r[2].startswith("missing: ")}
    decisions = next(r for r in rows if r[1] == "gateway decisions per CPU-second, batches")
    assert decisions[0] in missing and "policy did not run on SQLite" in decisions[2]
    assert any("PostgreSQL x1" in r[3] for r in rows if r[0] in missing)
    batch = next(
        cells(line)
        for line in text.splitlines()
        if line.startswith("| cores for W2 decisions/s in")
    )
    assert batch[1] == batch[2] == f"missing ({decisions[0]})"
    for line in text.splitlines():
        row = cells(line)
        if not line.startswith("| ") or re.fullmatch(r"I\d+", row[0]):
            continue
        for cell in row[1:-1]:
            if "missing" in cell:
                assert re.fullmatch(r"missing \(I\d+(, I\d+)*\)", cell), line
        # a quantity computed from a missing input shows no number
        if ";" not in row[-1] and set(ID.findall(row[-1])) & missing:
            assert all(c == "-" or c.startswith("missing (") for c in row[1:-1]), line
    assert "Missing from this run: " in text
    # the index measured alone is absent too: the page says which figure stands in for it
    assert "did not measure the index alone" in text


@pytest.mark.parametrize(
    ("scenario", "figures"),
    [
        ("memory", {"index": {"bytes_per_user": 33.0, "bytes_per_rule": 5.0}}),
        ("policy", {"index_bytes_per_user": 33.0, "index_bytes_per_rule": 5.0}),
    ],
)
def test_the_index_measured_alone_and_the_shards_replace_the_resident_memory_figure(
    scenario: str, figures: dict[str, Any]
) -> None:
    result = made_up_result()
    result["scenarios"][scenario].update(figures)
    result["scenarios"]["policy"]["two_replicas"] = {"max_share_of_index_percent": 50.0}
    text = capacity.generated(result)
    assert "did not measure the index alone" not in text
    index = next(x for x in text.splitlines() if "| policy index bytes per user |" in x)
    assert cells(index)[2] == "33.0 bytes/user" and cells(index)[3].startswith(
        f"{scenario}, SQLite"
    )
    line = next(x for x in text.splitlines() if x.startswith("| memory of the policy index"))
    # 100M users x 33 bytes + 100M x (1,700 preference rows / 1M users) x 5 bytes
    expected = (100_000_000 * 33 + 100_000_000 * 1700 / 1_000_000 * 5) / 1e9
    assert cells(line)[1] == f"{expected:,.1f} GB"
    shards = next(x for x in text.splitlines() if x.startswith("| memory per replica with two"))
    assert cells(shards)[2] == f"{(92e6 + expected * 1e9 * 0.5) / 1e9:,.1f} GB"


def test_store_figures_read_a_snapshot_or_what_a_scenario_added() -> None:
    snaps = snapshots("sqlite", 1)
    got = {f["key"]: f for f in derive(snaps, pass_scenarios("sqlite"))["figures"]}
    assert set(got) == {f.key for f in FIGURES}
    assert got["registry_per_verification"]["rows"] == 500  # 100 -> 600 during verify
    assert got["registry_per_verification"]["bytes_per_row"] == 300.0
    assert got["registry_per_verification"]["from"] == "identification"
    assert got["registry_per_binding"]["bytes_per_row"] == 150.0
    assert got["gateway_per_preference_row"]["bytes_per_row"] == round(130_000 / 1700, 1)
    assert got["gateway_per_identification"]["bytes_per_row"] == 350.0
    assert got["registry_per_imported_row"]["bytes_per_row"] == 160.0
    without_import = {k: v for k, v in snaps.items() if k != "import"}
    figures = {f["key"]: f for f in derive(without_import, {})["figures"]}
    assert "missing" in figures["registry_per_imported_row"]
    writes = {w["scenario"]: w for w in derive(snaps, pass_scenarios("sqlite"))["writes"]}
    verify = writes["verify"]
    assert verify["rows_per_operation"] == {"registry-beeline.verifications": 1.0}
    assert verify["rows_per_second"] == 800.0
    assert "missing" in derive(without_import, {})["writes"][-1]


def test_the_page_keeps_its_head_and_replaces_its_generated_part(tmp_path: Path) -> None:
    first = capacity.write_capacity(made_up_result(), tmp_path)
    text = first.read_text()
    assert text.startswith("# Capacity\n") and "## Method" in text
    page = text.replace("## Method", "## Method\n\nA line written by hand.")
    first.write_text(page)
    result = copy.deepcopy(made_up_result())
    result["started_at"] = "2026-12-08T00:00:00Z"
    again = capacity.write_capacity(result, tmp_path).read_text()
    assert "A line written by hand." in again
    assert "2026-12-08T00:00:00Z" in again and RUN not in again
    assert again.count(report.BEGIN) == 1 and again.count(report.END) == 1
