"""The delivery policy with two replicas, each owning half the shards (IDMESH_POLICY_SHARDS):
part of scenario 6 (policy.py), run after the single gateway's figures.

Two more gateway processes of messenger alpha on gateway-alpha's database, with shards, each
serving half of them once loaded. Measured: the time each replica took to load its shards
(from taking their leases to serving them: one read of the whole snapshot, filtered; what a
takeover costs once a dead replica's leases expire), per million users; each replica's share of
the index (its index entries over both replicas', the entries one replica holds alone) and its
resident memory beside gateway-alpha's; then the same single
CheckDelivery and CheckDeliveryBatch calls as gateway-alpha's, sent to the two replicas in
turn, with both replicas' CPU. The batches' decisions must equal gateway-alpha's."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench import procs
from bench.load import Operation, closed_loop
from bench.scenarios.context import (
    CALL_TIMEOUT,
    BenchFailure,
    Context,
    level_result,
    measured,
    progress,
)
from services.common.identity import Caller, Kind, Role
from services.localmesh.process import ServiceProcess, free_port

SHARDS = 64
REPLICAS = ("gateway-alpha-shards-1", "gateway-alpha-shards-2")
CHECK_BATCH_METHOD = "/idmesh.gateway.v1.GatewayService/CheckDeliveryBatch"
LOAD_TIMEOUT = 900.0


def _figures(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = {
        "idmesh_gateway_policy_shards_served",
        "idmesh_gateway_policy_index_entries",
        "idmesh_gateway_policy_index_users",
    }
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in wanted
    }


def _add_replicas(ctx: Context) -> list[str]:
    """The two sharded replicas, as services of the pass's mesh (stopped with it)."""
    base = ctx.mesh.services["gateway-alpha"]
    taken = {int(s.address.rsplit(":", 1)[1]) for s in ctx.mesh.services.values()}
    taken |= {
        int(str(s.info.get("metrics", ":0")).rsplit(":", 1)[1]) for s in ctx.mesh.services.values()
    }
    for name in REPLICAS:
        port, metrics = free_port(taken), free_port(taken)
        address = f"127.0.0.1:{port}"
        ctx.mesh.services[name] = ServiceProcess(
            name=name,
            module=base.module,
            address=address,
            env={
                **base.env,
                "OTEL_SERVICE_NAME": name,
                "IDMESH_BIND": address,
                "IDMESH_METRICS_BIND": f"127.0.0.1:{metrics}",
                "IDMESH_REPLICA_ID": name,
                "IDMESH_POLICY_SHARDS": str(SHARDS),
            },
            log_path=base.log_path.with_name(f"{name}.log"),
            info={**base.info, "metrics": f"127.0.0.1:{metrics}"},
            identity=base.identity,
            tls=base.tls,
        )
        ctx.mesh.services[name].start()
    return list(REPLICAS)


