"""The SQLite adapter: migrations once, transactions all or nothing."""

import asyncio
from pathlib import Path

import pytest

from services.common.db import Database

MIGRATIONS = ["CREATE TABLE a (x INTEGER PRIMARY KEY);", "CREATE TABLE b (y TEXT);"]


async def test_concurrent_openers_of_a_new_file_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    dbs = await asyncio.gather(*(Database.open(path, MIGRATIONS) for _ in range(4)))
    try:
        row = await dbs[0].fetchone("PRAGMA user_version")
        assert row is not None and row[0] == len(MIGRATIONS)
    finally:
        for db in dbs:
            await db.close()


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "t.db", MIGRATIONS)
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO a (x) VALUES (1)")
                raise RuntimeError("boom")
        assert await db.fetchall("SELECT x FROM a") == []
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO a (x) VALUES (2)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM a")] == [(2,)]
    finally:
        await db.close()


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = await Database.open(path, MIGRATIONS)
    await db.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        await Database.open(path, MIGRATIONS[:1])
