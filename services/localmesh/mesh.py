"""The local mesh: every service as its own process, on its own port, with its own SQLite file,
or (MeshSpec.postgres) with N replicas of every service over one PostgreSQL server, a database
per service deployment.

`idmesh up` (and so `make up`), the benchmarks, `make chaos`, the project's tests and the pytest
plugin (services.localmesh.pytest_plugin) all run meshes with this class. Each process is
configured only through IDMESH_* environment variables, exactly as in a deployment. mesh.json in
the data folder records where each service listens (and the processes' ids), for the CLI.

On PostgreSQL the replicas of a service share its database; the mesh creates the databases
(`<prefix>_<service>`, e.g. idmesh_registry_beeline) on the server of PostgresSpec.url, or on an
embedded server that it starts with its data under data_dir/postgres and stops with the mesh, or
(PostgresSpec.standby) on an embedded primary with a synchronous streaming standby under
data_dir/postgres-pair, which the services reach through one multi-host URL.
The local mesh has no load balancer: replica i of a service calls replica i of the services it
depends on (a lane; gateway-alpha-2 calls registry-beeline-2 and notifier-2), so that killing
replica i of every service leaves the other lanes whole.

The services never outlive the process that started them: each holds the read end of a pipe
whose write end only the launcher holds (IDMESH_LAUNCHER_FD), and stops as on SIGTERM when it
closes, which the kernel does when the launcher exits, however it exits (kill -9 included). A
pipe rather than PR_SET_PDEATHSIG, which fires when the launching *thread* exits and exists
only on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from services.common import pki
from services.common.identity import Caller, Kind, Role
from services.common.tls import TlsFiles
from services.localmesh.netns import Host
from services.localmesh.postgres import (
    EmbeddedPostgres,
    PostgresPair,
    create_databases,
    database_name,
    describe_url,
    drop_databases,
    with_database,
)
from services.localmesh.process import ServiceProcess, free_port, port_free, wait_serving
from services.localmesh.spec import MeshError, MeshSpec, PostgresSpec

MESH_FILE = "mesh.json"
# PostgresSpec.standby: the primary's and the standby's folder under data_dir (mesh.json names
# it as "postgres_pair", for `idmesh failover`)
PAIR_FOLDER = "postgres-pair"
HOSTED_PORT = 50051  # a service in a namespace of its own (Mesh's hosts): its gRPC port
HOSTED_METRICS_PORT = 9100


class Mesh:
    """Start, stop, kill and restart the processes of a MeshSpec under data_dir."""

    def __init__(
        self, spec: MeshSpec, data_dir: Path, *, hosts: Mapping[str, Host] | None = None
    ) -> None:
        """hosts: service replica name -> the network namespace it runs in (netns.py), where
        it listens on the host's address (gRPC on HOSTED_PORT, /metrics on
        HOSTED_METRICS_PORT), which its certificate names; the others run on 127.0.0.1."""
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
        # identity -> the addresses its hosted replicas listen on (their certificates name them)
        self._host_addresses: dict[Caller, list[str]] = {}
        self._postgres: EmbeddedPostgres | None = None  # the embedded server, while it runs
        self.postgres_pair: PostgresPair | None = None  # or the primary and standby (standby)
        self._build()
        self._add_metrics_ports()
        self._place(hosts or {})

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
            chosen = wanted or free_port(reserved)
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
            # OTEL_SERVICE_NAME: the process's name in traces (exported only when OTEL_* ask)
            env={"OTEL_SERVICE_NAME": name, **env, **security, "IDMESH_BIND": address},
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
            port = wanted.get(name) or free_port(reserved)
            reserved.add(port)
            svc.env["IDMESH_METRICS_BIND"] = svc.info["metrics"] = f"127.0.0.1:{port}"

    def _place(self, hosts: Mapping[str, Host]) -> None:
        """Move each hosted service into its namespace, and point its callers at it."""
        moved: dict[str, str] = {}
        for name, host in hosts.items():
            svc = self.services[name]
            address = f"{host.ip}:{HOSTED_PORT}"
            moved[svc.address] = address
            svc.address = svc.env["IDMESH_BIND"] = address
            svc.env["IDMESH_METRICS_BIND"] = svc.info["metrics"] = (
                f"{host.ip}:{HOSTED_METRICS_PORT}"
            )
            svc.netns = host.netns
            self._host_addresses.setdefault(svc.identity, []).append(host.ip)
        for svc in self.services.values():
            notifier = svc.env.get("IDMESH_NOTIFIER_ADDRESS")
            if notifier is not None:
                svc.env["IDMESH_NOTIFIER_ADDRESS"] = moved.get(notifier, notifier)
            routes = svc.env.get("IDMESH_OPERATORS")
            if routes:
                pairs = (route.split("=", 1) for route in routes.split(","))
                svc.env["IDMESH_OPERATORS"] = ",".join(
                    f"{op}={moved.get(address, address)}" for op, address in pairs
                )

    def address(self, name: str) -> str:
        return self.services[name].address

    def metrics_address(self, name: str) -> str:
        return str(self.services[name].info["metrics"])

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.tls:
            pki.ensure_pki(self.pki_dir, self.identities(), self._host_addresses)
        for name, svc in self.services.items():
            if svc.netns is not None:
                continue  # a namespace of its own: its ports are free
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
        if postgres.standby:
            self.postgres_pair = PostgresPair(self.data_dir / PAIR_FOLDER)
            self.postgres_pair.start()
            server_url = self.postgres_pair.url
        elif server_url is None:
            self._postgres = EmbeddedPostgres(self.data_dir / "postgres")
            server_url = self._postgres.url
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
        wait_serving(self.services[name], timeout)

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
            self._postgres.stop()  # its data stays
            self._postgres = None
        if self.postgres_pair is not None:
            self.postgres_pair.stop()  # their data stays
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
        document: dict[str, Any] = {"services": layout, "pki": pki_dir, "launcher": launcher_pid}
        if self.spec.postgres is not None and self.spec.postgres.standby:
            document["postgres_pair"] = str(self.data_dir / PAIR_FOLDER)
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


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def read_mesh_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / MESH_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshError(f"no mesh found at {path}: start one with `make up`") from None
    return data


def load_layout(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The services of a running mesh, from data_dir/mesh.json."""
    services: dict[str, dict[str, Any]] = read_mesh_file(data_dir)["services"]
    return services


def load_pki_dir(data_dir: Path) -> Path | None:
    """The running mesh's PKI folder, or None for a plaintext mesh."""
    folder = read_mesh_file(data_dir).get("pki")
    return Path(folder) if folder else None
