"""The notice consumer against a fake NotifierService over gRPC: exactly-once application,
cursor, acks, reconnects, gaps and OUT_OF_RANGE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.notifier.v1 import notifier_pb2
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.common.backoff import Backoff
from services.common.channels import open_channel
from services.common.db import Database
from services.common.identity import Caller, Kind
from services.common.server import GrpcServer
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.model import Reason, State
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.notices.consumer import NoticeConsumer
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    CursorOutOfRange,
    FakeNotifier,
    RecordingSms,
    identify,
    make_service,
    open_store,
    start_notifier,
)

CODE = "IC-beeline-4567"  # what the fake operators give +79031234567


@dataclass
class Rig:
    notifier: FakeNotifier
    server: GrpcServer
    db: Database
    store: GatewayStore
    service: GatewayService
    sms: RecordingSms
    tasks: list[asyncio.Task[None]]
    consumers: list[NoticeConsumer]
    channels: list[grpc.aio.Channel]

    def start_consumer(self, service: GatewayService | None = None) -> NoticeConsumer:
        channel = open_channel(
            f"127.0.0.1:{self.server.port}", identity=Caller(Kind.MESSENGER, "alpha")
        )
        consumer = NoticeConsumer(
            service or self.service, channel, backoff=Backoff(initial=0.01, maximum=0.05)
        )
        self.channels.append(channel)
        self.consumers.append(consumer)
        self.tasks.append(asyncio.create_task(consumer.run()))
        return consumer

    async def cursor(self) -> int:
        return await self.store.notice_cursor("alpha")

    async def wait_cursor(self, seq: int, within: float = 5.0) -> None:
        async def reached() -> bool:
            return await self.cursor() >= seq

        await eventually(reached, within=within, what=f"cursor {seq}")

    async def state(self, identification_id: str) -> tuple[State, Reason]:
        ident = await self.store.get(identification_id)
        assert ident is not None
        return ident.state, ident.reason


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    server, notifier = await start_notifier()
    db, store = await open_store(tmp_path / "gw.db")
    sms = RecordingSms()
    rig = Rig(notifier, server, db, store, make_service(store, sms=sms), sms, [], [], [])
    try:
        yield rig
    finally:
        for task in rig.tasks:
            task.cancel()
        for task in rig.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in rig.channels:
            await channel.close()
        await rig.service.close()
        await server.stop(None)
        await db.close()


def _hold_open() -> asyncio.Event:
    return asyncio.Event()  # never set: the script keeps the stream open until cancelled


async def test_a_notice_revokes_advances_the_cursor_and_is_acked(rig: Rig) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    other = await identify(rig.service, rig.sms, "u2", "+79037654321")
    consumer = rig.start_consumer()
    await rig.notifier.append(event_id="ev-1", identification_code=CODE)
    await rig.wait_cursor(1)
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    assert (await rig.state(other))[0] is State.IDENTIFIED
    await eventually(lambda: consumer.acked == 1, what="ack")
    assert rig.notifier.acks[-1] == 1
    assert rig.notifier.subscribes == [0]


async def test_the_applied_notice_is_logged_with_its_terminations_trace_id(rig: Rig) -> None:
    await identify(rig.service, rig.sms, "u1")
    with capture_logs() as logs:
        rig.start_consumer()
        await rig.notifier.append(
            event_id="ev-1", identification_code=CODE, trace_id="trace-terminate-9"
        )
        await rig.wait_cursor(1)
    [applied] = [e for e in logs if e["event"] == "notice.applied"]  # at debug
    assert (applied["event_id"], applied["trace_id"]) == ("ev-1", "trace-terminate-9")
    [batch] = [e for e in logs if e["event"] == "notices.applied"]  # at info, per message
    assert batch["log_level"] == "info"
    assert (batch["event_ids"], batch["trace_ids"]) == (["ev-1"], ["trace-terminate-9"])


def _notices(result: str) -> float:
    return REGISTRY.get_sample_value("idmesh_gateway_notices_total", {"result": result}) or 0.0


async def test_the_same_event_delivered_twice_is_applied_once(rig: Rig) -> None:
    first = await identify(rig.service, rig.sms, "u1")
    consumer = rig.start_consumer()
    await rig.notifier.append(event_id="ev-1", identification_code=CODE)
    await rig.wait_cursor(1)
    assert (await rig.state(first))[0] is State.REVOKED
    applied, duplicates = _notices("applied"), _notices("duplicate")
    # the same event, delivered again under a new seq, is recognised and changes nothing
    await rig.notifier.append(event_id="ev-1", identification_code=CODE)
    # counted once the store has committed it (so wait for the count, not for the cursor)
    await eventually(lambda: _notices("duplicate") == duplicates + 1, what="the duplicate")
    assert _notices("applied") == applied
    assert await rig.cursor() == 2
    assert await rig.state(first) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    assert await rig.store.inbox_has("ev-1")
    await eventually(lambda: consumer.acked == 2, what="ack of the duplicate")


async def test_the_consumer_asks_for_batches_and_reads_a_notifier_that_sends_none(
    rig: Rig,
) -> None:
    """A notifier of the first v1 knows no max_batch_size and sends one notice per message in
    `notice`: the consumer applies those as it applies batches."""
    ident = await identify(rig.service, rig.sms, "u1")
    await rig.notifier.append(event_id="ev-1", identification_code="someone-else")
    await rig.notifier.append(event_id="ev-2", identification_code=CODE)
    asked: list[int] = []

    async def one_per_message(
        request: notifier_pb2.SubscribeRequest,
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        asked.append(request.max_batch_size)
        for notice in rig.notifier.log[request.after_seq :]:
            yield notifier_pb2.SubscribeResponse(notice=notice)
        await _hold_open().wait()

    rig.notifier.scripts.append(one_per_message)
    rig.start_consumer()
    await rig.wait_cursor(2)
    assert asked and asked[0] > 0
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    assert rig.notifier.subscribes == [0]  # no gap, no resubscription


async def test_a_reconnect_resumes_from_the_cursor_and_loses_nothing(rig: Rig) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    await rig.notifier.append(event_id="ev-1", identification_code="someone-else")
    await rig.notifier.append(event_id="ev-2", identification_code=CODE)

    async def one_then_end(
        request: notifier_pb2.SubscribeRequest,
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        yield notifier_pb2.SubscribeResponse(notices=[rig.notifier.log[0]])

    rig.notifier.scripts.append(one_then_end)
    rig.start_consumer()
    await rig.wait_cursor(2)
    assert rig.notifier.subscribes[:2] == [0, 1]
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    assert await rig.store.inbox_has("ev-1") and await rig.store.inbox_has("ev-2")


@pytest.mark.parametrize(
    "messages",
    [[[1], [3]], [[1, 3]]],
    ids=["between messages", "inside a message"],
)
async def test_a_gap_aborts_the_stream_and_resubscribes_from_the_cursor(
    rig: Rig, messages: list[list[int]]
) -> None:
    """seq 3 right after seq 1: seq 1 is applied, then the stream is dropped and the consumer
    resubscribes after seq 1."""
    for n in (1, 2, 3):
        await rig.notifier.append(event_id=f"ev-{n}", identification_code=f"code-{n}")
    cancelled = asyncio.Event()

    async def skip_two(
        request: notifier_pb2.SubscribeRequest,
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        for seqs in messages:
            yield notifier_pb2.SubscribeResponse(
                notices=[rig.notifier.log[seq - 1] for seq in seqs]
            )
        try:
            await _hold_open().wait()
        finally:
            cancelled.set()

    rig.notifier.scripts.append(skip_two)
    rig.start_consumer()
    await rig.wait_cursor(3)
    assert rig.notifier.subscribes[:2] == [0, 1]
    await asyncio.wait_for(cancelled.wait(), timeout=5)  # the gapped stream was cancelled
    rows = await rig.db.fetchall("SELECT event_id, seq FROM notice_inbox ORDER BY seq")
    assert [(r["event_id"], r["seq"]) for r in rows] == [("ev-1", 1), ("ev-2", 2), ("ev-3", 3)]


async def test_a_message_of_several_notices_is_applied_in_one_transaction_and_acked_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    for n, code in ((1, "someone-else"), (2, CODE), (3, "another")):
        await rig.notifier.append(event_id=f"ev-{n}", identification_code=code)
    batches: list[list[int]] = []
    apply_notices = transactions.apply_notices  # one store.run: one transaction

    async def recording(
        store: Any, messenger_id: str, notices: Any, *, now: Any, fence: Any = None
    ) -> Any:
        batches.append([notice.seq for notice, _ in notices])
        return await apply_notices(store, messenger_id, notices, now=now, fence=fence)

    monkeypatch.setattr(transactions, "apply_notices", recording)
    consumer = rig.start_consumer()  # the fake sends the three in one message
    await rig.wait_cursor(3)
    assert batches == [[1, 2, 3]]
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    await eventually(lambda: consumer.acked == 3, what="ack")
    assert rig.notifier.acks == [3]  # up to the highest applied seq, not one per notice


async def test_a_duplicate_inside_a_message_is_applied_once(rig: Rig) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    applied, duplicates = _notices("applied"), _notices("duplicate")
    # a relay's resend that got a second seq, delivered in the same message as the first
    await rig.notifier.append(event_id="ev-1", identification_code=CODE)
    await rig.notifier.append(event_id="ev-1", identification_code=CODE)
    consumer = rig.start_consumer()
    await rig.wait_cursor(2)
    assert (_notices("applied"), _notices("duplicate")) == (applied + 1, duplicates + 1)
    rows = await rig.db.fetchall("SELECT event_id, seq, revoked FROM notice_inbox")
    assert [(r["event_id"], r["seq"], r["revoked"]) for r in rows] == [("ev-1", 1, 1)]
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    await eventually(lambda: consumer.acked == 2, what="ack of both")


async def test_a_batch_that_dies_before_its_commit_leaves_nothing_and_is_applied_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    for n, code in ((1, "someone-else"), (2, CODE), (3, "another")):
        await rig.notifier.append(event_id=f"ev-{n}", identification_code=code)
    died: list[str] = []

    def die_once(name: str) -> None:  # the failpoint, raising instead of exiting the process
        if name == "gateway.notice.before_commit" and not died:
            died.append(name)
            raise RuntimeError("killed inside the batch's transaction")

    monkeypatch.setattr(transactions, "failpoint", die_once)
    rig.start_consumer()
    # generous: the test log renders the failed stream's traceback with its locals (seconds)
    await rig.wait_cursor(3, within=60)
    assert died
    assert rig.notifier.subscribes[:2] == [0, 0]  # nothing of the batch was kept: all again
    rows = await rig.db.fetchall("SELECT event_id, revoked FROM notice_inbox ORDER BY seq")
    assert [(r["event_id"], r["revoked"]) for r in rows] == [("ev-1", 0), ("ev-2", 1), ("ev-3", 0)]
    assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)


async def test_out_of_range_is_retried_and_never_skipped(rig: Rig) -> None:
    await rig.notifier.append(event_id="ev-1", identification_code="x")

    async def out_of_range(
        request: notifier_pb2.SubscribeRequest,
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        raise CursorOutOfRange(
            "after_seq 0 is below the retained floor",
            trailers={"idmesh-floor-seq": "5", "idmesh-head-seq": "9"},
        )
        yield notifier_pb2.SubscribeResponse()  # pragma: no cover (makes this a generator)

    rig.notifier.scripts.extend([out_of_range, out_of_range])
    rig.start_consumer()
    await rig.wait_cursor(1)
    assert rig.notifier.subscribes[:3] == [0, 0, 0]


async def test_progress_marks_change_nothing(rig: Rig) -> None:
    await rig.notifier.append(event_id="ev-1", identification_code="x")

    async def mark_then_notice(
        request: notifier_pb2.SubscribeRequest,
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        yield notifier_pb2.SubscribeResponse(progress=notifier_pb2.ProgressMark(head_seq=1))
        yield notifier_pb2.SubscribeResponse(notices=[rig.notifier.log[0]])
        await _hold_open().wait()

    rig.notifier.scripts.append(mark_then_notice)
    rig.start_consumer()
    await rig.wait_cursor(1)
    assert rig.notifier.subscribes == [0]


async def test_two_gateway_processes_on_one_database_apply_a_notice_once(
    rig: Rig, tmp_path: Path
) -> None:
    ident = await identify(rig.service, rig.sms, "u1")
    db2, store2 = await open_store(tmp_path / "gw.db")  # a second process's connections
    service2 = make_service(store2)
    try:
        first, second = rig.start_consumer(), rig.start_consumer(service2)
        await eventually(lambda: len(rig.notifier.subscribes) == 2, what="both subscribed")
        await rig.notifier.append(event_id="ev-1", identification_code=CODE)
        await eventually(lambda: first.acked == 1 and second.acked == 1, what="both acked")
        assert await rig.state(ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
        row = await rig.db.fetchall("SELECT revoked FROM notice_inbox")
        assert [r["revoked"] for r in row] == [1]
    finally:
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)
        await service2.close()
        await db2.close()


async def test_cancelling_the_consumer_ends_its_stream(rig: Rig) -> None:
    rig.start_consumer()
    await eventually(lambda: rig.notifier.subscribes == [0], what="subscribed")
    rig.tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(rig.tasks[0], timeout=5)
