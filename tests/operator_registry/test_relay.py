"""The outbox relay against an in-process fake NotifierService: at-least-once, in order,
retrying while the notifier is down, no resend of acked notices after a restart, notices refused
for good parked (and the later ones published), and each termination's trace id carried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from structlog.testing import capture_logs

from services.common.backoff import Backoff
from services.common.context import REQUEST_ID_METADATA_KEY, traced
from services.common.identity import Kind, require_caller
from services.common.interceptors import ErrorTable
from services.common.server import GrpcServer, service_name
from services.common.timeutil import from_timestamp
from services.localmesh.process import free_port as localmesh_free_port
from services.operator_registry.domain import TerminationNotice
from services.operator_registry.relay import OutboxRelay, outbox_metrics
from services.operator_registry.service import RegistryService
from tests.eventually import eventually

from .conftest import NUMBER, OPERATOR, OTHER_NUMBER, START

FAST = Backoff(initial=0.02, maximum=0.1)


class FakeNotifier(notifier_pb2_grpc.NotifierServiceServicer):
    """Stores events by event_id (a replay is a duplicate); can fail the next calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # event ids per Publish call, duplicates included
        self.stored: dict[str, events_pb2.ContractTerminated] = {}
        self.fail_before_store = 0
        self.fail_after_store = 0
        # A batch holding one of these event ids is refused whole with the code (as the notifier
        # refuses a batch with one bad event).
        self.refuse: dict[str, grpc.StatusCode] = {}
        self.request_ids: list[str] = []  # the x-request-id of each Publish call
        # What the fake found wrong with a call: raised inside a servicer, an AssertionError
        # would reach the relay as UNKNOWN (and a retry), so the fixture raises it instead.
        self.failures: list[AssertionError] = []

    def expect(self, condition: bool, message: str) -> None:
        """Record a broken expectation for the test to fail on, and refuse the call."""
        if not condition:
            self.failures.append(AssertionError(message))
            raise self.failures[-1]

    def raise_failures(self) -> None:
        if self.failures:
            raise self.failures[0]

    async def Publish(
        self, request: notifier_pb2.PublishRequest, context: Any
    ) -> notifier_pb2.PublishResponse:
        caller = require_caller(Kind.OPERATOR)
        if self.fail_before_store:
            self.fail_before_store -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "notifier busy")
        self.expect(
            all(e.operator_id == caller.id for e in request.events),
            f"operator {caller.id} published events of another operator",
        )
        metadata = dict(context.invocation_metadata() or ())
        self.request_ids.append(str(metadata.get(REQUEST_ID_METADATA_KEY, "")))
        self.calls.append([e.event_id for e in request.events])
        for index, event in enumerate(request.events):
            if event.event_id in self.refuse:
                await context.abort(
                    self.refuse[event.event_id], f"events[{index}] is refused for good"
                )
        accepted = 0
        for event in request.events:
            if event.event_id not in self.stored:
                self.stored[event.event_id] = event
                accepted += 1
        if self.fail_after_store:  # committed, but the ack is lost
            self.fail_after_store -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return notifier_pb2.PublishResponse(
            accepted=accepted, duplicates=len(request.events) - accepted
        )

    @property
    def sent(self) -> list[str]:
        return [event_id for call in self.calls for event_id in call]


async def start_notifier(fake: FakeNotifier, port: int = 0) -> GrpcServer:
    server = GrpcServer(name="fake-notifier", bind=f"127.0.0.1:{port}", errors=ErrorTable({}))
    server.add(
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server,
        fake,
        service_name(notifier_pb2.DESCRIPTOR, "NotifierService"),
    )
    await server.start()
    return server


@pytest.fixture
async def notifier() -> AsyncIterator[tuple[FakeNotifier, int]]:
    fake = FakeNotifier()
    server = await start_notifier(fake)
    assert server.port is not None
    yield fake, server.port
    await server.stop(None)
    fake.raise_failures()


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def relay_for(service: RegistryService, port: int, **kwargs: Any) -> OutboxRelay:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("poll_seconds", 5.0)  # wake-ups must come from TerminateContract
    return OutboxRelay(service, notifier_address=f"127.0.0.1:{port}", **kwargs)


async def bound_subscriber(
    service: RegistryService, number: str, contract_id: str, messengers: list[str]
) -> dict[str, str]:
    """A contract on number with a binding per messenger; messenger -> code."""
    await service.create_subscriber(number, contract_id)
    codes = {}
    for messenger in messengers:
        await service.register_messenger(messenger)
        answer = await service.verify_subscriber(
            messenger, f"req-{contract_id}-{messenger}", number, time_remaining=None
        )
        assert answer.identification_code is not None
        codes[messenger] = answer.identification_code
    return codes


