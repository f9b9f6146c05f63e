"""Shedding over a real process: an operator registry started with a low concurrency bound
refuses the calls beyond it at once (RESOURCE_EXHAUSTED, reason OVERLOADED, with RetryInfo),
having done nothing for them, and answers the calls it accepted."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.common.status import error_details
from tests.eventually import eventually
from tests.operator_registry.test_main import base_env, collect, start
from tests.operator_registry.test_relay import free_port

NUMBER = "+79031234567"
BOUND = 2  # unary calls in flight the process accepts
EXCESS = 5
HOLD_MS = 3000  # how long each accepted VerifySubscriber stays in flight (a failpoint)
VERIFY = "/idmesh.registry.v1.RegistryService/VerifySubscriber"


def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_registry_process_past_its_bound_sheds_the_excess_and_answers_the_accepted(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "messengers": [{"messenger_id": "alpha"}],
                "subscribers": [{"phone_number": NUMBER, "contract_id": "BEE-1"}],
            }
        )
    )
    port, metrics = free_port(), f"127.0.0.1:{free_port()}"
    env = {
        **base_env(tmp_path, port),
        "IDMESH_SEED_FILE": str(seed),
        "IDMESH_METRICS_BIND": metrics,
        "IDMESH_CONCURRENCY_LIMIT_MIN": str(BOUND),
        "IDMESH_CONCURRENCY_LIMIT_MAX": str(BOUND),
        "IDMESH_CONCURRENCY_LIMIT_INITIAL": str(BOUND),
        # each verification is committed, then held: the accepted calls stay in flight
        "IDMESH_FAILPOINTS": f"registry.verify.after_commit=sleep({HOLD_MS})",
    }
    process = await start(env)
    lines: list[str] = []
    reader = asyncio.create_task(collect(process, lines))
    try:
        async with open_channel(f"127.0.0.1:{port}", identity=None) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(serving, within=30, what="health SERVING")

        alpha = Caller(Kind.MESSENGER, "alpha")
        async with open_channel(f"127.0.0.1:{port}", identity=alpha) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)

            def verify(key: str) -> grpc.aio.UnaryUnaryCall:
                request = registry_pb2.VerifySubscriberRequest(
                    idempotency_key=key, phone_number=NUMBER
                )
                return stub.VerifySubscriber(request, timeout=30)

            accepted = [asyncio.ensure_future(verify(f"held-{i}")) for i in range(BOUND)]
            await eventually(
                lambda: scrape(metrics).get(("idmesh_rpc_in_flight", frozenset())) == BOUND,
                within=20,
                what=f"{BOUND} calls in flight",
            )
            refusals: list[grpc.aio.AioRpcError] = []
            began = time.monotonic()
            for i in range(EXCESS):
                try:
                    await verify(f"excess-{i}")
                except grpc.aio.AioRpcError as exc:
                    refusals.append(exc)
            refused_within = time.monotonic() - began
            answers = await asyncio.gather(*accepted)

            assert len(refusals) == EXCESS
            for refusal in refusals:
                assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
                details = error_details(refusal)
                assert details.reason == "OVERLOADED"
                assert details.retry_delay is not None and details.retry_delay.total_seconds() > 0
            # refused at once, not queued behind the held calls
            assert refused_within < HOLD_MS / 1000, refused_within
            assert all(a.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED for a in answers), (
                answers
            )
            shed = scrape(metrics).get(("idmesh_rpc_shed_total", frozenset({("method", VERIFY)})))
            assert shed == EXCESS
            # below the bound again, a call goes through
            again = await verify("after")
            assert again.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED

        # the refused calls did nothing: the audit trail holds the accepted calls only
        admin = Caller(Kind.OPERATOR, "beeline", Role.ADMIN)
        async with open_channel(f"127.0.0.1:{port}", identity=admin) as channel:
            page = await registry_pb2_grpc.RegistryAdminServiceStub(channel).ListAuditRecords(
                registry_pb2.ListAuditRecordsRequest(messenger_id="alpha"), timeout=5
            )
        keys = sorted(r.idempotency_key for r in page.records)
        assert keys == sorted(["after", *(f"held-{i}" for i in range(BOUND))])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()
            await reader
    assert process.returncode == 0, "".join(lines)
