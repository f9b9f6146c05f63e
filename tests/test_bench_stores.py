"""The bench's snapshot of a store (bench.scenarios.stores) on a registry store seeded as the
bench seeds it, on either engine: each table's rows and bytes, and what lies on disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import seed
from bench.scenarios.stores import snapshot_pg, snapshot_sqlite
from services.operator_registry.store import MIGRATIONS

PLAN = seed.RegistrySeed(500, ("alpha", "beta"), 40, datetime(2026, 12, 1, tzinfo=UTC))


async def test_a_snapshot_counts_each_tables_rows_and_bytes(
    engine: str, tmp_path: Path, store_env: dict[str, str]
) -> None:
    if engine == "sqlite":
        path = tmp_path / "registry.db"
        seed.seed_registry(path, MIGRATIONS, PLAN)
        got = await snapshot_sqlite(path, table_bytes=True)
        assert sum(got["file_bytes"].values()) >= got["bytes"]
    else:
        await seed.seed_registry_pg(store_env["DATABASE_URL"], PLAN)
        got = await snapshot_pg(store_env["DATABASE_URL"])
        assert got["database_bytes"] > got["bytes"]
    tables = got["tables"]
    assert tables["contracts"]["rows"] == 500
    assert tables["bindings"]["rows"] == 80
    assert tables["agreements"]["rows"] == 2
    assert tables["verifications"]["rows"] == 0
    # every table with its indexes: the contracts (three b-trees on SQLite) outweigh the bindings
    assert tables["contracts"]["bytes"] > tables["bindings"]["bytes"] > 0
    assert sum(t["bytes"] for t in tables.values()) <= got["bytes"]


@pytest.mark.sqlite_only
async def test_a_sqlite_snapshot_reads_the_bytes_per_table_only_when_asked(
    engine: str, tmp_path: Path
) -> None:
    path = tmp_path / "registry.db"
    seed.seed_registry(path, MIGRATIONS, PLAN)
    got = await snapshot_sqlite(path, table_bytes=False)
    assert got["tables"]["contracts"] == {"rows": 500}
    assert got["bytes"] == (await snapshot_sqlite(path, table_bytes=True))["bytes"]
