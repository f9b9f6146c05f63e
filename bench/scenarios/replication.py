"""7. What synchronous replication costs: identifications (StartIdentification +
ConfirmPossession -> IDENTIFIED) and TerminateContract calls on PostgreSQL with the primary
alone, and with a synchronous streaming standby (synchronous_standby_names set, synchronous_commit
= on: a COMMIT returns once the standby has flushed it), in the same run, on the same mesh and
servers. Durable as docs/operations.md says a deployment runs: fsync and synchronous_commit on
(the other PostgreSQL scenarios run with synchronous_commit off, as SQLite's NORMAL).

It runs with a mesh and servers of its own (registry-beeline, the notifier, gateway-alpha, one
replica each) once the pass's meshes have stopped. The setups take turns in slices (SCHEDULE),
each slice a closed loop of identifications then one of terminations; a setup's figures pool
its slices' latencies. The standby is made (pg_basebackup) before the first synchronous slice,
stopped before each slice alone and started again (it catches up) before the next synchronous.
On one box the standby shares the cores and the disk with the mesh and the primary, so the
figure counts the standby's own work too; in a deployment it has a host of its own, and the
wait is a network round trip and the standby's WAL flush."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import procs, seed, topology
from bench.config import BenchConfig
from bench.load import Latencies, closed_loop, honouring_shedding
from bench.scenarios.context import CALL_TIMEOUT, BenchFailure, latency_dict, progress, ratio
from bench.scenarios.identification import IDENTIFIED, OutboxReader
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.stores import StoreReader
from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.localmesh import (
    Mesh,
    MeshError,
    MeshSpec,
    MessengerSpec,
    OperatorSpec,
    PostgresSpec,
)
from services.localmesh.postgres import PostgresCluster, create_databases, with_database

MESSENGER = "alpha"
REGISTRY = f"registry-{topology.SEEDED_OPERATOR}"
GATEWAY = f"gateway-{MESSENGER}"
ALONE, SYNC = "alone", "sync"  # the primary alone; the primary with its synchronous standby
# The slices, in the order they run: each setup as often first as second, so that a drift of
# the machine's load during the run weighs on both alike.
SCHEDULE = (ALONE, SYNC, SYNC, ALONE, ALONE, SYNC, SYNC, ALONE)
STANDBY = "standby"  # its application_name (PostgresCluster.standby)
# The primary keeps the WAL a stopped standby needs to catch up when it starts again.
SETTINGS = {"wal_keep_size": "1GB"}
KINDS = ("identification", "terminations")


def mesh_spec(server_url: str, pool_size: int) -> MeshSpec:
    return MeshSpec(
        common_env=topology.UNLIMITED_ENV,
        operators=(OperatorSpec(topology.SEEDED_OPERATOR, "Beeline"),),
        messengers=(MessengerSpec(MESSENGER),),
        log_format="json",
        postgres=PostgresSpec(
            url=server_url, database_prefix=topology.DATABASE_PREFIX, pool_size=pool_size
        ),
    )


class Load:
    """The two operations, over subscribers no slice has used yet: terminations of the
    first half (bound to alpha: each queues one notice), identifications of the second."""

    def __init__(self, config: BenchConfig, mesh: Mesh) -> None:
        self.config = config
        self.bound = config.replication_subscribers // 2
        frontend = Caller(Kind.MESSENGER, MESSENGER, Role.FRONTEND)
        admin = Caller(Kind.OPERATOR, topology.SEEDED_OPERATOR, Role.ADMIN)
        self.channels = [
            open_channel(mesh.address(GATEWAY), identity=frontend, tls=mesh.credentials(frontend)),
            open_channel(mesh.address(REGISTRY), identity=admin, tls=mesh.credentials(admin)),
        ]
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self.channels[0])
        self.admin = registry_pb2_grpc.RegistryAdminServiceStub(self.channels[1])
        self.outbox = OutboxReader(Path(mesh.services[GATEWAY].info["sms_outbox"]))
        self.terminated = itertools.count()
        self.identified = itertools.count(self.bound)
        self.users = itertools.count()
        self.done = dict.fromkeys(KINDS, 0)  # operations completed, warm-ups included

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def _next(self, counter: itertools.count[int], end: int) -> int:
        index = next(counter)
        if index >= end:
            raise BenchFailure("ran out of seeded subscribers: raise replication_subscribers")
        return index

    async def identify(self, _i: int) -> None:
        number = seed.beeline_number(
            self._next(self.identified, self.config.replication_subscribers)
        )
        start = gateway_pb2.StartIdentificationRequest(
            user_id=f"r-{next(self.users)}", phone_number=number
        )
        started = await honouring_shedding(
            lambda: self.gateway.StartIdentification(start, timeout=CALL_TIMEOUT)
        )
        ident_id = started.identification.identification_id
        confirm = gateway_pb2.ConfirmPossessionRequest(
            identification_id=ident_id, code=self.outbox.code(ident_id)
        )
        confirmed = await honouring_shedding(
            lambda: self.gateway.ConfirmPossession(confirm, timeout=CALL_TIMEOUT)
        )
        if confirmed.identification.state != IDENTIFIED:
            raise BenchFailure(
                "identification ended "
                f"{gateway_pb2.IdentificationState.Name(confirmed.identification.state)}"
            )
        self.done["identification"] += 1

    def operations(self) -> dict[str, Callable[[int], Awaitable[None]]]:
        """KINDS' operations."""
        return {"identification": self.identify, "terminations": self.terminate}

    async def terminate(self, _i: int) -> None:
        number = seed.beeline_number(self._next(self.terminated, self.bound))
        request = registry_pb2.TerminateContractRequest(phone_number=number)
        reply = await honouring_shedding(
            lambda: self.admin.TerminateContract(request, timeout=CALL_TIMEOUT)
        )
        if reply.notices_queued != 1:
            raise BenchFailure(f"termination queued {reply.notices_queued} notices, not 1")
        self.done["terminations"] += 1


