"""Subscribe: resumable, live, unique, ordered, progress marks, scoped, OUT_OF_RANGE, bounded
buffering with RESOURCE_EXHAUSTED for a slow consumer, and no leaks on cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from tests.eventually import eventually
from tests.notifier.support import Notifier, event, read_notices, trailers


async def test_resume_after_cursor_gives_exactly_the_later_events(notifier: Notifier) -> None:
    sent = [event() for _ in range(10)]
    await notifier.publish(*sent)
    for cursor in (0, 3, 9, 10):
        call = notifier.subscribe(after_seq=cursor)
        notices = await read_notices(call, 10 - cursor)
        assert [n.seq for n in notices] == list(range(cursor + 1, 11))
        assert [n.event.event_id for n in notices] == [e.event_id for e in sent[cursor:]]
        # ...and nothing more: the next item is a progress mark, not a notice.
        call.cancel()


async def test_events_published_while_subscribed_arrive_live(notifier: Notifier) -> None:
    await notifier.publish(event())
    call = notifier.subscribe(after_seq=1)
    live = [event(), event(), event()]

    async def publish_later() -> None:
        for e in live:
            await notifier.publish(e)

    publisher = asyncio.create_task(publish_later())
    notices = await read_notices(call, 3)
    await publisher
    call.cancel()
    assert [(n.seq, n.event.event_id) for n in notices] == [
        (2, live[0].event_id),
        (3, live[1].event_id),
        (4, live[2].event_id),
    ]
    assert all(n.HasField("published_at") for n in notices)


async def test_each_seq_is_delivered_once_within_a_stream(
    start_notifier: Callable[..., Any],
) -> None:
    notifier: Notifier = await start_notifier(PROGRESS_INTERVAL_SECONDS="0.1")
    await notifier.publish(*(event() for _ in range(50)))
    call = notifier.subscribe()
    later = [[event() for _ in range(20)] for _ in range(10)]

    async def publisher(batch: list[Any]) -> None:
        await notifier.publish(*batch)
        await notifier.publish(*batch)  # a replay: no new seq, nothing delivered twice

    publishers = asyncio.gather(*(publisher(b) for b in later))
    notices = await read_notices(call, 250)
    await publishers
    async with asyncio.timeout(5):
        quiet = await call.read()  # after the last notice the stream only marks progress
    call.cancel()
    assert [n.seq for n in notices] == list(range(1, 251))
    assert len({n.event.event_id for n in notices}) == 250
    assert quiet.HasField("progress") and not quiet.notices
    assert quiet.progress.head_seq == 250


async def test_a_backlog_streams_several_notices_per_message_up_to_the_batch(
    start_notifier: Callable[..., Any],
) -> None:
    notifier: Notifier = await start_notifier(STREAM_BATCH="4")
    sent = [event() for _ in range(10)]
    await notifier.publish(*sent)
    call = notifier.subscribe()
    messages: list[list[int]] = []
    async with asyncio.timeout(5):
        while sum(map(len, messages)) < 10:
            item = await call.read()
            assert item is not grpc.aio.EOF
            if item.notices:
                assert not item.HasField("progress")
                messages.append([n.seq for n in item.notices])
    call.cancel()
    assert [seq for message in messages for seq in message] == list(range(1, 11))
    assert all(1 <= len(message) <= 4 for message in messages)
    assert len(messages) < 10  # the backlog was sent several notices per message


async def test_a_subscriber_that_asks_for_no_batches_gets_one_notice_per_message_in_notice(
    start_notifier: Callable[..., Any],
) -> None:
    """max_batch_size unset is the stream as first published: every message carries one notice
    in `notice` (a consumer that knows no `notices` misses nothing), then progress marks."""
    notifier: Notifier = await start_notifier(STREAM_BATCH="4", PROGRESS_INTERVAL_SECONDS="0.1")
    await notifier.publish(*(event() for _ in range(10)))
    call = notifier.subscribe(max_batch_size=0)
    kinds: list[str | None] = []
    seqs: list[int] = []
    async with asyncio.timeout(5):
        while len(seqs) < 10:
            item = await call.read()
            assert item is not grpc.aio.EOF
            assert not item.notices
            kinds.append(item.WhichOneof("kind"))
            if item.HasField("notice"):
                seqs.append(item.notice.seq)
        mark = await call.read()
    call.cancel()
    assert seqs == list(range(1, 11))
    assert kinds == ["notice"] * 10  # no message of the backlog went out without its notice
    assert mark.WhichOneof("kind") == "progress" and mark.progress.head_seq == 10


async def test_max_batch_size_bounds_the_notices_per_message(
    start_notifier: Callable[..., Any],
) -> None:
    notifier: Notifier = await start_notifier(STREAM_BATCH="256")
    await notifier.publish(*(event() for _ in range(10)))
    call = notifier.subscribe(max_batch_size=3)
    messages: list[list[int]] = []
    async with asyncio.timeout(5):
        while sum(map(len, messages)) < 10:
            item = await call.read()
            assert item is not grpc.aio.EOF
            assert not item.HasField("notice")
            if item.notices:
                messages.append([n.seq for n in item.notices])
    call.cancel()
    assert [seq for message in messages for seq in message] == list(range(1, 11))
    assert all(1 <= len(message) <= 3 for message in messages)
    assert any(len(message) > 1 for message in messages)


async def test_idle_stream_carries_progress_marks_at_the_head(
    start_notifier: Callable[..., Any],
) -> None:
    notifier: Notifier = await start_notifier(PROGRESS_INTERVAL_SECONDS="0.05")
    await notifier.publish(event(), event())
    call = notifier.subscribe(after_seq=2)
    async with asyncio.timeout(5):
        first, second = await call.read(), await call.read()
    assert first.HasField("progress") and first.progress.head_seq == 2
    assert second.HasField("progress") and second.progress.head_seq == 2
    await notifier.publish(event())
    async with asyncio.timeout(5):
        item = await call.read()
        while item.HasField("progress"):
            assert item.progress.head_seq == 2
            item = await call.read()
        assert [n.seq for n in item.notices] == [3]
        mark = await call.read()
    assert mark.HasField("progress") and mark.progress.head_seq == 3
    call.cancel()


async def test_streams_statuses_and_errors_are_scoped_to_the_callers_messenger(
    notifier: Notifier,
) -> None:
    for _ in range(3):
        await notifier.publish(event("alpha"), event("alpha"), event("beta"))
    # beta's own stream holds only beta's events, numbered in beta's own sequence.
    beta_call = notifier.subscribe("beta")
    beta = await read_notices(beta_call, 3)
    beta_call.cancel()
    assert [n.seq for n in beta] == [1, 2, 3]
    assert {n.event.messenger_id for n in beta} == {"beta"}

    # beta's OUT_OF_RANGE tells beta's range, not alpha's.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe("beta", after_seq=5), 1)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert trailers(e.value)["idmesh-head-seq"] == "3"

    beta_caller = Caller(Kind.MESSENGER, "beta")
    refusals: list[grpc.aio.AioRpcError] = []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe("alpha", caller=beta_caller), 1)
    refusals.append(e.value)
    # after_seq beyond alpha's head: still PERMISSION_DENIED, so beta cannot probe alpha's head.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe("alpha", after_seq=999, caller=beta_caller), 1)
    refusals.append(e.value)
    stub = notifier.messenger("beta")
    for call in (
        stub.Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=1)),
        stub.Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=999)),
        stub.GetDeliveryStatus(notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        refusals.append(e.value)
    for refusal in refusals:
        assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "idmesh-head-seq" not in trailers(refusal)
        assert "idmesh-floor-seq" not in trailers(refusal)
        assert "6" not in (refusal.details() or "")  # alpha's head
    status = await notifier.messenger("alpha").GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")
    )
    assert (status.head_seq, status.acked_seq) == (6, 0)  # beta's attempts changed nothing


@pytest.mark.parametrize(
    "caller",
    [
        Caller(Kind.OPERATOR, "alpha"),
        Caller(Kind.MESSENGER, "alpha", Role.ADMIN),
        Caller(Kind.MESSENGER, "alpha", Role.FRONTEND),
    ],
)
async def test_only_the_messengers_own_service_may_subscribe(
    notifier: Notifier, caller: Caller
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe("alpha", caller=caller), 1)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_cursor_beyond_the_head_is_out_of_range_with_floor_and_head(
    notifier: Notifier,
) -> None:
    await notifier.publish(event(), event())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe(after_seq=3), 1)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "after_seq 3 is beyond the head 2" in (e.value.details() or "")
    assert trailers(e.value)["idmesh-floor-seq"] == "1"
    assert trailers(e.value)["idmesh-head-seq"] == "2"
    # A messenger with no events at all: only cursor 0 is valid.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe("gamma", after_seq=1), 1)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert trailers(e.value)["idmesh-floor-seq"] == "1"
    assert trailers(e.value)["idmesh-head-seq"] == "0"


async def test_slow_consumer_gets_resource_exhausted_and_resuming_loses_nothing(
    start_notifier: Callable[..., Any],
) -> None:
    notifier: Notifier = await start_notifier(STREAM_BUFFER="2", SLOW_CONSUMER_SECONDS="0.2")
    sent = [event() for _ in range(200)]
    await notifier.publish(*sent)
    # A client that reads nothing, with a small HTTP/2 window so that the transport backs up.
    channel = open_channel(
        f"127.0.0.1:{notifier.port}",
        identity=Caller(Kind.MESSENGER, "alpha"),
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    try:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        call = stub.Subscribe(
            notifier_pb2.SubscribeRequest(messenger_id="alpha", max_batch_size=1000)
        )
        await eventually(lambda: notifier.service.stream_stats.too_slow == 1)
        received: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async with asyncio.timeout(5):
                async for item in call:
                    received.extend(n.seq for n in item.notices)
    finally:
        await channel.close()
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "consumer too slow; resume from your last applied seq" in (e.value.details() or "")
    assert 0 < len(received) < 200
    assert received == list(range(1, len(received) + 1))

    cursor = received[-1]
    resumed = notifier.subscribe(after_seq=cursor)
    rest = await read_notices(resumed, 200 - cursor)
    resumed.cancel()
    assert [n.seq for n in rest] == list(range(cursor + 1, 201))
    assert [n.event.event_id for n in rest] == [e.event_id for e in sent[cursor:]]


async def test_open_streams_end_unavailable_when_the_notifier_closes(notifier: Notifier) -> None:
    await notifier.publish(event())
    call = notifier.subscribe()
    assert [n.seq for n in await read_notices(call, 1)] == [1]
    await notifier.service.close()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(call, 1)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe(), 1)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert notifier.service.hub.waiter_count() == 0


async def test_subscribe_cancel_cycles_leak_no_tasks_or_waiters(notifier: Notifier) -> None:
    await notifier.publish(event(), event("beta"))
    hub = notifier.service.hub

    async def cycle(messenger_id: str) -> None:
        call = notifier.subscribe(messenger_id)
        assert [n.seq for n in await read_notices(call, 1)] == [1]
        call.cancel()

    await cycle("alpha")  # warm up the channels
    await cycle("beta")
    await eventually(lambda: notifier.service.stream_stats.active == 0)
    baseline = len(asyncio.all_tasks())

    for n in range(1000):
        await cycle("alpha" if n % 2 else "beta")
    await eventually(lambda: notifier.service.stream_stats.active == 0)
    # No more tasks than before (fewer is fine: the baseline may hold a connection's own).
    await eventually(lambda: len(asyncio.all_tasks()) <= baseline)

    assert hub.waiter_count() == 0
    assert hub.watched_messengers() == []
    assert notifier.service.stream_stats.opened == 1002
