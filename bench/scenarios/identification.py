"""1. Identification: StartIdentification + ConfirmPossession -> IDENTIFIED through the real
gateway and registry (the code read from the development SMS outbox), at each concurrency,
against the echo mesh: the same hops on the same stack, with handlers that do nothing."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from bench import seed, topology
from bench.load import honouring_shedding
from bench.scenarios.context import CALL_TIMEOUT, BenchFailure, Context
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.sweep import sweep
from services.common.identity import Caller, Kind, Role

IDENTIFIED = gateway_pb2.IDENTIFICATION_STATE_IDENTIFIED


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


async def run(ctx: Context) -> dict[str, Any]:
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

    levels = await sweep(
        ctx,
        label="identification",
        levels=cfg.identification_levels,
        seconds=cfg.identification_seconds,
        ops={"mesh": real_op, "echo": echo_op},
        names={
            "mesh": ctx.names("gateway-alpha", f"registry-{topology.SEEDED_OPERATOR}"),
            "echo": ("echo-gateway", "echo-registry"),
        },
    )
    return {"status": "ok", "unit": "identifications/s", "levels": levels}


ECHO_MESH = "echo mesh"

SCENARIO = Scenario(
    name="identification",
    title="identification",
    run=run,
    needs_gateways=True,
    plotted=(("mesh", "mesh"), ("echo", ECHO_MESH)),
    targets=(
        Target(
            name="identification c={level.concurrency}: throughput",
            figure="level.mesh.throughput",
            unit="ident/s",
            baseline="level.echo.throughput",
            baseline_name=ECHO_MESH,
            ratio="level.throughput_ratio",
            op=">=",
            threshold=0.6,
            each_level=True,
            doc="identifications per second at each concurrency: at least 0.6 of the echo "
            "mesh's, the same hops on the same stack doing nothing",
        ),
        Target(
            name="identification c={level.concurrency}: p99",
            figure="level.mesh.latency.p99_ms",
            unit="ms",
            baseline="level.echo.latency.p99_ms",
            baseline_name=ECHO_MESH,
            ratio="level.p99_ratio",
            op="<=",
            threshold=1.5,
            each_level=True,
            doc="the identification's p99 at each concurrency, at most 1.5 times the echo mesh's",
        ),
    ),
)