async def _drained(registry: StoreReader, notifier: StoreReader, timeout: float) -> None:
    """Wait until the terminations' notices are all published and acked by the gateway, so
    that one step's fan-out does not run into the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = await registry.fetch(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL"
        )
        heads = await notifier.fetch("SELECT head_seq, acked_seq FROM sequences")
        if int(queued[0][0]) == 0 and all(int(h) == int(a) for h, a in heads):
            return
        await asyncio.sleep(0.1)
    raise BenchFailure(f"the terminations' notices not delivered within {timeout:.0f}s")


async def run_alone(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    try:
        return await _run(config, work_dir)
    except MeshError as exc:  # a server or the mesh that did not start
        raise BenchFailure(str(exc)) from None


async def _run(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        primary = await asyncio.to_thread(
            stack.enter_context, PostgresCluster.create(settings=SETTINGS)
        )
        url = primary.url
        mesh = Mesh(mesh_spec(url, config.postgres_pool_size), work_dir / "replication-mesh")

        def database_url(deployment: str) -> str:
            return with_database(url, topology.PostgresServer.database(deployment))

        deployments = sorted({svc.info["deployment"] for svc in mesh.services.values()})
        await create_databases(url, [topology.PostgresServer.database(d) for d in deployments])
        plan = seed.RegistrySeed(
            config.replication_subscribers,
            (MESSENGER,),
            config.replication_subscribers // 2,
            seed.utcnow(),
        )
        await seed.seed_registry_pg(database_url(REGISTRY), plan)
        await asyncio.to_thread(mesh.start, 120.0)
        load = Load(config, mesh)
        registry = StoreReader(url=database_url(REGISTRY))
        notifier = StoreReader(url=database_url("notifier"))
        standby: PostgresCluster | None = None
        streaming = False  # the standby runs, synchronous
        try:
            pooled = Pooled()
            for op in load.operations().values():  # warm-up, not measured
                await closed_loop(
                    op,
                    concurrency=config.replication_concurrency,
                    duration=config.warmup_seconds,
                    warmup=0.0,
                )
            await _drained(registry, notifier, config.drain_timeout_seconds)
            for setup in SCHEDULE:
                if setup == SYNC and not streaming:
                    if standby is None:  # made once, started again after each slice alone
                        standby = await asyncio.to_thread(stack.enter_context, primary.standby())
                    else:
                        await asyncio.to_thread(standby.start)
                        await asyncio.to_thread(
                            primary.set, "synchronous_standby_names", f"'{STANDBY}'"
                        )
                    await asyncio.to_thread(primary.wait_streaming, sync_state="sync")
                    streaming = True
                elif setup == ALONE and streaming and standby is not None:
                    await asyncio.to_thread(primary.set, "synchronous_standby_names", "''")
                    await asyncio.to_thread(standby.stop, "fast")
                    streaming = False
                replicas = await asyncio.to_thread(
                    primary.query, "SELECT sync_state FROM pg_stat_replication"
                )
                if replicas != ([["sync"]] if setup == SYNC else []):
                    raise BenchFailure(f"primary {setup}: pg_stat_replication shows {replicas}")
                servers = {"primary": primary}
                if streaming and standby is not None:
                    servers["standby"] = standby
                await _slice(config, setup, load, pooled, servers)
                await _drained(registry, notifier, config.drain_timeout_seconds)
        finally:
            await load.close()
            await registry.close()
            await notifier.close()
            if streaming:  # no commit may wait for a standby that is stopping
                await asyncio.to_thread(primary.set, "synchronous_standby_names", "''")
            await asyncio.to_thread(mesh.stop)
    return _result(config, pooled)


class Pooled:
    """Each setup's and operation's measured latencies and seconds, over its slices, and the
    CPU time the servers spent per operation."""

    def __init__(self) -> None:
        self.latencies: dict[tuple[str, str], list[float]] = {}
        self.seconds: dict[tuple[str, str], float] = {}
        self.slices: dict[tuple[str, str], list[float]] = {}  # each slice's throughput
        self.cpu: dict[tuple[str, str], dict[str, float]] = {}  # server -> CPU seconds
        self.ops: dict[tuple[str, str], int] = {}  # operations the CPU time was spent on

    def figures(self, setup: str, kind: str) -> dict[str, Any]:
        key = (setup, kind)
        latencies = self.latencies[key]
        ops = max(self.ops.get(key, 0), 1)
        return {
            "completed": len(latencies),
            "seconds": self.seconds[key],
            "throughput": round(len(latencies) / self.seconds[key], 1),
            "latency": latency_dict(Latencies.of(latencies)),
            "slices_throughput": self.slices[key],
            "server_cpu_ms_per_op": {
                server: round(seconds * 1000 / ops, 3)
                for server, seconds in self.cpu.get(key, {}).items()
            },
        }


def _server_cpu(servers: Mapping[str, PostgresCluster]) -> dict[str, float]:
    """Each server's CPU seconds so far: its postmaster and backends (procs.tree_cpu_seconds)."""
    result = {}
    for name, server in servers.items():
        pid = server.pid()
        seconds = procs.tree_cpu_seconds(pid) if pid is not None else None
        if seconds is not None:
            result[name] = seconds
    return result


