"""Ack (monotonic, idempotent, bounded by the head), delivery status, late deliveries, SLA logs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from idmesh.notifier.v1 import notifier_pb2
from structlog.testing import capture_logs

from services.common.timeutil import from_timestamp
from tests.eventually import eventually
from tests.notifier.support import T0, Notifier, event, trailers


async def ack(notifier: Notifier, up_to_seq: int, messenger_id: str = "alpha") -> int:
    reply = await notifier.messenger(messenger_id).Ack(
        notifier_pb2.AckRequest(messenger_id=messenger_id, up_to_seq=up_to_seq)
    )
    return int(reply.acked_seq)


async def status(notifier: Notifier, messenger_id: str = "alpha") -> Any:
    return await notifier.messenger(messenger_id).GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id=messenger_id)
    )


async def test_ack_is_monotonic_and_idempotent(notifier: Notifier) -> None:
    await notifier.publish(*(event() for _ in range(5)))
    assert await ack(notifier, 0) == 0
    assert await ack(notifier, 3) == 3
    assert await ack(notifier, 3) == 3
    assert await ack(notifier, 1) == 3
    assert await ack(notifier, 5) == 5
    assert await ack(notifier, 2) == 5
    assert (await status(notifier)).acked_seq == 5


async def test_ack_beyond_the_head_is_out_of_range_and_changes_nothing(
    notifier: Notifier,
) -> None:
    await notifier.publish(event(), event())
    await ack(notifier, 1)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ack(notifier, 3)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "up_to_seq 3 is beyond the head 2" in (e.value.details() or "")
    assert trailers(e.value)["idmesh-head-seq"] == "2"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ack(notifier, 1, messenger_id="gamma")  # no events at all
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert (await status(notifier)).acked_seq == 1


async def test_delivery_status_and_late_deliveries_follow_the_clock(notifier: Notifier) -> None:
    clock = notifier.clock
    empty = await status(notifier)
    assert (empty.head_seq, empty.acked_seq, empty.floor_seq, empty.unacked_count) == (0, 0, 1, 0)
    assert not empty.HasField("oldest_unacked_published_at")
    assert empty.delivery_limit.ToTimedelta() == notifier.config.delivery.sla_limit

    await notifier.publish(event(), event(), event())  # seq 1..3 published at T0
    clock.advance(timedelta(hours=25))
    await ack(notifier, 2)  # 25 h after publication: two late deliveries
    await notifier.publish(event())  # seq 4 published at T0 + 25 h
    clock.advance(timedelta(hours=1))

    s = await status(notifier)
    assert (s.head_seq, s.acked_seq, s.floor_seq, s.unacked_count) == (4, 2, 1, 2)
    assert s.late_deliveries == 2
    assert from_timestamp(s.oldest_unacked_published_at) == T0  # seq 3
    assert s.oldest_unacked_age.ToTimedelta() == timedelta(hours=26)

    await ack(notifier, 4)  # seq 3 is late (26 h), seq 4 is not (1 h)
    s = await status(notifier)
    assert (s.acked_seq, s.unacked_count, s.late_deliveries) == (4, 0, 3)
    assert s.oldest_unacked_age.ToTimedelta() == timedelta(0)
    assert not s.HasField("oldest_unacked_published_at")


@pytest.mark.sqlite_only
async def test_acked_events_record_their_delivery_time(notifier: Notifier) -> None:
    await notifier.publish(event(), event())
    notifier.clock.advance(timedelta(minutes=7))
    await ack(notifier, 1)
    with sqlite3.connect(str(notifier.config.store.db_path)) as conn:
        rows = conn.execute("SELECT seq, acked_at FROM events ORDER BY seq").fetchall()
    assert rows[0] == (1, (T0 + timedelta(minutes=7)).isoformat(timespec="microseconds"))
    assert rows[1] == (2, None)


async def test_sla_warning_then_error_are_logged_by_the_background_check(
    start_notifier: Callable[..., Any],
) -> None:
    with capture_logs() as logs:
        notifier: Notifier = await start_notifier(SLA_CHECK_SECONDS="0.02")
        await notifier.publish(event("alpha"), event("alpha"), event("beta"))
        await ack(notifier, 1, "beta")  # beta is up to date
        notifier.clock.advance(timedelta(hours=13))
        await eventually(lambda: any(e["event"] == "delivery.sla_warning" for e in logs))
        notifier.clock.advance(timedelta(hours=12))
        await eventually(lambda: any(e["event"] == "delivery.sla_breached" for e in logs))
    warning = next(e for e in logs if e["event"] == "delivery.sla_warning")
    assert warning["log_level"] == "warning"
    assert warning["messenger_id"] == "alpha"
    assert warning["unacked_count"] == 2
    assert warning["oldest_unacked_age_seconds"] >= 13 * 3600
    breached = next(e for e in logs if e["event"] == "delivery.sla_breached")
    assert breached["log_level"] == "error"
    assert breached["messenger_id"] == "alpha"
    sla_lines = [e for e in logs if e["event"].startswith("delivery.sla")]
    assert all(e["messenger_id"] == "alpha" for e in sla_lines)


async def test_sla_check_stays_quiet_before_the_warning_age(notifier: Notifier) -> None:
    await notifier.publish(event())
    notifier.clock.advance(timedelta(hours=11))
    with capture_logs() as logs:
        assert await notifier.service.check_sla() == []
    assert not [e for e in logs if e["event"].startswith("delivery.sla")]
