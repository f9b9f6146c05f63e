"""Load shedding: the adaptive concurrency limit, and calls beyond it refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.config import ConfigError, Env, LimiterSettings
from services.common.interceptors import ErrorTable
from services.common.overload import ConcurrencyLimiter
from services.common.server import GrpcServer, service_name
from services.common.status import error_details, honouring_overload
from tests.common.test_ratelimit import Clock


def run_window(limiter: ConcurrencyLimiter, latency: float, in_flight: int) -> None:
    """One window of completed calls, `in_flight` at a time, each taking `latency` seconds."""
    done = 0
    while done < limiter.settings.window_samples:
        admitted = sum(limiter.try_acquire() for _ in range(in_flight))
        for _ in range(admitted):
            limiter.release(latency)
        done += admitted


def test_the_limit_holds_while_latency_holds_and_shrinks_when_calls_queue() -> None:
    limiter = ConcurrencyLimiter(LimiterSettings(initial=64, minimum=8, maximum=256))
    for _ in range(50):
        run_window(limiter, 0.005, in_flight=64)  # the limit in use, latency flat
    steady = limiter.limit
    assert steady >= 64

    for _ in range(30):
        run_window(limiter, 0.050, in_flight=int(limiter.limit))  # 10x: queueing
    assert limiter.limit < steady / 2
    assert limiter.limit >= 8  # never below the minimum

    # latency back to normal: the limit grows again
    low = limiter.limit
    for _ in range(30):
        run_window(limiter, 0.005, in_flight=int(limiter.limit))
    assert limiter.limit > low * 2


def test_the_limit_does_not_grow_while_the_callers_are_the_bottleneck() -> None:
    limiter = ConcurrencyLimiter(LimiterSettings(initial=64, minimum=8, maximum=256))
    for _ in range(50):
        run_window(limiter, 0.005, in_flight=4)
    assert limiter.limit == 64


def test_calls_beyond_the_limit_are_refused_until_one_ends() -> None:
    limiter = ConcurrencyLimiter(LimiterSettings(initial=2, minimum=2, maximum=2))
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    refusal = limiter.refusal("/x.v1.S/M")
    assert "limit of 2 calls in flight" in refusal.message
    assert refusal.retry_after is not None
    assert 20 <= refusal.retry_after.total_seconds() * 1000 <= 2000
    assert refusal.reason == "OVERLOADED"
    limiter.release(0.01)
    assert limiter.try_acquire()


def test_a_standing_queue_in_front_of_the_handlers_cuts_the_limit_below_its_minimum() -> None:
    clock = Clock()
    settings = LimiterSettings(initial=64, minimum=64, maximum=256)
    limiter = ConcurrencyLimiter(settings, clock=clock, wall=clock)
    method = "/x.v1.S/M"
    for _ in range(64):
        assert limiter.try_acquire()
    # calls reach the interceptor 0.2 s after they were sent by the caller's clock (skew and
    # transit): the source's baseline, no queue
    for _ in range(20):
        clock.now += 0.01
        limiter.arrived(method, "peer-a", clock.now - 0.2)
    assert limiter.queue_delay == 0.0 and limiter.limit == 64
    # a burst: some calls waited 0.5 s more, others not at all: not a standing queue
    for i in range(20):
        clock.now += 0.01
        limiter.arrived(method, "peer-a", clock.now - (0.7 if i % 2 else 0.2))
    assert limiter.limit == 64
    # every call waited 0.3 s or more for a whole interval, but none was refused: a closed
    # loop of callers, whose queue refusing would not shorten: the limit stays
    for i in range(30):
        clock.now += 0.01
        limiter.arrived(method, "peer-a", clock.now - 0.5 - i * 0.01)
    assert limiter.queue_delay >= 0.25 and limiter.limit == 64
    # the same while calls are refused: the limit is cut, below 64
    for i in range(30):
        clock.now += 0.01
        limiter.arrived(method, "peer-a", clock.now - 0.8 - i * 0.01)
        assert not limiter.try_acquire()
        limiter.refusal(method)
    assert limiter.queue_delay >= 0.25
    assert limiter.limit < 64 * 0.8 + 1
    # refusals ask the callers to wait at least as long as the queue
    assert limiter.retry_after() >= 0.25
    # calls that do not say when they were sent tell nothing
    limiter.arrived(method, "peer-a", None)
    limiter.arrived(method, "peer-a", float("nan"))


def test_each_source_has_its_own_baseline_and_each_method_its_own_queue() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(LimiterSettings(initial=64, minimum=64), clock=clock, wall=clock)
    for _ in range(64):
        limiter.try_acquire()
    for _ in range(30):  # a source whose clock is 5 s behind ours, and one in step: no queue
        clock.now += 0.01
        limiter.arrived("/x.v1.S/Fast", "peer-late-clock", clock.now - 5.0)
        limiter.arrived("/x.v1.S/Queued", "peer-b", clock.now)
    assert limiter.queue_delay == 0.0 and limiter.limit == 64
    for _ in range(30):  # then one method's calls queue while the other's flow
        clock.now += 0.01
        limiter.arrived("/x.v1.S/Fast", "peer-late-clock", clock.now - 5.0)
        limiter.arrived("/x.v1.S/Queued", "peer-b", clock.now - 1.0)
        limiter.refusal("/x.v1.S/Queued")
    assert limiter.queue_delay >= 0.9
    assert limiter.limit < 64


def test_refusals_are_built_once_per_delay_and_logged_once_a_second(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(LimiterSettings(initial=1, minimum=1, maximum=1), clock=clock)
    assert limiter.try_acquire() and not limiter.try_acquire()
    refusals = {id(limiter.refusal("/x.v1.S/M")) for _ in range(100)}
    assert len(refusals) == 1  # the same refusal (and so the same status bytes) every time
    clock.now += 1.5
    limiter.refusal("/x.v1.S/M")
    lines = [line for line in capsys.readouterr().out.splitlines() if "rpc.shed" in line]
    assert len(lines) == 1 and "101" in lines[0]


def test_disabled_shedding_admits_everything() -> None:
    limiter = ConcurrencyLimiter(LimiterSettings(initial=1, minimum=1, maximum=1, enabled=False))
    assert all(limiter.try_acquire() for _ in range(100))


def test_settings_from_the_environment() -> None:
    settings = LimiterSettings.from_env(
        Env(
            {
                "IDMESH_CONCURRENCY_LIMIT_MIN": "4",
                "IDMESH_CONCURRENCY_LIMIT_MAX": "40",
                "IDMESH_CONCURRENCY_LIMIT_INITIAL": "400",
                "IDMESH_LOAD_SHEDDING": "false",
                "IDMESH_MAX_QUEUE_DELAY_MS": "250",
                "IDMESH_GRPC_MAX_PENDING_REQUESTS": "300",
            }
        )
    )
    assert (settings.minimum, settings.maximum, settings.initial) == (4, 40, 40)
    assert settings.max_queue_delay == 0.25
    assert settings.max_pending == 300
    assert not settings.enabled
    with pytest.raises(ConfigError):
        LimiterSettings.from_env(
            Env({"IDMESH_CONCURRENCY_LIMIT_MIN": "9", "IDMESH_CONCURRENCY_LIMIT_MAX": "3"})
        )


class SlowRegistry(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.both_started = asyncio.Event()

    async def VerifySubscriber(
        self, request: registry_pb2.VerifySubscriberRequest, context: Any
    ) -> registry_pb2.VerifySubscriberResponse:
        self.started += 1
        if self.started == 2:
            self.both_started.set()
        await self.release.wait()
        return registry_pb2.VerifySubscriberResponse(operator_id="op")


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[GrpcServer, SlowRegistry]]:
    server = GrpcServer(
        name="test",
        bind="127.0.0.1:0",
        errors=ErrorTable({}),
        load_shedding=LimiterSettings(initial=2, minimum=2, maximum=2),
    )
    fake = SlowRegistry()
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        fake,
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    await server.set_serving()
    yield server, fake
    fake.release.set()
    await server.stop(None)


async def test_a_call_beyond_the_limit_is_refused_at_once_and_never_reaches_the_handler(
    slow_server: tuple[GrpcServer, SlowRegistry],
) -> None:
    server, fake = slow_server
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        request = registry_pb2.VerifySubscriberRequest(phone_number="+79031234567")
        held = [asyncio.ensure_future(stub.VerifySubscriber(request, timeout=30)) for _ in "ab"]
        await asyncio.wait_for(fake.both_started.wait(), 10)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.VerifySubscriber(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(refused.value)
        assert details.reason == "OVERLOADED"
        assert details.retry_delay is not None and details.retry_delay.total_seconds() >= 0.02
        assert fake.started == 2  # the refused call did no work

        # health is never refused, even at the limit
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        fake.release.set()
        assert all(r.operator_id == "op" for r in await asyncio.gather(*held))
        assert (await stub.VerifySubscriber(request, timeout=5)).operator_id == "op"


async def test_a_well_behaved_client_waits_the_delay_and_its_call_goes_through(
    slow_server: tuple[GrpcServer, SlowRegistry],
) -> None:
    server, fake = slow_server
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        request = registry_pb2.VerifySubscriberRequest(phone_number="+79031234567")
        held = [asyncio.ensure_future(stub.VerifySubscriber(request, timeout=30)) for _ in "ab"]
        await asyncio.wait_for(fake.both_started.wait(), 10)
        waits: list[float] = []

        def shed(delay: float) -> None:
            waits.append(delay)
            fake.release.set()  # the service catches up meanwhile

        reply = await honouring_overload(
            lambda: stub.VerifySubscriber(request, timeout=5), attempts=20, on_wait=shed
        )
        assert reply.operator_id == "op"
        assert waits and all(0.02 <= w <= 2.0 for w in waits)
        await asyncio.gather(*held)


async def test_a_client_does_not_repeat_other_refusals(
    slow_server: tuple[GrpcServer, SlowRegistry],
) -> None:
    server, _ = slow_server
    async with open_channel(f"127.0.0.1:{server.port}", identity=None) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        calls = 0

        async def unknown_service() -> Any:
            nonlocal calls
            calls += 1
            return await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await honouring_overload(unknown_service, attempts=5)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert calls == 1
