"""Publish: durable before ack, idempotent by event id, all or nothing, ordered and gap-free."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2

from services.common.identity import Caller, Kind, Role
from services.notifier.main import open_store
from tests.notifier.support import Notifier, event, read_notices


async def status(notifier: Notifier, messenger_id: str = "alpha") -> Any:
    return await notifier.messenger(messenger_id).GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id=messenger_id)
    )


async def test_published_events_are_durable_before_the_publish_returns(
    notifier: Notifier, tmp_path: Path
) -> None:
    sent = [event(), event(), event("gamma")]
    reply = await notifier.publish(*sent)
    assert (reply.accepted, reply.duplicates) == (3, 0)

    # A fresh connection to the database (as after a crash) sees the committed events.
    async with open_store(notifier.config.store) as store:
        alpha = await store.read_after("alpha", 0, 10)
        gamma = await store.read_after("gamma", 0, 10)
    assert [(e.seq, e.event.event_id) for e in alpha] == [
        (1, sent[0].event_id),
        (2, sent[1].event_id),
    ]
    assert [(e.seq, e.event.event_id) for e in gamma] == [(1, sent[2].event_id)]
    assert alpha[0].event.identification_code == sent[0].identification_code


async def test_duplicate_event_id_is_a_no_op(notifier: Notifier) -> None:
    first, second = event(), event()
    await notifier.publish(first)
    reply = await notifier.publish(first, second, first)
    assert (reply.accepted, reply.duplicates) == (1, 2)
    again = await notifier.publish(first, second)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert (await status(notifier)).head_seq == 2


async def test_an_events_trace_id_is_stored_and_streamed_and_a_resend_is_still_a_duplicate(
    notifier: Notifier,
) -> None:
    traced, untraced = _with(trace_id="trace-terminate-1"), event()
    await notifier.publish(traced, untraced)
    resent = events_pb2.ContractTerminated()
    resent.CopyFrom(traced)
    resent.trace_id = "trace-relay-retry"  # what identifies the event is not the trace id
    reply = await notifier.publish(resent)
    assert (reply.accepted, reply.duplicates) == (0, 1)
    call = notifier.subscribe("alpha")
    notices = await read_notices(call, 2)
    call.cancel()
    assert [n.event.trace_id for n in notices] == ["trace-terminate-1", ""]


async def test_event_id_reused_for_a_different_event_is_refused_and_nothing_stored(
    notifier: Notifier,
) -> None:
    stored = event()
    await notifier.publish(stored)
    changed = events_pb2.ContractTerminated()
    changed.CopyFrom(stored)
    changed.phone_number = "+79161234567"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.publish(event(), changed)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "events[1].event_id" in (e.value.details() or "")
    assert (await status(notifier)).head_seq == 1


async def test_event_in_another_operators_name_is_permission_denied_and_nothing_stored(
    notifier: Notifier,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.publish(event(), event(operator_id="megafon"), operator_id="beeline")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = e.value.details() or ""
    assert "events[1].operator_id" in details
    assert "megafon" in details
    assert "beeline" in details
    assert (await status(notifier)).head_seq == 0


def _with(**changes: Any) -> events_pb2.ContractTerminated:
    result = event()
    for name, value in changes.items():
        if value is None:
            result.ClearField(name)
        else:
            setattr(result, name, value)
    return result


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (lambda: _with(event_id=""), "event_id"),
        (lambda: _with(event_id="x" * 65), "event_id"),
        (lambda: _with(messenger_id="Not Valid"), "messenger_id"),
        (lambda: _with(messenger_id=""), "messenger_id"),
        (lambda: _with(phone_number="89031234567"), "phone_number"),
        (lambda: _with(phone_number="+7903"), "phone_number"),
        (lambda: _with(reason=events_pb2.TERMINATION_REASON_UNSPECIFIED), "reason"),
        (lambda: _with(occurred_at=None), "occurred_at"),
        (lambda: _with(operator_id=""), "operator_id"),
        (lambda: _with(identification_code=""), "identification_code"),
        (lambda: _with(recipient_operator_id="Bad Id"), "recipient_operator_id"),
        (lambda: _with(trace_id="has space"), "trace_id"),
        (lambda: _with(trace_id="t" * 65), "trace_id"),
    ],
)
async def test_invalid_event_is_invalid_argument_naming_index_and_field_and_nothing_stored(
    notifier: Notifier, bad: Callable[[], events_pb2.ContractTerminated], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.publish(event(), event(), bad())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"events[2].{field}" in (e.value.details() or "")
    assert (await status(notifier)).head_seq == 0


async def test_invalid_phone_number_is_masked_in_the_error(notifier: Notifier) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.publish(_with(phone_number="89031234567"))
    assert "89031234567" not in (e.value.details() or "")


@pytest.mark.parametrize("count", [0, 1001])
async def test_a_batch_holds_1_to_1000_events(notifier: Notifier, count: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.publish(*(event() for _ in range(count)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    expected = (
        "1 to 1000" if count == 0 else "events has 1001 items: at most 1000 events are allowed"
    )
    assert expected in (e.value.details() or "")


async def test_a_full_batch_of_1000_is_accepted(notifier: Notifier) -> None:
    reply = await notifier.publish(*(event() for _ in range(1000)))
    assert reply.accepted == 1000
    assert (await status(notifier)).head_seq == 1000


@pytest.mark.parametrize(
    "caller",
    [
        Caller(Kind.MESSENGER, "beeline"),
        Caller(Kind.OPERATOR, "beeline", Role.ADMIN),
    ],
)
async def test_only_an_operator_service_may_publish(notifier: Notifier, caller: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await notifier.stub(caller).Publish(notifier_pb2.PublishRequest(events=[event()]))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_sequences_are_ordered_and_gap_free_under_concurrent_publishers(
    notifier: Notifier,
) -> None:
    operators = [f"op-{n}" for n in range(10)]
    batches = {
        op: [[event(operator_id=op) for _ in range(10)] for _ in range(5)] for op in operators
    }

    async def publisher(operator_id: str) -> None:
        for batch in batches[operator_id]:
            await notifier.publish(
                *batch, event(operator_id=operator_id, messenger_id="beta"), operator_id=operator_id
            )

    await asyncio.gather(*(publisher(op) for op in operators))

    assert (await status(notifier)).head_seq == 500
    assert (await status(notifier, "beta")).head_seq == 50
    call = notifier.subscribe()
    notices = await read_notices(call, 500)
    call.cancel()
    assert [n.seq for n in notices] == list(range(1, 501))
    seq_of = {n.event.event_id: n.seq for n in notices}
    for per_operator in batches.values():
        for batch in per_operator:
            seqs = [seq_of[e.event_id] for e in batch]
            assert seqs == sorted(seqs)  # a batch keeps its order
    assert set(seq_of) == {e.event_id for b in batches.values() for batch in b for e in batch}
