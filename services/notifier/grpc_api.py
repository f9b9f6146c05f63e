"""The NotifierService servicer: check the caller and request, call the service, map to pb2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc

from services.common.failpoints import async_failpoint
from services.common.identity import Kind, require_caller
from services.common.interceptors import ErrorTable
from services.common.timeutil import from_timestamp, to_duration, to_timestamp
from services.notifier.domain import (
    ConsumerTooSlow,
    ContractTerminated,
    EventIdConflict,
    OutOfRange,
    ProgressMark,
    ShuttingDown,
    StoredEvent,
    StreamItem,
    require_own_messenger,
)
from services.notifier.service import NotifierService

ERRORS = ErrorTable(
    {
        OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
        ConsumerTooSlow: grpc.StatusCode.RESOURCE_EXHAUSTED,
        EventIdConflict: grpc.StatusCode.ALREADY_EXISTS,
        ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    }
)


def _event_from_pb(index: int, event: events_pb2.ContractTerminated) -> ContractTerminated:
    occurred_at = (
        from_timestamp(event.occurred_at, field=f"events[{index}].occurred_at")
        if event.HasField("occurred_at")
        else None
    )
    return ContractTerminated(
        event_id=event.event_id,
        operator_id=event.operator_id,
        messenger_id=event.messenger_id,
        phone_number=event.phone_number,
        identification_code=event.identification_code,
        reason=int(event.reason),
        occurred_at=occurred_at,
        recipient_operator_id=event.recipient_operator_id,
        trace_id=event.trace_id,
    )


def _event_to_pb(event: ContractTerminated) -> events_pb2.ContractTerminated:
    return events_pb2.ContractTerminated(
        event_id=event.event_id,
        operator_id=event.operator_id,
        messenger_id=event.messenger_id,
        phone_number=event.phone_number,
        identification_code=event.identification_code,
        reason=cast(events_pb2.TerminationReason, event.reason),
        occurred_at=to_timestamp(event.occurred_at),
        recipient_operator_id=event.recipient_operator_id,
        trace_id=event.trace_id,
    )


def _item_to_pb(item: StreamItem, *, batched: bool) -> notifier_pb2.SubscribeResponse:
    """A stream item as a message: a batch in `notices` when the subscriber asked for batches,
    else its one notice in `notice` (the stream then carries one notice per item)."""
    if isinstance(item, ProgressMark):
        return notifier_pb2.SubscribeResponse(
            progress=notifier_pb2.ProgressMark(head_seq=item.head_seq)
        )
    if batched:
        return notifier_pb2.SubscribeResponse(notices=[_notice_to_pb(e) for e in item.events])
    (event,) = item.events
    return notifier_pb2.SubscribeResponse(notice=_notice_to_pb(event))


def _notice_to_pb(stored: StoredEvent) -> notifier_pb2.Notice:
    return notifier_pb2.Notice(
        seq=stored.seq,
        event=_event_to_pb(stored.event),
        published_at=to_timestamp(stored.published_at),
    )


def _own_messenger(messenger_id: str) -> str:
    caller = require_caller(Kind.MESSENGER)
    return require_own_messenger(caller.id, messenger_id)


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, service: NotifierService) -> None:
        self._service = service

    async def Publish(
        self, request: notifier_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> notifier_pb2.PublishResponse:
        caller = require_caller(Kind.OPERATOR)
        events = [_event_from_pb(i, event) for i, event in enumerate(request.events)]
        result = await self._service.publish(caller.id, events)
        return notifier_pb2.PublishResponse(accepted=result.accepted, duplicates=result.duplicates)

    async def Subscribe(
        self, request: notifier_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        messenger_id = _own_messenger(request.messenger_id)
        # max_batch_size 0: one notice per message, in `notice` (the first published form).
        batched = request.max_batch_size > 0
        max_batch = request.max_batch_size if batched else 1
        async with self._service.subscribe(
            messenger_id, request.after_seq, max_batch=max_batch
        ) as stream:
            async for item in stream:
                yield _item_to_pb(item, batched=batched)
                if not isinstance(item, ProgressMark):
                    await async_failpoint("notifier.stream.after_send")

    async def Ack(
        self, request: notifier_pb2.AckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> notifier_pb2.AckResponse:
        messenger_id = _own_messenger(request.messenger_id)
        state = await self._service.ack(messenger_id, request.up_to_seq)
        return notifier_pb2.AckResponse(acked_seq=state.acked_seq)

    async def GetDeliveryStatus(
        self,
        request: notifier_pb2.GetDeliveryStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> notifier_pb2.GetDeliveryStatusResponse:
        messenger_id = _own_messenger(request.messenger_id)
        status = await self._service.delivery_status(messenger_id)
        state = status.state
        return notifier_pb2.GetDeliveryStatusResponse(
            head_seq=state.head_seq,
            acked_seq=state.acked_seq,
            floor_seq=state.floor_seq,
            unacked_count=state.unacked_count,
            oldest_unacked_age=to_duration(status.oldest_unacked_age),
            late_deliveries=state.late_deliveries,
            oldest_unacked_published_at=to_timestamp(status.oldest_unacked_published_at),
            delivery_limit=to_duration(status.delivery_limit),
        )
