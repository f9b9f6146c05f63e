"""The six scenarios. Each returns a plain dict (JSON-ready) with its figures and baselines.

Every baseline is measured in the same run, right next to the figure it normalises, because the
machine is shared and noisy: only ratios carry from one run to the next.

On PostgreSQL with several replicas of every service, the load is spread over the replicas
(round robin, call by call) as a load balancer would, the CPU figures count every replica and
the database server (procs.POSTGRES), and the fan-out's progress is read from the databases.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import procs, seed, topology
from bench.config import SQLITE, BenchConfig
from bench.load import (
    Latencies,
    RunResult,
    closed_loop,
    honouring_shedding,
    open_loop,
    run_count,
)
from bench.topology import EchoMesh, PostgresServer
from services.common.channels import open_channel, sent_at
from services.common.context import SENT_AT_METADATA_KEY
from services.common.identity import Caller, Kind, Role
from services.common.pg import migrate
from services.common.timeutil import from_iso
from services.localmesh import Blackhole, Mesh
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS

IDENTIFIED = gateway_pb2.IDENTIFICATION_STATE_IDENTIFIED
IMPORT_METHOD = "/idmesh.registry.v1.RegistryAdminService/ImportSubscribers"
CALL_TIMEOUT = 60.0
T = TypeVar("T")


class BenchFailure(Exception):
    """An operation did not end as it must (wrong state, wrong count): a bench bug or a
    service bug, never a slow run."""


@dataclass
class Context:
    """What the scenarios share: the config, the meshes, channels, the profile folder."""

    config: BenchConfig
    mesh: Mesh
    echo: EchoMesh
    work_dir: Path
    profile_dir: Path
    postgres: PostgresServer | None = None  # the pass's server, on PostgreSQL
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)

    def channel(self, address: str, identity: Caller) -> grpc.aio.Channel:
        """A channel as the services open theirs (open_channel), acting as identity."""
        channel = open_channel(address, identity=identity, tls=self.mesh.credentials(identity))
        self.channels.append(channel)
        return channel

    def raw_channel(self, address: str, identity: Caller) -> grpc.aio.Channel:
        """A bare grpc.aio channel: default options, no interceptors, the same transport."""
        tls = self.mesh.credentials(identity)
        channel = (
            grpc.aio.secure_channel(address, tls.channel_credentials())
            if tls is not None
            else grpc.aio.insecure_channel(address)
        )
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def replica_channels(self, deployment: str, identity: Caller) -> list[grpc.aio.Channel]:
        """A channel to each replica of a service deployment (one on SQLite)."""
        return [
            self.channel(self.mesh.address(name), identity)
            for name in topology.replicas(self.mesh, deployment)
        ]

    def names(self, *deployments: str) -> tuple[str, ...]:
        """The processes whose CPU a figure counts: every replica of the deployments, and the
        database server on PostgreSQL."""
        names = [n for d in deployments for n in topology.replicas(self.mesh, d)]
        if self.postgres is not None:
            names.append(procs.POSTGRES)
        return tuple(names)

    def mesh_pids(self) -> dict[str, int]:
        pids = {**topology.pids(self.mesh.services), **topology.pids(self.echo.services)}
        if self.postgres is not None:
            pids[procs.POSTGRES] = self.postgres.pid
        return pids

    def profiling(self, label: str, names: Sequence[str]) -> AbstractContextManager[Any]:
        """py-spy on the named services while the block runs, when profiling is on (the
        database server is C: its CPU time is measured, not profiled)."""
        if not self.config.profile:
            return nullcontext()
        if self.config.engine != SQLITE:
            label = f"{self.config.engine}-{label}"
        pids = {n: p for n, p in self.mesh_pids().items() if n in names and n != procs.POSTGRES}
        profiler = procs.Profiler(self.profile_dir, label, pids)
        self.profiles[label] = profiler
        return profiler


def level_result(run: RunResult, cpu: dict[str, float], names: Sequence[str]) -> dict[str, Any]:
    """A run's figures plus the CPU milliseconds each process spent per completed operation."""
    result = run.as_dict()
    ops = max(run.completed, 1)
    result["cpu_ms_per_op"] = {n: round(cpu[n] * 1000 / ops, 3) for n in names if n in cpu}
    return result


async def measured(
    ctx: Context, names: Sequence[str], work: Awaitable[T]
) -> tuple[T, dict[str, float]]:
    """Await work (not started before this call); return its result and the CPU seconds the
    named processes spent meanwhile."""
    pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
    mark = procs.cpu_mark(pids)
    result = await work
    return result, procs.cpu_since(mark, pids)


def ratio(value: float, baseline: float) -> float:
    if not baseline or math.isnan(baseline) or math.isnan(value):
        return math.nan
    return round(value / baseline, 3)


async def idle_cpu(ctx: Context) -> dict[str, float]:
    """CPU seconds per second each of the mesh's processes (and the database server) spends
    while nothing calls it: the background work (relays, polls, leases, LISTEN wake-ups)."""
    names = [n for n in ctx.mesh_pids() if not n.startswith("echo-")]
    seconds = ctx.config.idle_seconds
    _, cpu = await measured(ctx, names, asyncio.sleep(seconds))
    return {n: round(v / seconds, 4) for n, v in cpu.items()}


# --- 1. identification ---------------------------------------------------------------------


