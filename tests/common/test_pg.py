"""PostgreSQL plumbing (services.common.pg, storage): migrations applied once by whichever
replica starts first, a database kept to one service, the engine chosen by one variable."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.common.config import ConfigError, Env
from services.common.pg import PgDatabase
from services.common.storage import Engine, StoreSettings
from tests.eventually import eventually

MIGRATIONS = [
    "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "ALTER TABLE things ADD COLUMN colour TEXT; INSERT INTO things VALUES (1, 'one', 'red')",
]


async def test_replicas_starting_together_apply_each_migration_once(postgres_url: str) -> None:
    replicas = await asyncio.gather(
        *(PgDatabase.open(postgres_url, "svc", MIGRATIONS) for _ in range(4))
    )
    try:
        applied = await replicas[0].fetch(
            "SELECT service, version FROM schema_migrations ORDER BY version"
        )
        assert [tuple(row) for row in applied] == [("svc", 1), ("svc", 2)]
        assert await replicas[3].fetchval("SELECT count(*) FROM things") == 1
    finally:
        for db in replicas:
            await db.close()


async def test_a_listener_is_told_when_listen_is_in_place_then_gets_each_notification(
    postgres_url: str,
) -> None:
    db = await PgDatabase.open(postgres_url, "svc", MIGRATIONS)
    got: list[list[str]] = []
    try:
        async with db.listening("idmesh_test_channel", got.append):
            # [] first: anything committed before the LISTEN may have been missed, read again
            await eventually(lambda: got == [[]], what="the in-place signal")
            await db.execute("SELECT pg_notify('idmesh_test_channel', 'hello')")
            await eventually(lambda: got == [[], ["hello"]], what="the notification")
    finally:
        await db.close()


async def test_a_restart_applies_only_the_new_migrations(postgres_url: str) -> None:
    db = await PgDatabase.open(postgres_url, "svc", MIGRATIONS[:1])
    await db.execute("INSERT INTO things VALUES (7, 'seven')")
    await db.close()
    db = await PgDatabase.open(postgres_url, "svc", MIGRATIONS)
    try:
        rows = await db.fetch("SELECT id, colour FROM things ORDER BY id")
        assert [tuple(row) for row in rows] == [(1, "red"), (7, None)]
    finally:
        await db.close()


async def test_a_failed_migration_leaves_the_previous_version(postgres_url: str) -> None:
    with pytest.raises(asyncpg.PostgresError):
        await PgDatabase.open(postgres_url, "svc", [MIGRATIONS[0], "CREATE TABLE things ()"])
    db = await PgDatabase.open(postgres_url, "svc", MIGRATIONS[:1])
    try:
        assert await db.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await db.close()


async def test_a_database_of_another_service_is_refused(postgres_url: str) -> None:
    db = await PgDatabase.open(postgres_url, "notifier", MIGRATIONS[:1])
    await db.close()
    with pytest.raises(RuntimeError, match="holds the schema of notifier, not of registry"):
        await PgDatabase.open(postgres_url, "registry", MIGRATIONS[:1])


async def test_a_schema_newer_than_the_code_is_refused(postgres_url: str) -> None:
    db = await PgDatabase.open(postgres_url, "svc", MIGRATIONS)
    await db.close()
    with pytest.raises(RuntimeError, match="version 2 of svc is newer than this code knows"):
        await PgDatabase.open(postgres_url, "svc", MIGRATIONS[:1])


def test_the_database_url_chooses_the_engine() -> None:
    assert StoreSettings.from_env(Env({"IDMESH_DB_PATH": "/d/x.db"})).engine is Engine.SQLITE
    pg = StoreSettings.from_env(
        Env({"IDMESH_DATABASE_URL": "postgres://u:secret@db.internal/reg", "IDMESH_DB_PATH": ""})
    )
    assert pg.engine is Engine.POSTGRESQL
    assert pg.describe() == "postgresql:db.internal/reg"
    both = StoreSettings(
        database_url="postgresql://u:secret@pg-a:5432,pg-b:5432/reg?target_session_attrs=read-write"
    )
    assert both.describe() == "postgresql:pg-a,pg-b/reg"
    with pytest.raises(ConfigError, match="IDMESH_DB_PATH: required"):
        StoreSettings.from_env(Env({}))
    with pytest.raises(ConfigError, match="IDMESH_DB_POOL_SIZE"):
        StoreSettings.from_env(
            Env({"IDMESH_DATABASE_URL": "postgresql://db/x", "IDMESH_DB_POOL_SIZE": "0"})
        )