def free_port() -> int:
    return localmesh_free_port()


async def test_relay_publishes_pending_notices_and_marks_them_published(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    codes = await bound_subscriber(service, NUMBER, "BEE-1", ["alpha", "beta"])
    await service.terminate_contract(NUMBER)
    assert await service.count_pending_notices() == 2

    async with running(relay_for(service, port)):
        await eventually(lambda: len(fake.stored) == 2, what="two events at the notifier")
        await eventually(_pending_is(service, 0), what="no pending notices")

    events = sorted(fake.stored.values(), key=lambda e: e.messenger_id)
    assert [e.messenger_id for e in events] == ["alpha", "beta"]
    for event in events:
        assert event.operator_id == OPERATOR
        assert event.phone_number == NUMBER
        assert event.identification_code == codes[event.messenger_id]
        assert event.reason == events_pb2.TERMINATION_REASON_CONTRACT_ENDED
        assert from_timestamp(event.occurred_at) == START
    assert len(fake.calls) == 1  # one batch


def _pending_is(service: RegistryService, count: int) -> Any:
    async def check() -> bool:
        return await service.count_pending_notices() == count

    return check


async def test_relay_is_woken_by_a_termination_without_waiting_for_the_poll(
    service: RegistryService,
    notifier: tuple[FakeNotifier, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, port = notifier
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha"])
    waiting = asyncio.Event()
    wait_for_notices = service.wait_for_notices

    async def recorded_wait(max_wait: float) -> None:
        waiting.set()
        await wait_for_notices(max_wait)

    monkeypatch.setattr(service, "wait_for_notices", recorded_wait)
    async with running(relay_for(service, port, poll_seconds=60.0)):
        # the relay found nothing to publish and waits, for a minute unless woken
        await asyncio.wait_for(waiting.wait(), 10)
        await service.terminate_contract(NUMBER)
        await eventually(lambda: len(fake.stored) == 1, within=2.0, what="the event")


async def test_relay_retries_while_the_notifier_is_down_and_delivers_when_it_is_up(
    service: RegistryService,
) -> None:
    port = free_port()
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha"])
    await service.terminate_contract(NUMBER)
    fake = FakeNotifier()
    with capture_logs() as logs:
        async with running(relay_for(service, port)):
            await eventually(
                lambda: sum(e["event"] == "relay.publish_failed" for e in logs) >= 3,
                what="three failed attempts",
            )
            assert await service.count_pending_notices() == 1
            server = await start_notifier(fake, port)
            try:
                await eventually(_pending_is(service, 0), what="delivery after the notifier is up")
            finally:
                await server.stop(None)
    fake.raise_failures()
    assert len(fake.stored) == 1
    failures = [e for e in logs if e["event"] == "relay.publish_failed"]
    assert all(e["log_level"] == "warning" and e["status"] == "UNAVAILABLE" for e in failures)
    assert NUMBER not in repr(logs)


async def test_relay_resends_a_batch_whose_ack_was_lost_and_the_notifier_dedups(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    fake.fail_after_store = 1
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha", "beta"])
    await service.terminate_contract(NUMBER)
    async with running(relay_for(service, port)):
        await eventually(_pending_is(service, 0), what="delivery")
    assert len(fake.calls) == 2 and fake.calls[0] == fake.calls[1]
    assert len(fake.stored) == 2


async def test_relay_does_not_resend_acked_notices_after_a_restart(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha"])
    await bound_subscriber(service, OTHER_NUMBER, "BEE-2", ["alpha"])
    await service.terminate_contract(NUMBER)
    async with running(relay_for(service, port)):
        await eventually(_pending_is(service, 0), what="first delivery")
    first = list(fake.sent)
    assert len(first) == 1

    async with running(relay_for(service, port)):  # a restarted relay
        await service.terminate_contract(OTHER_NUMBER)
        await eventually(lambda: len(fake.sent) == 2, what="the second event")
        await eventually(_pending_is(service, 0), what="second delivery")
    assert fake.sent[0] == first[0]
    assert len(set(fake.sent)) == 2  # the first event was not sent again


async def test_relay_sends_in_created_order_in_batches_of_the_configured_size(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha", "beta", "gamma"])
    termination = await service.terminate_contract(NUMBER)
    expected = [n.event_id for n in await service.pending_notices(10)]
    assert termination.notices_queued == 3
    async with running(relay_for(service, port, batch_size=2)):
        await eventually(_pending_is(service, 0), what="delivery")
    assert [len(call) for call in fake.calls] == [2, 1]
    assert fake.sent == expected


async def test_relay_stops_cleanly_when_cancelled_while_backing_off(
    service: RegistryService,
) -> None:
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha"])
    await service.terminate_contract(NUMBER)
    relay = relay_for(service, free_port(), backoff=Backoff(initial=30.0, maximum=30.0))
    with capture_logs() as logs:
        task = asyncio.create_task(relay.run())
        await eventually(
            lambda: any(e["event"] == "relay.publish_failed" for e in logs), what="a failure"
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(2.0):
                await task
    assert task.cancelled()
    assert any(e["event"] == "relay.stopped" for e in logs)
    assert await service.count_pending_notices() == 1  # kept for the next start


async def test_a_notice_refused_for_good_is_parked_and_the_later_ones_are_published(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha", "beta", "gamma"])
    await bound_subscriber(service, OTHER_NUMBER, "BEE-2", ["alpha"])
    await service.terminate_contract(NUMBER)
    await service.terminate_contract(OTHER_NUMBER)
    queued = await service.pending_notices(10)
    poison = next(n for n in queued if n.messenger_id == "beta")
    fake.refuse[poison.event_id] = grpc.StatusCode.PERMISSION_DENIED
    with capture_logs() as logs:
        async with running(relay_for(service, port)):
            await eventually(_pending_is(service, 0), what="every other notice published")
            await eventually(lambda: len(fake.stored) == 3, what="three events stored")
            collector = outbox_metrics(service)
            samples = await asyncio.to_thread(lambda: list(collector.collect()))
    # the others were stored (in this order: the fake keeps insertion order) around the poison
    assert list(fake.stored) == [n.event_id for n in queued if n is not poison]
    gauge = next(m for m in samples if m.name == "idmesh_registry_outbox_parked")
    assert gauge.samples[0].value == 1
    parked, next_token = await service.list_parked_notices(100, "")
    assert next_token == ""
    assert [p.notice.event_id for p in parked] == [poison.event_id]
    assert parked[0].status == "PERMISSION_DENIED"
    assert parked[0].message == "events[0] is refused for good"
    [line] = [e for e in logs if e["event"] == "relay.notice_parked"]
    assert line["log_level"] == "error" and line["event_id"] == poison.event_id
    assert await service.count_pending_notices() == 0


async def one_notice_refused(
    service: RegistryService, fake: FakeNotifier, code: grpc.StatusCode
) -> TerminationNotice:
    """A termination's one notice, which the fake notifier refuses with code."""
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha"])
    await service.terminate_contract(NUMBER)
    [notice] = await service.pending_notices(10)
    fake.refuse[notice.event_id] = code
    return notice


async def test_a_parked_notice_retried_by_an_operator_is_published(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    notice = await one_notice_refused(service, fake, grpc.StatusCode.INVALID_ARGUMENT)
    async with running(relay_for(service, port)):
        await eventually(lambda: service.count_parked_notices(), what="the refused notice parked")
        assert await service.retry_parked_notices(["no-such-event"]) == 0
        del fake.refuse[notice.event_id]  # the cause is fixed
        assert await service.retry_parked_notices([]) == 1
        await eventually(lambda: notice.event_id in fake.stored, what="the retried notice")
        await eventually(_pending_is(service, 0), what="nothing left queued")
    assert await service.count_parked_notices() == 0
    assert await service.retry_parked_notices([notice.event_id]) == 0  # published: not parked


async def test_a_retryable_refusal_is_retried_not_parked(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    notice = await one_notice_refused(service, fake, grpc.StatusCode.RESOURCE_EXHAUSTED)
    async with running(relay_for(service, port)):
        await eventually(lambda: len(fake.calls) >= 3, what="three attempts")
        assert await service.count_parked_notices() == 0
        del fake.refuse[notice.event_id]
        await eventually(_pending_is(service, 0), what="delivery once accepted")


async def test_each_event_carries_its_terminations_trace_id_and_so_does_the_publish(
    service: RegistryService, notifier: tuple[FakeNotifier, int]
) -> None:
    fake, port = notifier
    await bound_subscriber(service, NUMBER, "BEE-1", ["alpha", "beta"])
    await bound_subscriber(service, OTHER_NUMBER, "BEE-2", ["alpha"])
    with traced("trace-terminate-1"):
        await service.terminate_contract(NUMBER)
    async with running(relay_for(service, port)):
        await eventually(_pending_is(service, 0), what="the first termination's notices")
        with traced("trace-port-out-2"):
            await service.port_out(OTHER_NUMBER, "megafon")
        await eventually(_pending_is(service, 0), what="the port-out's notice")
        await eventually(lambda: len(fake.stored) == 3, what="three events")
    traces = {e.event_id: e.trace_id for e in fake.stored.values()}
    assert sorted(traces.values()) == ["trace-port-out-2", "trace-terminate-1", "trace-terminate-1"]
    assert fake.request_ids == ["trace-terminate-1", "trace-port-out-2"]