class OutboxReader:
    """The development SMS outbox (JSON lines), read incrementally: identification id -> code."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self._codes: dict[str, str] = {}

    def code(self, identification_id: str) -> str:
        code = self._codes.pop(identification_id, None)
        if code is None:
            self._read()
            code = self._codes.pop(identification_id, None)
        if code is None:
            raise BenchFailure(f"no SMS for identification {identification_id} in {self._path}")
        return code

    def _read(self) -> None:
        try:
            with self._path.open("rb") as outbox:
                outbox.seek(self._offset)
                data = outbox.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                message = json.loads(line)
                self._codes[message["identification_id"]] = message["code"]


async def identification(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    frontend = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
    reals = [
        gateway_pb2_grpc.GatewayServiceStub(channel)
        for channel in ctx.replica_channels("gateway-alpha", frontend)
    ]
    echo = gateway_pb2_grpc.GatewayServiceStub(
        ctx.channel(ctx.echo.address("echo-gateway"), frontend)
    )
    outbox = OutboxReader(Path(ctx.mesh.services["gateway-alpha"].info["sms_outbox"]))
    numbers = itertools.count(cfg.fanout_subscribers)  # subscribers nobody has bound yet
    users = itertools.count()

    async def real_op(i: int) -> None:
        real = reals[i % len(reals)]  # both calls of one identification at one replica
        index = next(numbers)
        if index >= cfg.subscribers:
            raise BenchFailure("ran out of seeded subscribers: raise --subscribers")
        start = gateway_pb2.StartIdentificationRequest(
            user_id=f"id-{next(users)}", phone_number=seed.beeline_number(index)
        )
        started = await honouring_shedding(
            lambda: real.StartIdentification(start, timeout=CALL_TIMEOUT)
        )
        ident_id = started.identification.identification_id
        confirm = gateway_pb2.ConfirmPossessionRequest(
            identification_id=ident_id, code=outbox.code(ident_id)
        )
        confirmed = await honouring_shedding(
            lambda: real.ConfirmPossession(confirm, timeout=CALL_TIMEOUT)
        )
        state = confirmed.identification.state
        if state != IDENTIFIED:
            raise BenchFailure(
                f"identification ended {gateway_pb2.IdentificationState.Name(state)} "
                f"({gateway_pb2.Reason.Name(confirmed.identification.reason)})"
            )

    async def echo_op(i: int) -> None:
        started = await echo.StartIdentification(
            gateway_pb2.StartIdentificationRequest(
                user_id=f"echo-{i}", phone_number=seed.beeline_number(i)
            ),
            timeout=CALL_TIMEOUT,
        )
        confirmed = await echo.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=started.identification.identification_id, code="000000"
            ),
            timeout=CALL_TIMEOUT,
        )
        if confirmed.identification.state != IDENTIFIED:
            raise BenchFailure("echo identification not IDENTIFIED")

    real_names = ctx.names("gateway-alpha", f"registry-{topology.SEEDED_OPERATOR}")
    echo_names = ("echo-gateway", "echo-registry")
    levels = []
    for concurrency in cfg.identification_levels:
        with ctx.profiling(f"identification-c{concurrency}", real_names):
            mesh_run, mesh_cpu = await measured(
                ctx,
                real_names,
                closed_loop(
                    real_op,
                    concurrency=concurrency,
                    duration=cfg.identification_seconds,
                    warmup=cfg.warmup_seconds,
                ),
            )
        echo_run, echo_cpu = await measured(
            ctx,
            echo_names,
            closed_loop(
                echo_op,
                concurrency=concurrency,
                duration=cfg.identification_seconds,
                warmup=cfg.warmup_seconds,
            ),
        )
        levels.append(
            {
                "concurrency": concurrency,
                "mesh": level_result(mesh_run, mesh_cpu, real_names),
                "echo": level_result(echo_run, echo_cpu, echo_names),
                "throughput_ratio": ratio(mesh_run.throughput, echo_run.throughput),
                "p99_ratio": ratio(mesh_run.latency.p99_ms, echo_run.latency.p99_ms),
            }
        )
        _progress(
            f"identification c={concurrency}: mesh {mesh_run.throughput:.1f}/s "
            f"p99 {mesh_run.latency.p99_ms:.0f} ms; echo {echo_run.throughput:.1f}/s "
            f"p99 {echo_run.latency.p99_ms:.1f} ms"
        )
    return {"status": "ok", "unit": "identifications/s", "levels": levels}


async def compare_at_levels(
    ctx: Context,
    *,
    label: str,
    levels: Sequence[int],
    seconds: float,
    ops: Mapping[str, Callable[[int], Any]],
    names: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """For each concurrency level, a closed loop of each op (the real server first, "mesh",
    profiled when profiling is on), then its throughput and p99 ratios to "echo"."""
    results = []
    for concurrency in levels:
        level: dict[str, Any] = {"concurrency": concurrency}
        for kind, op in ops.items():
            profile = (
                ctx.profiling(f"{label}-c{concurrency}", names[kind])
                if kind == "mesh"
                else nullcontext()
            )
            with profile:
                run, cpu = await measured(
                    ctx,
                    names[kind],
                    closed_loop(
                        op,
                        concurrency=concurrency,
                        duration=seconds,
                        warmup=ctx.config.warmup_seconds,
                    ),
                )
            level[kind] = level_result(run, cpu, names[kind])
        level["throughput_ratio"] = ratio(level["mesh"]["throughput"], level["echo"]["throughput"])
        level["p99_ratio"] = ratio(
            level["mesh"]["latency"]["p99_ms"], level["echo"]["latency"]["p99_ms"]
        )
        results.append(level)
    return results


# --- 2. VerifySubscriber -------------------------------------------------------------------


async def verify(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    messenger = Caller(Kind.MESSENGER, "alpha")
    registry_name = f"registry-{topology.SEEDED_OPERATOR}"
    stubs = {
        "mesh": [
            registry_pb2_grpc.RegistryServiceStub(channel)
            for channel in ctx.replica_channels(registry_name, messenger)
        ],
        "echo": [
            registry_pb2_grpc.RegistryServiceStub(
                ctx.channel(ctx.echo.address("echo-registry"), messenger)
            )
        ],
        "raw": [
            registry_pb2_grpc.RegistryServiceStub(
                ctx.raw_channel(ctx.echo.address("echo-raw"), messenger)
            )
        ],
    }
    names = {"mesh": ctx.names(registry_name), "echo": ("echo-registry",), "raw": ("echo-raw",)}
    rng = random.Random(1279)
    low = min(cfg.fanout_subscribers, cfg.subscribers - 1)  # leave the fan-out's bindings be
    requests = itertools.count()

    def make_op(replicas: list[registry_pb2_grpc.RegistryServiceStub]) -> Callable[[int], Any]:
        async def op(i: int) -> None:
            stub = replicas[i % len(replicas)]
            request = registry_pb2.VerifySubscriberRequest(
                idempotency_key=f"bench-{next(requests)}",
                phone_number=seed.beeline_number(rng.randrange(low, cfg.subscribers)),
            )
            reply = await honouring_shedding(
                lambda: stub.VerifySubscriber(request, timeout=CALL_TIMEOUT)
            )
            if reply.result != registry_pb2.VERIFICATION_RESULT_IDENTIFIED:
                raise BenchFailure(f"VerifySubscriber answered {reply.result}")

        return op

    levels = await compare_at_levels(
        ctx,
        label="verify",
        levels=cfg.verify_levels,
        seconds=cfg.verify_seconds,
        ops={kind: make_op(stub) for kind, stub in stubs.items()},
        names=names,
    )
    for level in levels:
        _progress(
            f"verify c={level['concurrency']}: mesh {level['mesh']['throughput']:.0f}/s, "
            f"echo {level['echo']['throughput']:.0f}/s, raw {level['raw']['throughput']:.0f}/s"
        )
    return {
        "status": "ok",
        "unit": "calls/s",
        "subscribers": cfg.subscribers,
        "levels": levels,
    }


# --- 3. termination fan-out ----------------------------------------------------------------


class StoreReader:
    """Read-only queries on one service deployment's store: its SQLite file, or its
    PostgreSQL database (one connection, opened on first use). The probe's SQL is the same on
    both engines (no parameters)."""

    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        self._path = path
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def fetch(self, sql: str) -> list[Sequence[Any]]:
        if self._url is not None:
            if self._conn is None:
                self._conn = await asyncpg.connect(self._url)
            return [tuple(row) for row in await self._conn.fetch(sql)]
        assert self._path is not None
        return await asyncio.to_thread(self._sqlite, self._path, sql)

    @staticmethod
    def _sqlite(path: Path, sql: str) -> list[Sequence[Any]]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def store_reader(ctx: Context, deployment: str) -> StoreReader:
    if ctx.postgres is not None:
        return StoreReader(url=ctx.postgres.database_url(deployment))
    return StoreReader(path=topology.db_path(ctx.mesh, deployment))


@dataclass
class FanoutProbe:
    """Reads progress straight from the stores (read-only): the gateways' inboxes and
    revocations and the notifier's acked positions."""

    gateways: dict[str, StoreReader]
    notifier: StoreReader

    @classmethod
    def of(cls, ctx: Context) -> FanoutProbe:
        return cls(
            gateways={m: store_reader(ctx, f"gateway-{m}") for m in topology.MESSENGERS},
            notifier=store_reader(ctx, "notifier"),
        )

    async def close(self) -> None:
        for reader in (*self.gateways.values(), self.notifier):
            await reader.close()

    async def applied(self) -> dict[str, int]:
        return {
            m: int((await r.fetch("SELECT count(*) FROM notice_inbox"))[0][0])
            for m, r in self.gateways.items()
        }

    async def acked(self) -> dict[str, tuple[int, int]]:
        rows = await self.notifier.fetch("SELECT messenger_id, head_seq, acked_seq FROM sequences")
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    async def revoked_at(self, messenger_id: str, first: int, count: int) -> dict[int, datetime]:
        """fan-<i> -> when its gateway revoked it, for i in [first, first + count)."""
        rows = await self.gateways[messenger_id].fetch(
            "SELECT user_id, completed_at FROM identifications "
            "WHERE state = 'REVOKED' AND user_id LIKE 'fan-%'"
        )
        result = {}
        for user_id, completed_at in rows:
            i = int(user_id[4:])
            if first <= i < first + count:
                at = completed_at if isinstance(completed_at, datetime) else from_iso(completed_at)
                result[i] = at
        return result

    async def wait_heads(self, expected: dict[str, int], timeout: float) -> float | None:
        """Wait until each messenger's stream holds `expected[m]` events, all acked (applied by
        its gateway); the wall-clock time (time.time()) it was first seen, None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            acked = await self.acked()
            if all(acked.get(m, (0, -1))[1] >= n for m, n in expected.items()):
                return time.time()
            await asyncio.sleep(0.05)
        return None

    async def wait_done(self, expected: int, timeout: float) -> dict[str, float | None]:
        """Wait until every gateway applied `expected` notices and the notifier has them all
        acked; wall-clock times (time.time()) at which each was first seen."""
        seen: dict[str, float | None] = {"applied": None, "acked": None}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            applied = await self.applied()
            if seen["applied"] is None and all(n >= expected for n in applied.values()):
                seen["applied"] = time.time()
            acked = await self.acked()
            if all(
                acked.get(m, (0, 0))[1] >= expected and acked[m][0] == acked[m][1]
                for m in self.gateways
            ):
                seen["acked"] = time.time()
                if seen["applied"] is None:
                    seen["applied"] = seen["acked"]
                return seen
            await asyncio.sleep(0.05)
        return seen


async def fanout(ctx: Context) -> dict[str, Any]:
    probe = FanoutProbe.of(ctx)
    try:
        return await _fanout(ctx, probe)
    finally:
        await probe.close()


async def _fanout(ctx: Context, probe: FanoutProbe) -> dict[str, Any]:
    cfg = ctx.config
    registry_name = f"registry-{topology.SEEDED_OPERATOR}"
    admins = [
        registry_pb2_grpc.RegistryAdminServiceStub(channel)
        for channel in ctx.replica_channels(
            registry_name, Caller(Kind.OPERATOR, topology.SEEDED_OPERATOR, Role.ADMIN)
        )
    ]
    admin = admins[0]  # the bulk stream's: one billing system, one stream
    names = ctx.names(registry_name, "notifier", *(f"gateway-{m}" for m in topology.MESSENGERS))
    send_times: dict[int, float] = {}

    async def terminate(i: int) -> None:
        send_times.setdefault(i, time.time())  # a retried call keeps its first send time
        reply = await admins[i % len(admins)].TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=seed.beeline_number(i)),
            timeout=CALL_TIMEOUT,
        )
        if reply.notices_queued != len(topology.MESSENGERS):
            raise BenchFailure(f"termination queued {reply.notices_queued} notices, not 2")

    # Burst: as fast as the registry takes them; events/s end to end (terminate -> revoked in
    # both gateways -> acked at the notifier).
    burst = cfg.terminations
    events = burst * len(topology.MESSENGERS)
    with ctx.profiling("fanout-burst", names):
        pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
        mark = procs.cpu_mark(pids)
        wall_start, calls = await run_count(
            lambda i: honouring_shedding(lambda: terminate(i)),
            count=burst,
            concurrency=cfg.termination_concurrency,
        )
        calls_done = time.time()
        seen = await probe.wait_done(burst, cfg.drain_timeout_seconds)
        cpu = procs.cpu_since(mark, pids)
    if seen["acked"] is None:
        raise BenchFailure(
            f"fan-out burst not drained within {cfg.drain_timeout_seconds:.0f}s: "
            f"applied {await probe.applied()}, notifier {await probe.acked()}"
        )
    assert seen["applied"] is not None
    burst_latency = await _revocation_latency(probe, send_times, range(burst))
    capacity = round(burst / (calls_done - wall_start), 1)
    burst_result = {
        "terminations": burst,
        "events": events,
        "terminate_calls": calls.as_dict(),
        "terminations_per_second": capacity,
        "seconds_to_revoked": round(seen["applied"] - wall_start, 3),
        "seconds_to_acked": round(seen["acked"] - wall_start, 3),
        "events_per_second": round(events / (seen["acked"] - wall_start), 1),
        "terminate_to_revoked": burst_latency,
        "cpu_ms_per_event": {n: round(cpu[n] * 1000 / events, 3) for n in cpu},
    }
    _progress(
        f"fan-out burst: {burst} terminations, {burst_result['events_per_second']} events/s "
        f"end to end; terminate calls {burst_result['terminations_per_second']}/s"
    )

    # Overload: an open loop at steady_overload x the capacity the burst measured. The
    # registry sheds what it cannot take (RESOURCE_EXHAUSTED at once); every accepted
    # termination must reach both gateways, and no shed one may.
    heads_before = {m: head for m, (head, _acked) in (await probe.acked()).items()}
    rate = min(cfg.steady_rate_cap, cfg.steady_overload * capacity)
    steady = max(1, int(rate * cfg.steady_seconds))
    accepted: dict[int, float] = {}  # index -> call latency (s)
    shed: set[int] = set()
    shed_latency: list[float] = []  # how soon the refusals came
    failed: set[int] = set()

    # The open loop sends from a bare channel (the identity is the TLS certificate's; the
    # send time, x-idmesh-sent-at, given per call): the client's own interceptors would make
    # this one process the bottleneck, and its lateness would count as the registry's.
    admin_id = Caller(Kind.OPERATOR, topology.SEEDED_OPERATOR, Role.ADMIN)
    bares = (
        [
            registry_pb2_grpc.RegistryAdminServiceStub(
                ctx.raw_channel(ctx.mesh.address(name), admin_id)
            )
            for name in topology.replicas(ctx.mesh, registry_name)
        ]
        if ctx.mesh.credentials(admin_id) is not None
        else admins
    )

    async def terminate_under_overload(i: int) -> None:
        began = time.perf_counter()
        send_times.setdefault(i, time.time())
        try:
            reply = await bares[i % len(bares)].TerminateContract(
                registry_pb2.TerminateContractRequest(phone_number=seed.beeline_number(i)),
                timeout=CALL_TIMEOUT,
                metadata=((SENT_AT_METADATA_KEY, sent_at()),),
            )
            if reply.notices_queued != len(topology.MESSENGERS):
                raise BenchFailure(f"termination queued {reply.notices_queued} notices, not 2")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                failed.add(i)
                raise
            shed.add(i)
            shed_latency.append(time.perf_counter() - began)
            return
        accepted[i] = time.perf_counter() - began

    with ctx.profiling("fanout-overload", names):
        run = await open_loop(terminate_under_overload, rate=rate, count=steady, first_index=burst)
        seen = await probe.wait_done(burst + len(accepted), cfg.drain_timeout_seconds)
    if seen["acked"] is None:
        raise BenchFailure(
            f"fan-out overload run not drained within {cfg.drain_timeout_seconds:.0f}s: "
            f"applied {await probe.applied()}, notifier {await probe.acked()}"
        )
    await _check_overload(probe, heads_before, burst, steady, set(accepted), shed, failed)
    steady_latency = await _revocation_latency(probe, send_times, sorted(accepted))
    accepted_latency = _latency_dict(Latencies.of(list(accepted.values())))
    steady_result = {
        "capacity_terminations_per_second": capacity,
        "overload": cfg.steady_overload,
        "rate_terminations_per_second": round(rate, 1),
        "rate_events_per_second": round(rate * len(topology.MESSENGERS), 1),
        "terminations": steady,
        "accepted": len(accepted),
        "shed": len(shed),
        "failed": len(failed),
        "accepted_call_latency": accepted_latency,
        "shed_call_latency": _latency_dict(Latencies.of(shed_latency)),
        "terminate_calls": {
            "generator_lag_max_ms": round(run.lag_max_ms, 1),
            "error_samples": run.error_samples,
        },
        "terminate_to_revoked": steady_latency,
    }
    _progress(
        f"fan-out overload {rate:.0f}/s ({cfg.steady_overload:g}x capacity): accepted "
        f"{len(accepted)}, shed {len(shed)}, failed {len(failed)}; accepted call p99 "
        f"{accepted_latency['p99_ms']:.0f} ms, terminate->revoked p99 "
        f"{steady_latency['p99_ms']:.0f} ms"
    )
    bulk_result = await _bulk_fanout(
        ctx, admin, probe, names, first=burst + cfg.steady_terminations
    )
    return {
        "status": "ok",
        "full": cfg.terminations >= 100_000,
        "burst": burst_result,
        "steady": steady_result,
        "bulk": bulk_result,
    }


async def _bulk_fanout(
    ctx: Context,
    admin: registry_pb2_grpc.RegistryAdminServiceStub,
    probe: FanoutProbe,
    names: Sequence[str],
    *,
    first: int,
) -> dict[str, Any]:
    """The same fan-out from TerminateContracts: one stream of `bulk_terminations` rows in
    batches of `bulk_batch`, each committed as it arrives; events/s from the first row sent
    until every event is revoked in its gateway and acked at the notifier."""
    cfg = ctx.config
    count, size = cfg.bulk_terminations, cfg.bulk_batch
    heads_before = {m: head for m, (head, _acked) in (await probe.acked()).items()}
    expected = {m: heads_before.get(m, 0) + count for m in topology.MESSENGERS}

    async def batches() -> Any:
        for start in range(first, first + count, size):
            rows = [
                registry_pb2.TerminationRow(line=i - first + 2, phone_number=seed.beeline_number(i))
                for i in range(start, min(start + size, first + count))
            ]
            yield registry_pb2.TerminateContractsRequest(rows=rows)

    with ctx.profiling("fanout-bulk", names):
        pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
        mark = procs.cpu_mark(pids)
        wall_start = time.time()
        reply = await admin.TerminateContracts(batches(), timeout=CALL_TIMEOUT * 5)
        stream_done = time.time()
        seen = await probe.wait_heads(expected, cfg.drain_timeout_seconds)
        cpu = procs.cpu_since(mark, pids)
    if reply.ended != count or seen is None:
        raise BenchFailure(
            f"bulk termination: {reply.ended} of {count} ended ({reply.refused} refused); "
            f"notifier {await probe.acked()}"
        )
    events = count * len(topology.MESSENGERS)
    result = {
        "terminations": count,
        "batch": size,
        "events": events,
        "stream_seconds": round(stream_done - wall_start, 3),
        "terminations_per_second": round(count / (stream_done - wall_start), 1),
        "seconds_to_acked": round(seen - wall_start, 3),
        "events_per_second": round(events / (seen - wall_start), 1),
        "cpu_ms_per_event": {n: round(cpu[n] * 1000 / events, 3) for n in cpu},
    }
    _progress(
        f"fan-out bulk: {count} terminations in batches of {size}: "
        f"{result['terminations_per_second']}/s through the stream, "
        f"{result['events_per_second']} events/s end to end"
    )
    return result


async def _revocation_latency(
    probe: FanoutProbe, send_times: dict[int, float], indexes: Sequence[int]
) -> dict[str, Any]:
    samples: list[float] = []
    missing = 0
    first, count = (indexes[0], indexes[-1] - indexes[0] + 1) if indexes else (0, 0)
    for messenger in topology.MESSENGERS:
        revoked = await probe.revoked_at(messenger, first, count)
        for i in indexes:
            at = revoked.get(i)
            if at is None or i not in send_times:
                missing += 1
                continue
            samples.append(max(0.0, at.timestamp() - send_times[i]))
    latency = Latencies.of(samples)
    return {**_latency_dict(latency), "missing": missing}


async def _check_overload(
    probe: FanoutProbe,
    heads_before: dict[str, int],
    first: int,
    count: int,
    accepted: set[int],
    shed: set[int],
    failed: set[int],
) -> None:
    """Every accepted termination was revoked in every gateway, no shed one in any, and each
    messenger's stream holds exactly the events of the terminations that happened (a failed
    call, its outcome unknown to the client, counts if it did revoke)."""
    problems: list[str] = []
    heads = await probe.acked()
    for messenger in topology.MESSENGERS:
        revoked = set(await probe.revoked_at(messenger, first, count))
        if lost := accepted - revoked:
            problems.append(f"{messenger}: {len(lost)} accepted terminations not revoked")
        if leaked := shed & revoked:
            problems.append(f"{messenger}: {len(leaked)} shed terminations revoked anyway")
        expected = heads_before.get(messenger, 0) + len(accepted) + len(failed & revoked)
        head = heads.get(messenger, (0, 0))[0]
        if head != expected:
            problems.append(f"{messenger}: {head} events in the stream, expected {expected}")
    if problems:
        raise BenchFailure("fan-out overload: " + "; ".join(problems))


def _latency_dict(latency: Latencies) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars_of(latency).items()}


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --- 4. bulk import ------------------------------------------------------------------------


def _import_batches(rows: int, batch: int) -> Iterator[bytes]:
    activated = Timestamp(seconds=1_700_000_000)
    for first in range(0, rows, batch):
        request = registry_pb2.ImportSubscribersRequest(
            mode=registry_pb2.IMPORT_MODE_VALID_ROWS,
            rows=[
                registry_pb2.SubscriberRow(
                    line=i + 1,
                    phone_number=seed.import_number(i),
                    contract_id=f"imp-{i:08d}",
                    activated_at=activated,
                )
                for i in range(first, min(rows, first + batch))
            ],
        )
        yield request.SerializeToString()


def import_implemented() -> bool:
    """Whether the registry's admin servicer implements ImportSubscribers (the generated base
    class's method only answers UNIMPLEMENTED)."""
    from services.operator_registry.grpc_api import RegistryAdminServicer

    base = registry_pb2_grpc.RegistryAdminServiceServicer.ImportSubscribers
    return getattr(RegistryAdminServicer, "ImportSubscribers", base) is not base