async def _slice(
    config: BenchConfig,
    setup: str,
    load: Load,
    pooled: Pooled,
    servers: Mapping[str, PostgresCluster],
) -> None:
    """Identifications, then terminations, each a closed loop; their latencies pooled with
    the setup's other slices, and the servers' CPU time over the whole loop (its warm-up
    included) with the operations it completed."""
    for kind, op in load.operations().items():
        key = (setup, kind)
        cpu_before, done_before = _server_cpu(servers), load.done[kind]
        run = await closed_loop(
            op,
            concurrency=config.replication_concurrency,
            duration=config.replication_seconds,
            warmup=config.warmup_seconds,
            samples=pooled.latencies.setdefault(key, []),
        )
        if run.errors:
            raise BenchFailure(f"{kind}, primary {setup}: {run.error_samples}")
        cpu_after = _server_cpu(servers)
        spent = pooled.cpu.setdefault(key, {})
        for server, seconds in cpu_after.items():
            if server in cpu_before:
                spent[server] = spent.get(server, 0.0) + seconds - cpu_before[server]
        pooled.ops[key] = pooled.ops.get(key, 0) + load.done[kind] - done_before
        pooled.seconds[key] = pooled.seconds.get(key, 0.0) + run.seconds
        pooled.slices.setdefault(key, []).append(round(run.throughput, 1))
        progress(
            f"replication, primary {setup}: {kind} {run.throughput:,.1f}/s "
            f"p99 {run.latency.p99_ms:.1f} ms"
        )


