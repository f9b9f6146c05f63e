"""What a local mesh is made of: its operators, messengers, engine and replicas (MeshSpec), and
`make up`'s demo topology (demo_spec)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


class MeshError(RuntimeError):
    """A mesh that cannot be built, started or found; the message says what to do."""


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
    for an embedded server under data_dir/postgres; the databases are `<prefix>_<service>`.
    standby: instead of the one embedded server, a primary and its synchronous streaming
    standby under data_dir/postgres-pair (services.localmesh.postgres.PostgresPair), and the
    services given both in one URL (target_session_attrs=read-write)."""

    url: str | None = None
    database_prefix: str = "idmesh"
    pool_size: int = 4  # connections per replica (IDMESH_DB_POOL_SIZE): 100 in all by default
    standby: bool = False

    def __post_init__(self) -> None:
        if self.standby and self.url is not None:
            raise MeshError(
                "a standby is started only beside the embedded server: without a url (a "
                "server of your own gets its standby from your own tooling)"
            )


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
    base_port: int | None = None,
    *,
    postgres: PostgresSpec | None = None,
    replicas: int = 1,
    free_ports: bool = False,
) -> MeshSpec:
    """`make up`'s topology: two operators, the notifier, two messengers, on fixed ports: gRPC
    50051, 50052 (registries), 50060 (notifier), 50071, 50072 (gateways), /metrics 9101..9105.
    With base_port N: gRPC on N+1, N+2, N+10, N+21, N+22 and /metrics on N+91..N+95, so that
    meshes with bases 100 apart run side by side. With postgres (`make up-pg`): every service on
    PostgreSQL, `replicas` of each (the first replica on the ports above, the others on free
    ports). free_ports: every port a free one (tests, beside anything else that runs)."""
    if free_ports:
        ports = dict.fromkeys(DEMO_OFFSETS, (0, 0))
    elif base_port is None:
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