def _baseline_batches(
    rows: int, chunk: int, activated: object
) -> Iterator[list[tuple[object, ...]]]:
    """The import's rows as contracts rows (contract_id, phone_number, state, activated_at),
    `chunk` at a time (each built before the baseline's clock runs on it)."""
    for first in range(0, rows, chunk):
        yield [
            (f"imp-{i:08d}", seed.import_number(i), "active", activated)
            for i in range(first, min(rows, first + chunk))
        ]


def _sqlite_baseline(path: Path, rows: int, chunk: int = 100_000) -> float:
    """Seconds for plain sqlite3 executemany of the same rows into the registry's schema, one
    transaction, the registry's pragmas (WAL, synchronous=NORMAL); building the row tuples is
    not timed."""
    conn = seed.open_store(path, REGISTRY_MIGRATIONS)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-2000")  # SQLite's default, as the registry has
    activated = "2023-11-14T22:13:20.000000+00:00"
    elapsed = 0.0
    try:
        started = time.perf_counter()
        conn.execute("BEGIN")
        elapsed += time.perf_counter() - started
        for batch in _baseline_batches(rows, chunk, activated):
            started = time.perf_counter()
            conn.executemany(
                "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
                "VALUES (?, ?, ?, ?)",
                batch,
            )
            elapsed += time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - started
    finally:
        conn.close()
    return elapsed