def _result(config: BenchConfig, pooled: Pooled) -> dict[str, Any]:
    """Each setup's figures, and the synchronous standby's ratios to the primary alone."""
    result: dict[str, Any] = {
        "status": "ok",
        "concurrency": config.replication_concurrency,
        "slice_seconds": config.replication_seconds,
        "schedule": list(SCHEDULE),
    }
    for setup in (ALONE, SYNC):
        result[setup] = {kind: pooled.figures(setup, kind) for kind in KINDS}
    for kind in KINDS:
        alone, synchronous = result[ALONE][kind], result[SYNC][kind]
        result[f"{kind}_ratio"] = {
            "throughput": ratio(synchronous["throughput"], alone["throughput"]),
            "p99": ratio(synchronous["latency"]["p99_ms"], alone["latency"]["p99_ms"]),
        }
    progress(
        "replication: with a synchronous standby, "
        + ", ".join(
            f"{kind} x{result[f'{kind}_ratio']['throughput']:.2f} throughput, "
            f"x{result[f'{kind}_ratio']['p99']:.2f} p99"
            for kind in KINDS
        )
        + " of the primary alone"
    )
    return result


SCENARIO = Scenario(
    name="replication",
    title="synchronous standby",
    run_alone=run_alone,
    targets=(
        Target(
            name="identification c={concurrency}, synchronous standby: throughput",
            figure="sync.identification.throughput",
            unit="ident/s",
            baseline="alone.identification.throughput",
            baseline_name="primary alone",
            ratio="identification_ratio.throughput",
            op=">=",
            threshold=0.7,
            doc="identifications per second on PostgreSQL with a synchronous standby on the "
            "same box: at least 0.7 of the same primary's alone, in the same run (slices taking "
            "turns); on one box the standby's replay and the primary's WAL sender take the "
            "services' cores (the servers' CPU per operation is in the scenario's section), "
            "so a change that adds commits, not the wait itself, is what falls below",
        ),
        Target(
            name="identification c={concurrency}, synchronous standby: p99",
            figure="sync.identification.latency.p99_ms",
            unit="ms",
            baseline="alone.identification.latency.p99_ms",
            baseline_name="primary alone",
            ratio="identification_ratio.p99",
            op="<=",
            threshold=2.0,
            doc="the identification's p99 with a synchronous standby: at most twice the "
            "primary's alone (each of its commits, in the gateway and the registry, waits "
            "for the standby's flush)",
        ),
        Target(
            name="TerminateContract c={concurrency}, synchronous standby: throughput",
            figure="sync.terminations.throughput",
            unit="calls/s",
            baseline="alone.terminations.throughput",
            baseline_name="primary alone",
            ratio="terminations_ratio.throughput",
            op=">=",
            threshold=0.7,
            doc="acknowledged terminations per second (each with its notice in the outbox) "
            "with a synchronous standby: at least 0.7 of the primary's alone",
        ),
        Target(
            name="TerminateContract c={concurrency}, synchronous standby: p99",
            figure="sync.terminations.latency.p99_ms",
            unit="ms",
            baseline="alone.terminations.latency.p99_ms",
            baseline_name="primary alone",
            ratio="terminations_ratio.p99",
            op="<=",
            threshold=2.0,
            doc="TerminateContract's p99 with a synchronous standby: at most twice the "
            "primary's alone",
        ),
    ),
)
