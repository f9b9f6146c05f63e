"""3. Termination fan-out: subscribers bound to two messengers, their contracts terminated;
events per second from the first call until every event is revoked in its gateway and acked at
the notifier. A burst of TerminateContract calls as fast as the registry takes them; then an
open loop at `steady_overload` times the capacity the burst measured, which the registry must
shed (RESOURCE_EXHAUSTED at once) while every accepted termination reaches both gateways; then
the same fan-out from one TerminateContracts stream. Progress is read from the stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import procs, seed, topology
from bench.load import Latencies, honouring_shedding, open_loop, run_count
from bench.scenarios.context import (
    CALL_TIMEOUT,
    BenchFailure,
    Context,
    latency_dict,
    progress,
)
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.stores import StoreReader, store_reader
from services.common.channels import sent_at
from services.common.context import SENT_AT_METADATA_KEY
from services.common.identity import Caller, Kind, Role
from services.common.timeutil import from_iso


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


async def run(ctx: Context) -> dict[str, Any]:
    registry_name = f"registry-{topology.SEEDED_OPERATOR}"
    admins = [
        registry_pb2_grpc.RegistryAdminServiceStub(channel)
        for channel in ctx.replica_channels(
            registry_name, Caller(Kind.OPERATOR, topology.SEEDED_OPERATOR, Role.ADMIN)
        )
    ]
    names = ctx.names(registry_name, "notifier", *(f"gateway-{m}" for m in topology.MESSENGERS))
    phases = Phases(ctx, FanoutProbe.of(ctx), admins, names)
    try:
        burst = await _burst(phases)
        steady = await _overload(phases, burst["terminations_per_second"])
        bulk = await _bulk(phases, first=ctx.config.terminations + ctx.config.steady_terminations)
    finally:
        await phases.probe.close()
    return {
        "status": "ok",
        "full": ctx.config.terminations >= 100_000,
        "burst": burst,
        "steady": steady,
        "bulk": bulk,
    }


@dataclass
class Phases:
    """What the fan-out's three phases share: the registry's admin stubs (one per replica),
    the processes whose CPU counts, and when each termination was first sent."""

    ctx: Context
    probe: FanoutProbe
    admins: list[registry_pb2_grpc.RegistryAdminServiceStub]
    names: tuple[str, ...]
    send_times: dict[int, float] = field(default_factory=dict)  # index -> time.time()

    async def not_drained(self, phase: str) -> BenchFailure:
        return BenchFailure(
            f"fan-out {phase} not drained within {self.ctx.config.drain_timeout_seconds:.0f}s: "
            f"applied {await self.probe.applied()}, notifier {await self.probe.acked()}"
        )


async def _burst(phases: Phases) -> dict[str, Any]:
    """TerminateContract as fast as the registry takes them; events/s end to end (terminate ->
    revoked in both gateways -> acked at the notifier)."""
    ctx, probe, admins, names = phases.ctx, phases.probe, phases.admins, phases.names
    cfg = ctx.config
    send_times = phases.send_times

    async def terminate(i: int) -> None:
        send_times.setdefault(i, time.time())  # a retried call keeps its first send time
        reply = await admins[i % len(admins)].TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=seed.beeline_number(i)),
            timeout=CALL_TIMEOUT,
        )
        if reply.notices_queued != len(topology.MESSENGERS):
            raise BenchFailure(f"termination queued {reply.notices_queued} notices, not 2")

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
        raise await phases.not_drained("burst")
    assert seen["applied"] is not None
    burst_latency = await _revocation_latency(probe, send_times, range(burst))
    result = {
        "terminations": burst,
        "events": events,
        "terminate_calls": calls.as_dict(),
        "terminations_per_second": round(burst / (calls_done - wall_start), 1),
        "seconds_to_revoked": round(seen["applied"] - wall_start, 3),
        "seconds_to_acked": round(seen["acked"] - wall_start, 3),
        "events_per_second": round(events / (seen["acked"] - wall_start), 1),
        "terminate_to_revoked": burst_latency,
        "cpu_ms_per_event": {n: round(cpu[n] * 1000 / events, 3) for n in cpu},
    }
    progress(
        f"fan-out burst: {burst} terminations, {result['events_per_second']} events/s "
        f"end to end; terminate calls {result['terminations_per_second']}/s"
    )
    return result


async def _overload(phases: Phases, capacity: float) -> dict[str, Any]:
    """An open loop at steady_overload x the capacity the burst measured. The registry sheds
    what it cannot take (RESOURCE_EXHAUSTED at once); every accepted termination must reach
    both gateways, and no shed one may."""
    ctx, probe, names = phases.ctx, phases.probe, phases.names
    cfg = ctx.config
    send_times = phases.send_times
    burst = cfg.terminations
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
            for name in topology.replicas(ctx.mesh, f"registry-{topology.SEEDED_OPERATOR}")
        ]
        if ctx.mesh.credentials(admin_id) is not None
        else phases.admins
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
        raise await phases.not_drained("overload run")
    await _check_overload(probe, heads_before, burst, steady, set(accepted), shed, failed)
    steady_latency = await _revocation_latency(probe, send_times, sorted(accepted))
    accepted_latency = latency_dict(Latencies.of(list(accepted.values())))
    progress(
        f"fan-out overload {rate:.0f}/s ({cfg.steady_overload:g}x capacity): accepted "
        f"{len(accepted)}, shed {len(shed)}, failed {len(failed)}; accepted call p99 "
        f"{accepted_latency['p99_ms']:.0f} ms, terminate->revoked p99 "
        f"{steady_latency['p99_ms']:.0f} ms"
    )
    return {
        "capacity_terminations_per_second": capacity,
        "overload": cfg.steady_overload,
        "rate_terminations_per_second": round(rate, 1),
        "rate_events_per_second": round(rate * len(topology.MESSENGERS), 1),
        "terminations": steady,
        "accepted": len(accepted),
        "shed": len(shed),
        "failed": len(failed),
        "accepted_call_latency": accepted_latency,
        "shed_call_latency": latency_dict(Latencies.of(shed_latency)),
        "terminate_calls": {
            "generator_lag_max_ms": round(run.lag_max_ms, 1),
            "error_samples": run.error_samples,
        },
        "terminate_to_revoked": steady_latency,
    }


async def _bulk(phases: Phases, *, first: int) -> dict[str, Any]:
    """The same fan-out from TerminateContracts: one stream of `bulk_terminations` rows in
    batches of `bulk_batch`, each committed as it arrives; events/s from the first row sent
    until every event is revoked in its gateway and acked at the notifier."""
    ctx, probe, names = phases.ctx, phases.probe, phases.names
    admin = phases.admins[0]  # one billing system, one stream
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
    progress(
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
    return {**latency_dict(latency), "missing": missing}


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


EVENTS_PER_SECOND = 5_000.0
YARDSTICK = "verify:levels.top.raw.throughput"  # the machine's bare gRPC calls/s, this pass

SCENARIO = Scenario(
    name="fanout",
    title="fan-out",
    run=run,
    needs_gateways=True,
    targets=(
        Target(
            name="fan-out: {burst.terminations:,} terminations, events/s end to end",
            figure="burst.events_per_second",
            unit="events/s",
            baseline=YARDSTICK,
            baseline_name="bare grpc.aio echo calls/s",
            against="value",
            op=">=",
            threshold=EVENTS_PER_SECOND,
            goal_unit="/s",
            doc="events per second from a burst of TerminateContract calls until every event "
            "is revoked in its gateway and acked at the notifier: at least 5,000 (the bare "
            "gRPC calls per second of the same pass are shown as the machine's yardstick)",
        ),
        Target(
            name="fan-out from TerminateContracts: {bulk.terminations:,} in batches of "
            "{bulk.batch:,}, events/s end to end",
            figure="bulk.events_per_second",
            unit="events/s",
            baseline=YARDSTICK,
            baseline_name="bare grpc.aio echo calls/s",
            against="value",
            op=">=",
            threshold=EVENTS_PER_SECOND,
            goal_unit="/s",
            optional=True,
            doc="the same from one TerminateContracts stream: at least 5,000 events per second",
        ),
        Target(
            name="fan-out under overload ({steady.overload:g}x capacity, "
            "{steady.rate_terminations_per_second:,.0f} terminations/s): accepted "
            "terminate->revoked p99",
            figure="steady.terminate_to_revoked.p99_ms",
            unit="ms",
            against="value",
            op="<",
            threshold=1_000.0,
            goal_unit=" ms",
            doc="under an open loop above the registry's capacity, the p99 from an accepted "
            "termination's call to its revocation in the gateways: under a second, the "
            "excess shed at once rather than queued",
        ),
    ),
)
