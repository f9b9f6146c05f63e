"""6. Delivery policy: gateway-alpha holding `policy_users` identified users and their
preferences (seeded with sqlite3). Single CheckDelivery over random pairs at each concurrency,
then CheckDeliveryBatch of `policy_batch` pairs (serialised before the clock starts), against
the echo gateway on the same stack, which answers ALLOWED at once."""

from __future__ import annotations

import math
import random
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from bench import seed
from bench.load import Operation
from bench.scenarios import policy_shards
from bench.scenarios.context import CALL_TIMEOUT, BenchFailure, Context, progress, ratio
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.sweep import sweep
from services.common.identity import Caller, Kind, Role

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


async def run(ctx: Context) -> dict[str, Any]:
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

    def single_op(stub: gateway_pb2_grpc.GatewayServiceStub, count: bool) -> Operation:
        async def op(i: int) -> None:
            reply = await stub.CheckDelivery(singles[i % len(singles)], timeout=CALL_TIMEOUT)
            if count:
                seen[reply.reason] = seen.get(reply.reason, 0) + 1

        return op

    levels = await sweep(
        ctx,
        label="policy",
        levels=cfg.policy_levels,
        seconds=cfg.policy_seconds,
        ops={kind: single_op(stub, kind == "mesh") for kind, stub in stubs.items()},
        names=names,
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

    def batch_op(channel: grpc.aio.Channel, count: bool) -> Operation:
        call = channel.unary_unary(
            CHECK_BATCH_METHOD,
            request_serializer=None,
            response_deserializer=gateway_pb2.CheckDeliveryBatchResponse.FromString,
        )

        async def op(i: int) -> None:
            reply = await call(batch_bodies[i % len(batch_bodies)], timeout=CALL_TIMEOUT)
            if len(reply.reasons) != cfg.policy_batch:
                raise BenchFailure(f"a batch answered {len(reply.reasons)} decisions")
            if count and i % 8 == 0:
                for reason in reply.reasons:
                    batch_seen[reason] = batch_seen.get(reason, 0) + 1

        return op

    (at,) = await sweep(
        ctx,
        label="policy-batch",
        levels=(cfg.policy_batch_concurrency,),
        seconds=cfg.policy_batch_seconds,
        ops={"mesh": batch_op(real_channel, True), "echo": batch_op(echo_channel, False)},
        names=names,
    )
    batch: dict[str, Any] = {"pairs_per_call": cfg.policy_batch}
    for kind in ("mesh", "echo"):
        result = at[kind]
        result["decisions_per_second"] = round(result["throughput"] * cfg.policy_batch, 1)
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
    progress(
        f"CheckDeliveryBatch x{cfg.policy_batch}: gateway "
        f"{batch['mesh']['decisions_per_second']:,.0f} decisions/s "
        f"({batch['mesh']['decisions_per_cpu_second']:,.0f} per CPU-second), echo "
        f"{batch['echo']['decisions_per_second']:,.0f}/s"
    )
    two = await policy_shards.run(
        ctx, singles=singles, batch_bodies=batch_bodies, level=max(cfg.policy_levels)
    )
    return {
        "status": "ok",
        "users": cfg.policy_users,
        "levels": levels,
        "batch": batch,
        "two_replicas": two,
        "decisions_seen": {gateway_pb2.DeliveryReason.Name(r): n for r, n in sorted(seen.items())},
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


DECISIONS_PER_SECOND = 100_000.0

SCENARIO = Scenario(
    name="policy",
    title="delivery policy",
    run=run,
    needs_gateways=True,
    targets=(
        Target(
            name="CheckDelivery c={level.concurrency} ({users:,} users): throughput",
            figure="level.mesh.throughput",
            unit="calls/s",
            baseline="level.echo.throughput",
            baseline_name="echo, same stack",
            ratio="level.throughput_ratio",
            op=">=",
            threshold=0.7,
            each_level=True,
            doc="single CheckDelivery calls per second at each concurrency: at least 0.7 of the "
            "echo gateway's, the same stack answering at once",
        ),
        Target(
            name="CheckDeliveryBatch of {batch.pairs_per_call:,} pairs: decisions per second "
            "of the gateway's own CPU",
            figure="batch.mesh.decisions_per_cpu_second",
            unit="decisions/CPU-s",
            against="value",
            op=">=",
            threshold=DECISIONS_PER_SECOND,
            goal_unit="/s",
            doc="decisions per second of the gateway's own CPU in batches: at least 100,000, "
            "what one core gives whatever share of the shared machine it got",
        ),
        Target(
            name="CheckDeliveryBatch of {batch.pairs_per_call:,} pairs ({users:,} users): "
            "decisions per second against the echo's",
            figure="batch.mesh.decisions_per_second",
            unit="decisions/s",
            baseline="batch.echo.decisions_per_second",
            baseline_name="echo, same stack",
            ratio="batch.ratio",
            op=">=",
            threshold=0.6,
            doc="decisions per second in batches: at least 0.6 of the echo gateway's, the same "
            "stack answering ALLOWED to every pair at once",
        ),
        Target(
            name="CheckDeliveryBatch of {batch.pairs_per_call:,} pairs, c={batch.mesh.concurrency}",
            figure="batch.mesh.decisions_per_second",
            unit="decisions/s",
            baseline="batch.echo.decisions_per_second",
            baseline_name="echo, same stack",
            against="value",
            op=">=",
            threshold=DECISIONS_PER_SECOND,
            goal_unit="/s",
            doc="decisions per second in batches, wall clock: at least 100,000 (the echo "
            "gateway's batches shown beside it)",
        ),
        Target(
            name="two replicas x {two_replicas.shards:,} shards: the largest replica's share of "
            "the index",
            figure="two_replicas.max_share_of_index_percent",
            unit="%",
            against="value",
            op="<=",
            threshold=55.0,
            goal_unit="%",
            optional=True,
            doc="with two replicas each owning half the shards, each holds at most 55% of the "
            "index entries one replica holds alone",
        ),
        Target(
            name="two replicas: a replica's load of its shards, per million users",
            figure="two_replicas.load_seconds_per_million_users",
            unit="s",
            against="value",
            op="<=",
            threshold=10.0,
            goal_unit=" s",
            optional=True,
            doc="from taking the shards' leases to serving them (one read of the whole snapshot, "
            "filtered, caught up), per million users of the store: what a takeover of a dead "
            "replica's shards costs after its leases expire",
        ),
        Target(
            name="two replicas: CheckDeliveryBatch of {batch.pairs_per_call:,} pairs",
            figure="two_replicas.batch.decisions_per_second",
            unit="decisions/s",
            baseline="batch.mesh.decisions_per_second",
            baseline_name="one gateway, the whole index",
            optional=True,
            doc="decisions per second in batches sent to two replicas in turn, each forwarding "
            "the sides it does not hold to the other (no goal: the cost of the forwarding)",
        ),
        Target(
            name="two replicas: CheckDelivery c={two_replicas.single.concurrency}",
            figure="two_replicas.single.throughput",
            unit="calls/s",
            optional=True,
            doc="single CheckDelivery calls per second sent to two replicas in turn (no goal)",
        ),
    ),
)
