"""The gateway's test doubles (tests/messenger_gateway/fakes.py) keep the real services' contract:
each case below runs against FakeNotifier and the real notifier, FakeRegistry and the real
operator registry (each started in-process on port 0), through the same gRPC calls. A gateway
test passes against a fake only for behaviour the real peer has."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.config import Env
from services.common.identity import Caller, Kind
from services.common.server import GrpcServer
from services.common.status import error_details
from services.common.storage import StoreSettings
from services.notifier.grpc_api import ERRORS as NOTIFIER_ERRORS
from services.notifier.main import open_notifier
from services.operator_registry.main import open_store as open_registry_store
from services.operator_registry.service import RegistryService
from tests.messenger_gateway import fakes
from tests.notifier.support import FakeClock, config, event, read_notices
from tests.operator_registry.conftest import FakeClock as RegistryClock
from tests.operator_registry.test_grpc_api import start_server as start_real_registry

ALPHA = Caller(Kind.MESSENGER, "alpha")
PROGRESS_INTERVAL = 0.1
NUMBER = "+79031234567"
OTHER_NUMBER = "+79051112233"
UNKNOWN_NUMBER = "+79057654321"


# --- the notifier, as a gateway sees it -------------------------------------------------------


@dataclass
class NotifierPeer:
    """A notifier on `port`, and how the test makes it hold events (as operators would publish
    them) or forget acked ones (retention)."""

    port: int
    publish: Callable[[events_pb2.ContractTerminated], Awaitable[None]]
    prune_through: Callable[[int], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_notifier() -> AsyncIterator[NotifierPeer]:
    server, fake = await fakes.start_notifier("alpha")
    fake.progress_interval = PROGRESS_INTERVAL

    async def publish(e: events_pb2.ContractTerminated) -> None:
        await fake.publish(e)

    async def prune_through(seq: int) -> None:
        fake.acked_seq = max(fake.acked_seq, seq)
        fake.prune(seq)

    assert server.port is not None
    try:
        yield NotifierPeer(server.port, publish, prune_through)
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def real_notifier(tmp_path: Path) -> AsyncIterator[NotifierPeer]:
    clock = FakeClock()
    cfg = config(tmp_path, PROGRESS_INTERVAL_SECONDS=str(PROGRESS_INTERVAL))
    server = GrpcServer(name="notifier", bind=cfg.server.bind, errors=NOTIFIER_ERRORS)
    async with open_notifier(cfg, server, clock) as service:
        port = await server.start()
        operator = open_channel(f"127.0.0.1:{port}", identity=Caller(Kind.OPERATOR, "beeline"))

        async def publish(e: events_pb2.ContractTerminated) -> None:
            stub = notifier_pb2_grpc.NotifierServiceStub(operator)
            await stub.Publish(notifier_pb2.PublishRequest(events=[e]), timeout=10)

        async def prune_through(seq: int) -> None:
            await service.ack("alpha", seq)
            clock.advance(timedelta(days=30))  # older than any retention
            await service.prune()

        try:
            yield NotifierPeer(port, publish, prune_through)
        finally:
            await operator.close()
            await server.stop(None)


@pytest.fixture(params=["fake", "real"])
async def notifier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NotifierPeer]:
    peer = fake_notifier() if request.param == "fake" else real_notifier(tmp_path)
    async with peer as started:
        yield started


@pytest.fixture
async def alpha(notifier: NotifierPeer) -> AsyncIterator[notifier_pb2_grpc.NotifierServiceStub]:
    async with open_channel(f"127.0.0.1:{notifier.port}", identity=ALPHA) as channel:
        yield notifier_pb2_grpc.NotifierServiceStub(channel)


def subscribe(
    stub: notifier_pb2_grpc.NotifierServiceStub, after_seq: int, max_batch_size: int = 1000
) -> Any:
    """A stream asking for batches (as the gateway does; 0: one notice per message)."""
    return stub.Subscribe(
        notifier_pb2.SubscribeRequest(
            messenger_id="alpha", after_seq=after_seq, max_batch_size=max_batch_size
        ),
        timeout=10,
    )


async def next_progress_mark(call: Any) -> notifier_pb2.ProgressMark:
    """The next item of the stream, which must be a progress mark."""
    item = await call.read()
    assert item is not grpc.aio.EOF
    assert item.HasField("progress") and not item.notices, item
    mark: notifier_pb2.ProgressMark = item.progress
    return mark


async def test_subscribe_streams_notices_in_order_and_a_replayed_publish_adds_none(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    first, second = event(), event()
    for e in (first, second, first):  # the third is a replay of the first: no new notice
        await notifier.publish(e)
    call = subscribe(alpha, 0)
    notices = await read_notices(call, 2)
    assert [(n.seq, n.event.event_id) for n in notices] == [
        (1, first.event_id),
        (2, second.event_id),
    ]
    assert notices[0].event == first
    # then the stream is idle: a progress mark at the head, no third notice
    assert (await next_progress_mark(call)).head_seq == 2
    call.cancel()


async def test_subscribe_again_from_a_cursor_resends_what_follows_it(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    sent = [event() for _ in range(3)]
    for e in sent:
        await notifier.publish(e)
    for after in (1, 1, 0):  # the same cursor twice: the same notices
        call = subscribe(alpha, after)
        notices = await read_notices(call, 3 - after)
        call.cancel()
        assert [n.seq for n in notices] == list(range(after + 1, 4))
        assert [n.event.event_id for n in notices] == [e.event_id for e in sent[after:]]


async def test_an_idle_stream_carries_progress_marks_at_the_head(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    await notifier.publish(event())
    call = subscribe(alpha, 1)
    assert (await next_progress_mark(call)).head_seq == 1
    assert (await next_progress_mark(call)).head_seq == 1
    await notifier.publish(e := event())
    item = await call.read()
    while item.HasField("progress"):
        item = await call.read()
    assert [(n.seq, n.event.event_id) for n in item.notices] == [(2, e.event_id)]
    assert (await next_progress_mark(call)).head_seq == 2
    call.cancel()


async def test_a_stream_that_asks_for_no_batches_gets_one_notice_per_message(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    first, second = event(), event()
    await notifier.publish(first)
    await notifier.publish(second)
    call = subscribe(alpha, 0, max_batch_size=0)
    seen: list[tuple[int, str]] = []
    while len(seen) < 2:
        item = await call.read()
        if item.HasField("notice"):
            assert not item.notices
            seen.append((item.notice.seq, item.notice.event.event_id))
    assert seen == [(1, first.event_id), (2, second.event_id)]
    call.cancel()


async def out_of_range(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(call, 1)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE, e.value
    return e.value


async def test_a_cursor_beyond_the_head_is_out_of_range(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    await notifier.publish(event())
    await out_of_range(subscribe(alpha, 2))


async def test_a_cursor_below_the_retained_floor_is_out_of_range(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    sent = [event() for _ in range(3)]
    for e in sent:
        await notifier.publish(e)
    await notifier.prune_through(2)
    await out_of_range(subscribe(alpha, 1))
    call = subscribe(alpha, 2)  # the floor - 1 is still a cursor
    assert [n.event.event_id for n in await read_notices(call, 1)] == [sent[2].event_id]
    call.cancel()


async def test_an_ack_beyond_the_head_is_out_of_range_and_acks_are_monotonic(
    notifier: NotifierPeer, alpha: notifier_pb2_grpc.NotifierServiceStub
) -> None:
    for _ in range(2):
        await notifier.publish(event())

    async def ack(seq: int) -> int:
        reply = await alpha.Ack(
            notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=seq), timeout=10
        )
        return int(reply.acked_seq)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ack(3)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert await ack(2) == 2
    assert await ack(1) == 2  # a lower ack changes nothing
    assert await ack(2) == 2  # a repeated one neither


# --- the operator registry, as a gateway sees it ----------------------------------------------


@dataclass
class RegistryPeer:
    """A registry of operator `beeline` on `port` where NUMBER and OTHER_NUMBER have subscribers
    and UNKNOWN_NUMBER has none, with an agreement with alpha."""

    port: int
    operator_id: str = "beeline"


@contextlib.asynccontextmanager
async def fake_registry() -> AsyncIterator[RegistryPeer]:
    server, fake = await fakes.start_registry("beeline")
    fake.behaviour[UNKNOWN_NUMBER] = "no_subscriber"
    assert server.port is not None
    try:
        yield RegistryPeer(server.port)
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def real_registry(tmp_path: Path) -> AsyncIterator[RegistryPeer]:
    settings = StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "registry.db")}))
    async with open_registry_store(settings) as store:
        service = RegistryService(store, operator_id="beeline", clock=RegistryClock())
        await service.register_messenger("alpha")
        await service.create_subscriber(NUMBER, "BEE-1")
        await service.create_subscriber(OTHER_NUMBER, "BEE-2")
        server = await start_real_registry(service)
        assert server.port is not None
        try:
            yield RegistryPeer(server.port)
        finally:
            await server.stop(None)


@pytest.fixture(params=["fake", "real"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RegistryPeer]:
    peer = fake_registry() if request.param == "fake" else real_registry(tmp_path)
    async with peer as started:
        yield started


@contextlib.asynccontextmanager
async def registry_as(
    peer: RegistryPeer, caller: Caller
) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    async with open_channel(f"127.0.0.1:{peer.port}", identity=caller) as channel:
        yield registry_pb2_grpc.RegistryServiceStub(channel)


async def verify(
    stub: registry_pb2_grpc.RegistryServiceStub, key: str, phone: str
) -> registry_pb2.VerifySubscriberResponse:
    request = registry_pb2.VerifySubscriberRequest(idempotency_key=key, phone_number=phone)
    reply: registry_pb2.VerifySubscriberResponse = await stub.VerifySubscriber(request, timeout=10)
    return reply


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


async def test_a_subscriber_is_identified_and_a_replayed_request_gets_the_same_answer(
    registry: RegistryPeer,
) -> None:
    async with registry_as(registry, ALPHA) as stub:
        key = uuid.uuid4().hex
        first = await verify(stub, key, NUMBER)
        assert first.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
        assert first.operator_id == registry.operator_id
        assert first.identification_code
        assert await verify(stub, key, NUMBER) == first  # the retry of the same request
        again = await verify(stub, uuid.uuid4().hex, NUMBER)  # asked again: the same code
        assert again.identification_code == first.identification_code


async def test_an_idempotency_key_reused_for_another_number_is_invalid(
    registry: RegistryPeer,
) -> None:
    async with registry_as(registry, ALPHA) as stub:
        key = uuid.uuid4().hex
        await verify(stub, key, NUMBER)
        error = await refused(verify(stub, key, OTHER_NUMBER))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error).reason == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    ("key", "phone"), [("", NUMBER), ("k1", "not a number"), ("k1", "")], ids=str
)
async def test_a_malformed_request_is_invalid(registry: RegistryPeer, key: str, phone: str) -> None:
    async with registry_as(registry, ALPHA) as stub:
        error = await refused(verify(stub, key, phone))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_number_without_a_subscriber_is_answered_no_subscriber(
    registry: RegistryPeer,
) -> None:
    async with registry_as(registry, ALPHA) as stub:
        answer = await verify(stub, uuid.uuid4().hex, UNKNOWN_NUMBER)
    assert answer.result == registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER
    assert answer.operator_id == registry.operator_id
    assert not answer.identification_code


async def test_only_a_messenger_may_ask(registry: RegistryPeer) -> None:
    async with registry_as(registry, Caller(Kind.OPERATOR, "megafon")) as stub:
        error = await refused(verify(stub, uuid.uuid4().hex, NUMBER))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
