"""2. VerifySubscriber straight at a registry holding the seeded subscribers, at each
concurrency, against the echo registry on the same stack and a bare grpc.aio echo server."""

from __future__ import annotations

import itertools
import random
from typing import Any

from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import seed, topology
from bench.load import Operation, honouring_shedding
from bench.scenarios.context import CALL_TIMEOUT, BenchFailure, Context
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.sweep import sweep
from services.common.identity import Caller, Kind


async def run(ctx: Context) -> dict[str, Any]:
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

    def make_op(replicas: list[registry_pb2_grpc.RegistryServiceStub]) -> Operation:
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

    levels = await sweep(
        ctx,
        label="verify",
        levels=cfg.verify_levels,
        seconds=cfg.verify_seconds,
        ops={kind: make_op(stub) for kind, stub in stubs.items()},
        names=names,
    )
    return {
        "status": "ok",
        "unit": "calls/s",
        "subscribers": cfg.subscribers,
        "levels": levels,
    }


SAME_STACK = "echo, same stack"

SCENARIO = Scenario(
    name="verify",
    title="VerifySubscriber",
    run=run,
    plotted=(("mesh", "registry"), ("echo", "echo (same stack)"), ("raw", "bare grpc.aio")),
    targets=(
        Target(
            name="VerifySubscriber c={levels.top.concurrency}: throughput",
            figure="levels.top.mesh.throughput",
            unit="calls/s",
            baseline="levels.top.echo.throughput",
            baseline_name=SAME_STACK,
            ratio="levels.top.throughput_ratio",
            op=">=",
            threshold=0.7,
            doc="calls per second straight at the registry at the highest concurrency: at "
            "least 0.7 of the echo registry's, the same stack (server, interceptors, channel) "
            "answering at once",
        ),
        Target(
            name="VerifySubscriber c={levels.top.concurrency}: throughput",
            figure="levels.top.mesh.throughput",
            unit="calls/s",
            baseline="levels.top.raw.throughput",
            baseline_name="bare grpc.aio echo",
            op=">=",
            threshold=0.7,
            doc="the same calls per second: at least 0.7 of a bare grpc.aio echo server's (no "
            "interceptors, default options, the same mutual TLS)",
        ),
        Target(
            name="VerifySubscriber c={levels.top.concurrency}: p99",
            figure="levels.top.mesh.latency.p99_ms",
            unit="ms",
            baseline="levels.top.echo.latency.p99_ms",
            baseline_name=SAME_STACK,
            ratio="levels.top.p99_ratio",
            doc="the p99 at the highest concurrency against the echo registry's, "
            "shown without a goal",
        ),
    ),
)