async def run(
    ctx: Context,
    *,
    singles: Sequence[gateway_pb2.CheckDeliveryRequest],
    batch_bodies: Sequence[bytes],
    level: int,
) -> dict[str, Any]:
    cfg = ctx.config
    frontend = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
    reference_rss = procs.rss_mb(ctx.mesh.services["gateway-alpha"].process.pid)  # type: ignore[union-attr]
    started = time.perf_counter()
    names = _add_replicas(ctx)
    try:
        for name in names:
            await asyncio.to_thread(ctx.mesh.wait_serving, name, LOAD_TIMEOUT)

        async def loaded() -> list[dict[str, float]]:
            while True:
                figures = [
                    await asyncio.to_thread(_figures, ctx.mesh.metrics_address(n)) for n in names
                ]
                served = [f.get("idmesh_gateway_policy_shards_served", 0) for f in figures]
                if served == [SHARDS / 2, SHARDS / 2]:
                    return figures
                if time.perf_counter() - started > LOAD_TIMEOUT:
                    raise BenchFailure(f"the sharded replicas serve {served} shards")
                await asyncio.sleep(0.5)

        figures = await loaded()
        served_after = time.perf_counter() - started
        load_seconds = max(_load_seconds(ctx, n) for n in names)
        entries = [f["idmesh_gateway_policy_index_entries"] for f in figures]
        total = sum(entries)
        pids = {n: ctx.mesh.services[n].process.pid for n in names}  # type: ignore[union-attr]
        rss = {n: procs.rss_mb(pid) for n, pid in pids.items()}
        replicas: dict[str, Any] = {
            n: {
                "shards": int(f["idmesh_gateway_policy_shards_served"]),
                "index_entries": int(e),
                "index_users": int(f["idmesh_gateway_policy_index_users"]),
                "share_of_index_percent": round(100 * e / total, 2) if total else math.nan,
                "rss_mb": round(rss[n] or math.nan, 1),
            }
            for n, f, e in zip(names, figures, entries, strict=True)
        }
        progress(
            f"two replicas x {SHARDS // 2} shards: loaded in {load_seconds:.1f} s (served "
            f"{served_after:.1f} s after the start), shares of the index "
            + ", ".join(f"{r['share_of_index_percent']:.1f}%" for r in replicas.values())
        )
        channels = [ctx.channel(ctx.mesh.address(n), frontend) for n in names]
        stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
        await _same_decisions(ctx, channels, batch_bodies)

        def single_op() -> Operation:
            async def op(i: int) -> None:
                await stubs[i % 2].CheckDelivery(singles[i % len(singles)], timeout=CALL_TIMEOUT)

            return op

        calls = [
            c.unary_unary(
                CHECK_BATCH_METHOD,
                request_serializer=None,
                response_deserializer=gateway_pb2.CheckDeliveryBatchResponse.FromString,
            )
            for c in channels
        ]

        def batch_op() -> Operation:
            async def op(i: int) -> None:
                body = batch_bodies[i % len(batch_bodies)]
                await calls[i % 2](body, timeout=CALL_TIMEOUT)

            return op

        run_single, cpu = await measured(
            ctx,
            names,
            closed_loop(
                single_op(),
                concurrency=level,
                duration=cfg.policy_seconds,
                warmup=cfg.warmup_seconds,
            ),
        )
        single = level_result(run_single, cpu, names)
        run_batch, cpu = await measured(
            ctx,
            names,
            closed_loop(
                batch_op(),
                concurrency=cfg.policy_batch_concurrency,
                duration=cfg.policy_batch_seconds,
                warmup=cfg.warmup_seconds,
            ),
        )
        batch = level_result(run_batch, cpu, names)
        batch["decisions_per_second"] = round(batch["throughput"] * cfg.policy_batch, 1)
        cpu_ms = sum(batch["cpu_ms_per_op"].values())
        batch["decisions_per_cpu_second"] = (
            round(cfg.policy_batch * 1000 / cpu_ms, 1) if cpu_ms else math.nan
        )
        progress(
            f"two replicas: CheckDelivery c={level} {single['throughput']:,.0f}/s, "
            f"CheckDeliveryBatch x{cfg.policy_batch} {batch['decisions_per_second']:,.0f} "
            f"decisions/s ({batch['decisions_per_cpu_second']:,.0f} per CPU-second)"
        )
    finally:
        for name in names:
            await asyncio.to_thread(ctx.mesh.terminate, name)
            del ctx.mesh.services[name]
    users = cfg.policy_users
    return {
        "shards": SHARDS,
        "load_seconds": round(load_seconds, 2),
        "served_after_start_seconds": round(served_after, 2),
        "load_seconds_per_million_users": round(load_seconds * 1e6 / users, 2)
        if users
        else math.nan,
        "replicas": replicas,
        "max_share_of_index_percent": max(r["share_of_index_percent"] for r in replicas.values()),
        "reference_rss_mb": round(reference_rss or math.nan, 1),
        "single": single,
        "batch": batch,
    }


def _load_seconds(ctx: Context, name: str) -> float:
    """The longest shard load the replica logged (policy.shards_served's seconds)."""
    loads = [
        float(entry["seconds"])
        for line in ctx.mesh.services[name].log_path.read_text().splitlines()
        if line.startswith("{") and '"policy.shards_served"' in line
        for entry in (json.loads(line),)
    ]
    if not loads:
        raise BenchFailure(f"{name} logged no shard load")
    return max(loads)


async def _same_decisions(
    ctx: Context, channels: Sequence[grpc.aio.Channel], bodies: Sequence[bytes]
) -> None:
    """The batches' decisions at each sharded replica equal the single gateway's."""
    frontend = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
    reference = ctx.channel(ctx.mesh.address("gateway-alpha"), frontend)
    for body in bodies[:4]:
        request = gateway_pb2.CheckDeliveryBatchRequest.FromString(body)
        want = await gateway_pb2_grpc.GatewayServiceStub(reference).CheckDeliveryBatch(
            request, timeout=CALL_TIMEOUT
        )
        for channel in channels:
            got = await gateway_pb2_grpc.GatewayServiceStub(channel).CheckDeliveryBatch(
                request, timeout=CALL_TIMEOUT
            )
            if list(got.reasons) != list(want.reasons):
                raise BenchFailure("a sharded replica decided otherwise than gateway-alpha")
