"""The meshes under test.

- The real mesh (services.localmesh.Mesh, real processes): registry-beeline (the seeded
  subscribers), registry-megafon (empty: the bulk import's target), the notifier, gateway-alpha
  and gateway-beta.
- The echo mesh (bench.echo): echo-gateway -> echo-registry, the identification path's processes
  and hops with handlers that do nothing, plus echo-raw, a bare grpc.aio server.
- The pending mesh: gateway-gamma, whose operator t2 is a Blackhole (accepts TCP, never
  answers), with a long verification window, and the notifier it needs.
- On PostgreSQL (a pass of engine postgresql-xN): the real mesh again, every service on one
  embedded PostgreSQL server started by the bench (PostgresServer), a database per service
  deployment, N replicas of each (replica i calling replica i, services.localmesh).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc

from services.common import pki
from services.common.identity import Caller, Kind
from services.localmesh import (
    EmbeddedPostgres,
    Mesh,
    MeshSpec,
    MessengerSpec,
    OperatorSpec,
    PostgresSpec,
    ServiceProcess,
    wait_serving,
)
from services.localmesh.mesh import replica_name
from services.localmesh.postgres import database_name, with_database
from services.localmesh.process import free_port

SEEDED_OPERATOR = "beeline"
IMPORT_OPERATOR = "megafon"
MESSENGERS = ("alpha", "beta")
PENDING_MESSENGER = "gamma"
PENDING_OPERATOR = "t2"


# The bench measures capacity: the registries' per-messenger abuse limit on VerifySubscriber
# (IDMESH_VERIFY_PER_HOUR, by default 360,000/h = 100/s per messenger, burst 200) is lifted, or
# it would be the figure. The limiter still runs on every call, so its cost is measured.
UNLIMITED_ENV = {"IDMESH_VERIFY_PER_HOUR": "1000000000000", "IDMESH_VERIFY_BURST": "1000000000"}


def real_spec(
    window_seconds: float = 120.0, *, postgres: PostgresSpec | None = None, replicas: int = 1
) -> MeshSpec:
    return MeshSpec(
        common_env=UNLIMITED_ENV,
        operators=(
            OperatorSpec(SEEDED_OPERATOR, "Beeline"),
            OperatorSpec(IMPORT_OPERATOR, "MegaFon"),
        ),
        messengers=tuple(
            MessengerSpec(m, verification_window_seconds=window_seconds) for m in MESSENGERS
        ),
        log_format="json",
        postgres=postgres,
        replicas=replicas,
    )


def pending_spec(blackhole: str, window_seconds: float = 3600.0) -> MeshSpec:
    return MeshSpec(
        operators=(),
        messengers=(
            MessengerSpec(
                PENDING_MESSENGER,
                verification_window_seconds=window_seconds,
                extra_operators={PENDING_OPERATOR: blackhole},
                extra_carriers={"T2": PENDING_OPERATOR},
            ),
        ),
        log_format="json",
    )


def db_path(mesh: Mesh, service: str) -> Path:
    return Path(mesh.services[service].env["IDMESH_DB_PATH"])


def replicas(mesh: Mesh, deployment: str) -> list[str]:
    """The names of a deployment's replicas: ["registry-beeline", "registry-beeline-2"]."""
    names = [replica_name(deployment, r) for r in range(1, mesh.spec.replicas + 1)]
    return [n for n in names if n in mesh.services]


# The bench's databases on its server: "bench_registry_beeline", ...
DATABASE_PREFIX = "bench"
# Durability as SQLite's synchronous=NORMAL in WAL mode, which the services run with: a commit
# is not flushed to disk before it is answered (a crash of the host may lose the last moments,
# never corrupts); fsync stays on.
POSTGRES_SETTINGS = ("ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()")


class PostgresServer(EmbeddedPostgres):
    """An embedded PostgreSQL server under folder, for one pass of the bench; stop() stops it
    (its data goes with the work folder)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "pgdata", settings=POSTGRES_SETTINGS)

    @staticmethod
    def database(deployment: str) -> str:
        """A service deployment's database, as services.localmesh names it."""
        return database_name(DATABASE_PREFIX, deployment)

    def database_url(self, deployment: str) -> str:
        return with_database(self.url, self.database(deployment))

    def spec(self, pool_size: int) -> PostgresSpec:
        return PostgresSpec(url=self.url, database_prefix=DATABASE_PREFIX, pool_size=pool_size)


def pids(services: Mapping[str, ServiceProcess]) -> dict[str, int]:
    return {
        name: svc.process.pid
        for name, svc in services.items()
        if svc.process is not None and svc.process.poll() is None
    }


class EchoMesh:
    """echo-registry, echo-gateway (-> echo-registry) and echo-raw, each its own process, with
    the real mesh's identities and certificates (mutual TLS exactly when the mesh has it)."""

    def __init__(self, data_dir: Path, mesh: Mesh) -> None:
        self.data_dir = data_dir.resolve()
        taken = {int(svc.address.rsplit(":", 1)[1]) for svc in mesh.services.values()}
        registry = f"127.0.0.1:{free_port(taken)}"
        operator = Caller(Kind.OPERATOR, SEEDED_OPERATOR)
        messenger = Caller(Kind.MESSENGER, MESSENGERS[0])
        roles = {
            "echo-registry": ("registry", registry, operator, {}),
            "echo-gateway": (
                "gateway",
                f"127.0.0.1:{free_port(taken)}",
                messenger,
                {"IDMESH_ECHO_REGISTRY": registry},
            ),
            "echo-raw": ("raw", f"127.0.0.1:{free_port(taken)}", operator, {}),
        }
        self.services: dict[str, ServiceProcess] = {}
        for name, (role, address, identity, extra) in roles.items():
            tls = mesh.credentials(identity)
            security = (
                {"IDMESH_INSECURE_DEV_MODE": "true"}
                if tls is None
                else {
                    "IDMESH_TLS_CA": str(tls.ca),
                    "IDMESH_TLS_CERT": str(tls.cert),
                    "IDMESH_TLS_KEY": str(tls.key),
                }
            )
            self.services[name] = ServiceProcess(
                name=name,
                module="bench.echo",
                address=address,
                env={
                    "IDMESH_ECHO_ROLE": role,
                    "IDMESH_BIND": address,
                    "IDMESH_LOG_FORMAT": mesh.spec.log_format,
                    **dict(mesh.spec.common_env),
                    **security,
                    **extra,
                },
                log_path=self.data_dir / "logs" / f"{name}.log",
                info={"role": role},
                identity=identity,
                tls=tls,
            )

    def address(self, name: str) -> str:
        return self.services[name].address

    def launch(self, mesh: Mesh) -> None:
        """Start the processes without waiting (they boot while the real mesh does)."""
        if mesh.spec.tls:
            # the echo gateway acts as messenger alpha, also when the mesh has no gateways
            echoes = [svc.identity for svc in self.services.values()]
            pki.ensure_pki(mesh.pki_dir, [*mesh.identities(), *echoes])
        for svc in self.services.values():
            svc.start()

    def wait(self, timeout: float = 30.0) -> None:
        for svc in self.services.values():
            wait_serving(svc, timeout)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.signal(15)
        for svc in self.services.values():
            if svc.wait(10.0) is None:
                svc.signal(9)
                svc.wait(5.0)


def python_version() -> str:
    return sys.version.split()[0]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def describe_machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": python_version(),
        "grpcio": grpc.__version__,
        "platform": sys.platform,
    }