async def _postgres_baseline(server: PostgresServer, rows: int, chunk: int = 100_000) -> float:
    """Seconds for asyncpg COPY (copy_records_to_table) of the same rows into the registry's
    PostgreSQL schema, in a database of its own on the same server, one transaction; building
    the row tuples is not timed."""
    from services.localmesh.postgres import create_databases
    from services.operator_registry.store_pg import PG_MIGRATIONS, SERVICE

    deployment = "import-baseline"
    await create_databases(server.url, [server.database(deployment)])
    conn = await asyncpg.connect(server.database_url(deployment))
    activated = from_iso("2023-11-14T22:13:20.000000+00:00")
    elapsed = 0.0
    try:
        await migrate(conn, SERVICE, PG_MIGRATIONS)
        started = time.perf_counter()
        transaction = conn.transaction()
        await transaction.start()
        elapsed += time.perf_counter() - started
        for batch in _baseline_batches(rows, chunk, activated):
            started = time.perf_counter()
            await conn.copy_records_to_table(
                "contracts",
                records=batch,
                columns=("contract_id", "phone_number", "state", "activated_at"),
            )
            elapsed += time.perf_counter() - started
        started = time.perf_counter()
        await transaction.commit()
        elapsed += time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed


async def bulk_import(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    name = f"registry-{topology.IMPORT_OPERATOR}"
    channel = ctx.channel(
        ctx.mesh.address(name), Caller(Kind.OPERATOR, topology.IMPORT_OPERATOR, Role.ADMIN)
    )
    call = channel.stream_unary(
        IMPORT_METHOD,
        request_serializer=None,  # the batches are serialised before the clock starts
        response_deserializer=registry_pb2.ImportSubscribersResponse.FromString,
    )
    pending = {
        "status": "pending",
        "reason": "ImportSubscribers is not implemented in the registry yet (issue 7)",
        "rows": cfg.import_rows,
    }
    if not import_implemented():
        _progress("bulk import: ImportSubscribers is not implemented yet: pending")
        return pending
    empty = registry_pb2.ImportSubscribersRequest(mode=registry_pb2.IMPORT_MODE_VALID_ROWS)
    try:
        await call(iter([empty.SerializeToString()]), timeout=30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            _progress("bulk import: ImportSubscribers answers UNIMPLEMENTED: pending")
            return pending
        # Anything else: the real import below reports it.
    batches = await asyncio.to_thread(
        lambda: list(_import_batches(cfg.import_rows, cfg.import_batch))
    )
    names = (name, procs.POSTGRES) if ctx.postgres is not None else (name,)
    pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
    mark = procs.cpu_mark(pids)
    with ctx.profiling("import", names):
        started = time.perf_counter()
        reply = await call(iter(batches), timeout=3600)
        elapsed = time.perf_counter() - started
    cpu = procs.cpu_since(mark, pids)
    del batches
    if reply.imported != cfg.import_rows:
        raise BenchFailure(
            f"ImportSubscribers imported {reply.imported} of {cfg.import_rows} rows "
            f"(rejected {reply.rejected}, first errors {list(reply.errors)[:3]})"
        )
    if ctx.postgres is not None:
        baseline_name = "asyncpg COPY"
        baseline_seconds = await _postgres_baseline(ctx.postgres, cfg.import_rows)
    else:
        baseline_name = "sqlite3 executemany"
        baseline_seconds = await asyncio.to_thread(
            _sqlite_baseline, ctx.work_dir / "import-baseline" / "registry.db", cfg.import_rows
        )
    rows_per_second = cfg.import_rows / elapsed
    baseline = cfg.import_rows / baseline_seconds
    _progress(f"bulk import: {rows_per_second:.0f} rows/s; {baseline_name} {baseline:.0f} rows/s")
    return {
        "status": "ok",
        "rows": cfg.import_rows,
        "batch": cfg.import_batch,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(rows_per_second, 1),
        "baseline_name": baseline_name,
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_rows_per_second": round(baseline, 1),
        "ratio": ratio(rows_per_second, baseline),
        "cpu_seconds": cpu,
    }


# --- 5. memory: a gateway holding pending verifications ------------------------------------


async def pending_memory(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    """gateway-gamma, started empty (the idle baseline), then restarted over `pending`
    VERIFYING identifications seeded into its store: it resumes each one and asks an operator
    that never answers, so all of them stay pending for the (hour-long) window."""
    from datetime import timedelta

    from services.messenger_gateway.adapters.schema import MIGRATIONS as GATEWAY_MIGRATIONS

    hole = Blackhole()
    window = 3600.0
    mesh = Mesh(topology.pending_spec(hole.address, window), work_dir / "pending-mesh")
    gateway = f"gateway-{topology.PENDING_MESSENGER}"
    try:
        await asyncio.to_thread(mesh.start)
        await asyncio.sleep(config.pending_settle_seconds)
        idle = procs.rss_mb(topology.pids(mesh.services)[gateway])
        await asyncio.to_thread(mesh.terminate, gateway)
        count = config.pending_verifications
        await asyncio.to_thread(
            seed.seed_gateway,
            topology.db_path(mesh, gateway),
            GATEWAY_MIGRATIONS,
            seed.verifying_rows(
                topology.PENDING_OPERATOR, count, seed.utcnow(), timedelta(seconds=window)
            ),
        )
        started = time.perf_counter()
        await asyncio.to_thread(mesh.restart, gateway, 120.0)
        resumed_seconds = time.perf_counter() - started
        pid = topology.pids(mesh.services)[gateway]
        samples: list[float] = []
        deadline = time.monotonic() + max(config.pending_settle_seconds, 0.5)
        while time.monotonic() < deadline:
            value = procs.rss_mb(pid)
            if value is not None:
                samples.append(value)
            await asyncio.sleep(0.25)
        still_pending = _count(
            topology.db_path(mesh, gateway),
            "SELECT count(*) FROM identifications WHERE state = 'VERIFYING'",
        )
        cpu = procs.cpu_seconds(pid)
    finally:
        await asyncio.to_thread(mesh.stop)
        hole.close()
    if still_pending != count:
        raise BenchFailure(f"{count - still_pending} of {count} pending verifications ended")
    final = samples[-1] if samples else math.nan
    peak = max(samples) if samples else math.nan
    _progress(
        f"memory: gateway idle {idle or 0:.0f} MB, with {count} pending {final:.0f} MB "
        f"(peak {peak:.0f})"
    )
    return {
        "status": "ok",
        "pending": count,
        "window_seconds": window,
        "idle_rss_mb": round(idle or math.nan, 1),
        "pending_rss_mb": round(final, 1),
        "pending_rss_peak_mb": round(peak, 1),
        "seconds_to_serving_with_pending": round(resumed_seconds, 2),
        "cpu_seconds_total": cpu,
        "ratio": ratio(peak, idle or math.nan),
    }


# --- 6. delivery policy --------------------------------------------------------------------

CHECK_BATCH_METHOD = "/idmesh.gateway.v1.GatewayService/CheckDeliveryBatch"
POLICY_KINDS = (
    (gateway_pb2.MESSAGE_KIND_PERSONAL, 0.8),
    (gateway_pb2.MESSAGE_KIND_AUTOMATED, 0.15),
    (gateway_pb2.MESSAGE_KIND_STATE_MAILING, 0.05),
)


def _policy_pairs(rng: random.Random, users: int, count: int) -> list[gateway_pb2.DeliveryPair]:
    """Random pairs of the seeded users; one in fifty names a user who is not there."""
    kinds = [k for k, _ in POLICY_KINDS]
    weights = [w for _, w in POLICY_KINDS]
    pairs = []
    for kind in rng.choices(kinds, weights, k=count):
        sender, recipient = rng.randrange(users), rng.randrange(users)
        if rng.random() < 0.1:  # user 3k refuses user 3k+1 (bench.seed.policy_preferences)
            recipient = rng.randrange(max(1, users // 3 - 1)) * 3
            sender = recipient + 1
        unknown = rng.random() < 0.02
        pairs.append(
            gateway_pb2.DeliveryPair(
                sender_id=seed.policy_user(sender),
                recipient_id="nobody" if unknown else seed.policy_user(recipient),
                kind=kind,
            )
        )
    return pairs


async def policy(ctx: Context) -> dict[str, Any]:
    """Single CheckDelivery against the echo gateway's (same stack, answers at once), then
    batches of policy_batch pairs, over policy_users identified users with preferences."""
    cfg = ctx.config
    frontend = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
    real_channel = ctx.channel(ctx.mesh.address("gateway-alpha"), frontend)
    echo_channel = ctx.channel(ctx.echo.address("echo-gateway"), frontend)
    stubs = {
        "mesh": gateway_pb2_grpc.GatewayServiceStub(real_channel),
        "echo": gateway_pb2_grpc.GatewayServiceStub(echo_channel),
    }
    names = {"mesh": ("gateway-alpha",), "echo": ("echo-gateway",)}
    rng = random.Random(149)
    singles = [
        gateway_pb2.CheckDeliveryRequest(
            sender_id=p.sender_id, recipient_id=p.recipient_id, kind=p.kind
        )
        for p in _policy_pairs(rng, cfg.policy_users, 10_000)
    ]
    seen: dict[int, int] = {}

    def single_op(stub: gateway_pb2_grpc.GatewayServiceStub, count: bool) -> Callable[[int], Any]:
        async def op(i: int) -> None:
            reply = await stub.CheckDelivery(singles[i % len(singles)], timeout=CALL_TIMEOUT)
            if count:
                seen[reply.reason] = seen.get(reply.reason, 0) + 1

        return op

    levels = await compare_at_levels(
        ctx,
        label="policy",
        levels=cfg.policy_levels,
        seconds=cfg.policy_seconds,
        ops={kind: single_op(stub, kind == "mesh") for kind, stub in stubs.items()},
        names=names,
    )
    for level in levels:
        _progress(
            f"CheckDelivery c={level['concurrency']}: gateway "
            f"{level['mesh']['throughput']:.0f}/s, echo {level['echo']['throughput']:.0f}/s"
        )
    _check_decisions(seen)

    # Batches: serialised before the clock starts (the client's CPU is the same machine's).
    batch_bodies = [
        gateway_pb2.CheckDeliveryBatchRequest(
            pairs=_policy_pairs(rng, cfg.policy_users, cfg.policy_batch)
        ).SerializeToString()
        for _ in range(32)
    ]
    batch_seen: dict[int, int] = {}
    batch: dict[str, Any] = {"pairs_per_call": cfg.policy_batch}
    for kind, channel in (("mesh", real_channel), ("echo", echo_channel)):
        call = channel.unary_unary(
            CHECK_BATCH_METHOD,
            request_serializer=None,
            response_deserializer=gateway_pb2.CheckDeliveryBatchResponse.FromString,
        )

        def batch_op(
            call: Any = call, count: bool = kind == "mesh"
        ) -> Callable[[int], Awaitable[None]]:
            async def op(i: int) -> None:
                reply = await call(batch_bodies[i % len(batch_bodies)], timeout=CALL_TIMEOUT)
                if len(reply.reasons) != cfg.policy_batch:
                    raise BenchFailure(f"a batch answered {len(reply.reasons)} decisions")
                if count and i % 8 == 0:
                    for reason in reply.reasons:
                        batch_seen[reason] = batch_seen.get(reason, 0) + 1

            return op

        with ctx.profiling("policy-batch", names[kind]) if kind == "mesh" else nullcontext():
            run, cpu = await measured(
                ctx,
                names[kind],
                closed_loop(
                    batch_op(),
                    concurrency=cfg.policy_batch_concurrency,
                    duration=cfg.policy_batch_seconds,
                    warmup=cfg.warmup_seconds,
                ),
            )
        result = level_result(run, cpu, names[kind])
        result["decisions_per_second"] = round(run.throughput * cfg.policy_batch, 1)
        # capacity: decisions per second of the server's own CPU (on a shared machine the
        # server gets what the scheduler gives it; this is what one core would do)
        cpu_ms = sum(result["cpu_ms_per_op"].values())
        result["decisions_per_cpu_second"] = (
            round(cfg.policy_batch * 1000 / cpu_ms, 1) if cpu_ms else math.nan
        )
        batch[kind] = result
    _check_decisions(batch_seen)
    batch["ratio"] = ratio(
        batch["mesh"]["decisions_per_second"], batch["echo"]["decisions_per_second"]
    )
    _progress(
        f"CheckDeliveryBatch x{cfg.policy_batch}: gateway "
        f"{batch['mesh']['decisions_per_second']:,.0f} decisions/s "
        f"({batch['mesh']['decisions_per_cpu_second']:,.0f} per CPU-second), echo "
        f"{batch['echo']['decisions_per_second']:,.0f}/s"
    )
    return {
        "status": "ok",
        "users": cfg.policy_users,
        "levels": levels,
        "batch": batch,
        "decisions_seen": {
            gateway_pb2.DeliveryReason.Name(r): n for r, n in sorted({**seen}.items())
        },
        "batch_decisions_sampled": {
            gateway_pb2.DeliveryReason.Name(r): n for r, n in sorted(batch_seen.items())
        },
    }


def _check_decisions(seen: dict[int, int]) -> None:
    """The seeded preferences must show: allowed and refused answers both, else the seed or
    the gateway's index is wrong (every sender unknown, say)."""
    allowed = seen.get(gateway_pb2.DELIVERY_REASON_ALLOWED, 0)
    refused = sum(n for r, n in seen.items() if r != gateway_pb2.DELIVERY_REASON_ALLOWED)
    not_identified = seen.get(gateway_pb2.DELIVERY_REASON_SENDER_NOT_IDENTIFIED, 0)
    if not allowed or not refused or not_identified:
        named = {gateway_pb2.DeliveryReason.Name(r): n for r, n in seen.items()}
        raise BenchFailure(f"unexpected decisions over the seeded users: {named}")


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)
