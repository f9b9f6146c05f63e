"""The notice consumer: the notifier's stream of ContractTerminated events for this messenger.

One task per replica holding the lease. It subscribes after the persisted cursor, checks that
sequence numbers follow on (seq = cursor + 1 for each notice; anything else aborts the stream,
after applying the notices before it, and resubscribes from the cursor), applies each notice
exactly once (the service's inbox keyed by event id) and a stream message's notices together
(their inbox rows, revocations and the cursor in one transaction), and acknowledges the cursor
to the notifier (acks are batched: one in flight at a time covers everything applied meanwhile,
up to the highest applied seq; a failed ack is retried). On any end or error of the stream it
reconnects with jittered backoff. OUT_OF_RANGE (our cursor is below the notifier's retained
floor or beyond its head) is logged as an error and retried, never skipped: skipping would lose
revocations. With several replicas of a messenger's gateway on one database, one consumes and
the others stand by: main.py runs the consumer under the lease `notices:<messenger>`
(services/common/lease.py), and a standby takes over, from the stored cursor, when the holder
dies. The consumer runs with the lease's fence, and each batch's transaction checks it: a
consumer whose lease another replica has taken (it was paused or cut off past the expiry) has
its batch refused, logs `lease.fenced` and stops, so two never apply notices at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from prometheus_client import Counter, Gauge

from services.common.availability import log_failure
from services.common.backoff import Backoff
from services.common.failpoints import async_failpoint
from services.common.lease import Fence, LeaseFenced, log_fenced
from services.common.logging import get_logger
from services.messenger_gateway.notices.model import (
    NoticeResult,
    TerminationKind,
    TerminationNotice,
)

log = get_logger("idmesh.gateway.notices")

STREAM_LAG = Gauge(
    "idmesh_gateway_notice_stream_lag",
    "The notifier's head (from progress marks and notices) less this gateway's applied "
    "cursor: notices not yet applied.",
)
STREAM_HEAD = Gauge(
    "idmesh_gateway_notice_head_seq", "The notifier's last seq for this messenger, as last seen."
)
STREAM_CURSOR = Gauge(
    "idmesh_gateway_notice_cursor", "The seq of the last notice this gateway applied."
)
SUBSCRIPTIONS = Counter(
    "idmesh_gateway_notice_subscriptions",
    "Subscribe calls to the notifier (the first, and every reconnect).",
)


def _track(head: int, cursor: int) -> None:
    STREAM_HEAD.set(head)
    STREAM_CURSOR.set(cursor)
    STREAM_LAG.set(max(0, head - cursor))


FLOOR_TRAILER = "idmesh-floor-seq"
HEAD_TRAILER = "idmesh-head-seq"


class NoticeHandler(Protocol):
    @property
    def messenger_id(self) -> str: ...

    async def notice_cursor(self) -> int: ...

    async def apply_notices(
        self, notices: Sequence[TerminationNotice], *, fence: Fence | None = None
    ) -> list[NoticeResult]:
        """Applied in one transaction; with fence, refused (LeaseFenced) once another replica
        holds the lease."""
        ...


class SequenceGap(Exception):
    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"expected notice seq {expected}, got {got}")
        self.expected = expected
        self.got = got


def to_notice(notice: notifier_pb2.Notice) -> TerminationNotice:
    event = notice.event
    kind = (
        TerminationKind.PORTED_OUT
        if event.reason == events_pb2.TERMINATION_REASON_PORTED_OUT
        else TerminationKind.CONTRACT_ENDED
    )
    event_id = event.event_id
    if not event_id:
        log.error("notices.event_without_id", seq=notice.seq)
        event_id = f"no-event-id:seq-{notice.seq}"
    return TerminationNotice(
        seq=notice.seq,
        event_id=event_id,
        operator_id=event.operator_id,
        messenger_id=event.messenger_id,
        identification_code=event.identification_code,
        kind=kind,
        trace_id=event.trace_id,
    )


def _following(notices: Sequence[notifier_pb2.Notice], cursor: int) -> list[TerminationNotice]:
    """The notices that follow on from cursor (seq = cursor + 1, + 2, ...), up to a gap."""
    batch: list[TerminationNotice] = []
    for notice in notices:
        if notice.seq != cursor + 1 + len(batch):
            break
        batch.append(to_notice(notice))
    return batch


class NoticeConsumer:
    def __init__(
        self,
        handler: NoticeHandler,
        channel: grpc.aio.Channel,
        *,
        backoff: Backoff | None = None,
        call_timeout: float = 10.0,
    ) -> None:
        self._handler = handler
        self._stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self._call_timeout = call_timeout
        self._ack_wanted = 0
        self._ack_signal = asyncio.Event()
        self.acked = 0  # the highest position the notifier confirmed
        self.subscriptions = 0  # how many times Subscribe was called (for tests and metrics)
        self._progressed = False

    @property
    def _messenger_id(self) -> str:
        return self._handler.messenger_id

    async def run(self, fence: Fence | None = None) -> None:
        """Consume until cancelled; with fence (the lease this consumer holds), until a batch
        is refused because another replica took the lease."""
        acker = asyncio.create_task(self._ack_loop(), name="notice-acker")
        try:
            await self._subscribe_loop(fence)
        except LeaseFenced as fenced:
            log_fenced(fenced.fence, action="stopped consuming; the lease's holder goes on")
        finally:
            acker.cancel()
            await asyncio.gather(acker, return_exceptions=True)

    # --- the stream --------------------------------------------------------------------------

    async def _subscribe_loop(self, fence: Fence | None) -> None:
        delays = self._backoff.delays()
        while True:
            self._progressed = False
            try:
                await self._stream_once(fence)
                log.info("notices.stream_ended")
            except LeaseFenced:
                raise
            except SequenceGap as gap:
                log.warning(
                    "notices.sequence_gap", expected=gap.expected, got=gap.got, action="resubscribe"
                )
            except grpc.aio.AioRpcError as exc:
                self._log_rpc_error(exc)
            except Exception as exc:
                log_failure(log, "notices.stream_error", exc)
            if self._progressed:
                delays = self._backoff.delays()
            await asyncio.sleep(next(delays))

    async def _stream_once(self, fence: Fence | None) -> None:
        cursor = await self._handler.notice_cursor()
        self._want_ack(cursor)  # an ack lost before a reconnect is sent again
        self.subscriptions += 1
        SUBSCRIPTIONS.inc()
        head = cursor
        _track(head, cursor)
        log.info("notices.subscribing", after_seq=cursor)
        # Batches (in `notices`), as large as the notifier sends (its IDMESH_STREAM_BATCH caps).
        call = self._stub.Subscribe(
            notifier_pb2.SubscribeRequest(
                messenger_id=self._messenger_id, after_seq=cursor, max_batch_size=1000
            )
        )
        try:
            async for item in call:
                # A notifier that predates batches sends one notice per message, in `notice`.
                notices = [item.notice] if item.HasField("notice") else item.notices
                if notices:
                    # The notices that follow on from the cursor, applied in one transaction;
                    # a gap ends the stream after them, and it resumes from the cursor.
                    batch = _following(notices, cursor)
                    if batch:
                        await async_failpoint("gateway.notice.before_apply")
                        results = await self._handler.apply_notices(batch, fence=fence)
                        # committed, not yet acked
                        await async_failpoint("gateway.notice.after_apply")
                        cursor = batch[-1].seq
                        self._progressed = True
                        self._want_ack(results[-1].cursor)
                        head = max(head, cursor)
                        _track(head, cursor)
                    if len(batch) < len(notices):
                        raise SequenceGap(cursor + 1, notices[len(batch)].seq)
                elif item.HasField("progress"):
                    head = item.progress.head_seq
                    self._progressed = True
                    _track(head, cursor)
                    if head < cursor:
                        log.warning("notices.head_behind_cursor", head_seq=head, cursor=cursor)
                    else:
                        (log.info if head > cursor else log.debug)(
                            "notices.progress", head_seq=head, cursor=cursor, lag=head - cursor
                        )
        finally:
            call.cancel()

    def _log_rpc_error(self, exc: grpc.aio.AioRpcError) -> None:
        code = exc.code()
        if code == grpc.StatusCode.OUT_OF_RANGE:
            trailers = dict(exc.trailing_metadata() or ())
            log.error(
                "notices.cursor_out_of_range",
                floor_seq=trailers.get(FLOOR_TRAILER),
                head_seq=trailers.get(HEAD_TRAILER),
                details=exc.details(),
                action="retrying later; events are never skipped",
            )
        else:
            log.warning("notices.stream_failed", status=code.name, details=exc.details())

    # --- acks --------------------------------------------------------------------------------

    def _want_ack(self, seq: int) -> None:
        if seq > self._ack_wanted:
            self._ack_wanted = seq
        if self._ack_wanted > self.acked:
            self._ack_signal.set()

    async def _ack_loop(self) -> None:
        delays = self._backoff.delays()
        while True:
            await self._ack_signal.wait()
            self._ack_signal.clear()
            target = self._ack_wanted
            if target <= self.acked:
                continue
            try:
                reply = await self._stub.Ack(
                    notifier_pb2.AckRequest(messenger_id=self._messenger_id, up_to_seq=target),
                    timeout=self._call_timeout,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    log.error("notices.ack_out_of_range", up_to_seq=target, details=exc.details())
                    continue  # tried again with the next notice or reconnect
                log.warning(
                    "notices.ack_failed",
                    up_to_seq=target,
                    status=exc.code().name,
                    details=exc.details(),
                )
                await asyncio.sleep(next(delays))
                self._ack_signal.set()
                continue
            delays = self._backoff.delays()
            self.acked = max(self.acked, target, reply.acked_seq)
            log.debug("notices.acked", up_to_seq=target, acked_seq=reply.acked_seq)
