"""Retention: acknowledged events older than retention are pruned, unacknowledged never; the
floor rises, and a cursor below it gets OUT_OF_RANGE (never a silent skip)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from idmesh.notifier.v1 import notifier_pb2

from services.notifier.domain import CursorOutOfRange, NoticeBatch
from tests.notifier.support import Notifier, event, read_notices, trailers


async def test_pruning_deletes_acked_old_events_and_never_unacked_ones(notifier: Notifier) -> None:
    clock = notifier.clock
    alpha = notifier.messenger("alpha")
    await notifier.publish(*(event() for _ in range(4)))  # seq 1..4 at T0
    await alpha.Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=2))
    clock.advance(timedelta(days=6))
    assert await notifier.service.prune() == {}  # acked, but younger than 7 days

    clock.advance(timedelta(days=2))  # 8 days: 1..2 acked and old, 3..4 old but unacked
    assert await notifier.service.prune() == {"alpha": 3}
    status = await alpha.GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")
    )
    assert (status.floor_seq, status.head_seq, status.acked_seq) == (3, 4, 2)
    call = notifier.subscribe(after_seq=2)
    assert [n.seq for n in await read_notices(call, 2)] == [3, 4]
    call.cancel()

    clock.advance(timedelta(days=30))  # however old, unacked events stay
    assert await notifier.service.prune() == {}
    await alpha.Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=4))
    assert await notifier.service.prune() == {"alpha": 5}
    status = await alpha.GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")
    )
    # head, acked and the late count survive pruning every event.
    assert (status.floor_seq, status.head_seq, status.acked_seq) == (5, 4, 4)
    assert status.late_deliveries == 2
    await notifier.publish(event())
    call = notifier.subscribe(after_seq=4)
    assert [n.seq for n in await read_notices(call, 1)] == [5]
    call.cancel()


async def test_pruning_stops_at_the_first_young_event(notifier: Notifier) -> None:
    await notifier.publish(event(), event())  # seq 1..2 at T0
    notifier.clock.advance(timedelta(days=8))
    await notifier.publish(event())  # seq 3 at T0 + 8 days
    await notifier.messenger().Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=3))
    assert await notifier.service.prune() == {"alpha": 3}


async def test_cursor_below_the_new_floor_is_out_of_range_with_floor_and_head(
    notifier: Notifier,
) -> None:
    await notifier.publish(*(event() for _ in range(3)))
    await notifier.messenger().Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=2))
    notifier.clock.advance(timedelta(days=8))
    await notifier.service.prune()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await read_notices(notifier.subscribe(after_seq=1), 1)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "older than retention" in (e.value.details() or "")
    assert trailers(e.value)["idmesh-floor-seq"] == "3"
    assert trailers(e.value)["idmesh-head-seq"] == "3"
    call = notifier.subscribe(after_seq=2)  # floor - 1 is still a valid cursor
    assert [n.seq for n in await read_notices(call, 1)] == [3]
    call.cancel()


async def test_a_stream_that_falls_below_the_floor_ends_out_of_range(
    start_notifier: Callable[..., Any],
) -> None:
    """Another gateway of the messenger acked everything and it was pruned while this stream
    lagged: the stream ends with OUT_OF_RANGE after a contiguous prefix, never skipping."""
    notifier: Notifier = await start_notifier(STREAM_BUFFER="1")
    service = notifier.service
    batch = [event() for _ in range(5)]
    await notifier.publish(*batch)
    delivered: list[int] = []
    with pytest.raises(CursorOutOfRange) as e:
        async with asyncio.timeout(10), service.subscribe("alpha", 0, max_batch=1000) as stream:
            async for item in stream:
                assert isinstance(item, NoticeBatch)
                delivered.extend(e.seq for e in item.events)
                if delivered[-1] == 1:
                    await service.ack("alpha", 5)
                    notifier.clock.advance(timedelta(days=8))
                    assert await service.prune() == {"alpha": 6}
    assert delivered == list(range(1, len(delivered) + 1))
    assert len(delivered) < 5
    assert e.value.trailers == {"idmesh-floor-seq": "6", "idmesh-head-seq": "5"}
    assert service.hub.waiter_count() == 0
