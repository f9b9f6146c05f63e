"""The outbox relay: publishes queued ContractTerminated notices to the notifier until acked.

Loop: read up to batch_size queued notices (oldest first), Publish them in one call, mark
them published once the notifier acked; on failure log a warning and retry after a backoff
delay; with nothing pending wait for a termination (service.wait_for_notices) or the poll
interval. Delivery is at least once: a batch whose ack was lost, or that was in flight when
either side restarted, is sent again, and the notifier drops it by event_id.

A batch the notifier refuses for good (REFUSED_FOR_GOOD: resending it cannot help) would block
every later notice for ever, so it is split in halves until the refused notices are found; each
is parked (kept in the outbox out of the queue, with the status and message, logged at error,
counted, and alerted on by `idmesh_registry_outbox_parked`) and the others are published. An
operator lists parked notices and queues them again (RegistryAdminService.ListParkedNotices,
RetryParkedNotices; `idmesh registry parked`, `idmesh registry retry-parked`).

Each Publish carries, as its request id, the trace id of the termination that queued its notices
when they share one (the usual batch: one termination's notices); every event carries its own
trace id in the `trace_id` field whatever the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common import tracing
from services.common.backoff import Backoff
from services.common.channels import open_channel
from services.common.context import traced
from services.common.failpoints import async_failpoint
from services.common.identity import Caller, Kind
from services.common.logging import get_logger
from services.common.metrics import ScrapeCollector, registered
from services.common.status import error_details
from services.common.timeutil import to_timestamp
from services.common.tls import TlsFiles
from services.operator_registry.domain import TerminationNotice, TerminationReason
from services.operator_registry.ports import NoticeOutbox

log = get_logger("idmesh.operator_registry.relay")

RELAY_FAILURES = Counter(
    "idmesh_registry_relay_failures",
    "Failed outbox relay rounds, by reason (the Publish status code, or the error type).",
    ["reason"],
)
RELAY_PUBLISHED = Counter(
    "idmesh_registry_relay_published_events",
    "Termination notices the notifier acknowledged (at least once: a resend counts again).",
)
OUTBOX_PARKED = Counter(
    "idmesh_registry_outbox_parked_events",
    "Termination notices parked because the notifier refused them for good, by status code.",
    ["status"],
)
# Refusals that a resend of the same notice cannot change: the notice is parked. Everything else
# (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAUTHENTICATED: a certificate being
# renewed, INTERNAL, ...) is retried with a backoff.
REFUSED_FOR_GOOD = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
    }
)


def outbox_metrics(service: NoticeOutbox) -> ScrapeCollector:
    """The outbox backlog, read from the store at scrape time (right after a restart too)."""

    async def collect() -> list[Metric]:
        pending, age = await service.outbox_backlog()
        parked = await service.count_parked_notices()
        return [
            GaugeMetricFamily(
                "idmesh_registry_outbox_parked",
                "Termination notices parked (refused for good by the notifier) and waiting for "
                "an operator (idmesh registry parked / retry-parked): alert when above 0.",
                value=parked,
            ),
            GaugeMetricFamily(
                "idmesh_registry_outbox_pending",
                "Termination notices queued in the outbox and not yet acknowledged by the "
                "notifier.",
                value=pending,
            ),
            GaugeMetricFamily(
                "idmesh_registry_outbox_oldest_pending_age_seconds",
                "Age of the oldest unpublished notice (0 when none): part of the 24-hour "
                "delivery limit is spent here.",
                value=age,
            ),
        ]

    return ScrapeCollector("registry_outbox", collect)


PUBLISH_TIMEOUT_SECONDS = 10.0
DEFAULT_BACKOFF = Backoff(initial=0.5, maximum=30.0)

_REASONS = {
    TerminationReason.CONTRACT_ENDED: events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
    TerminationReason.PORTED_OUT: events_pb2.TERMINATION_REASON_PORTED_OUT,
}


def to_event(notice: TerminationNotice) -> events_pb2.ContractTerminated:
    return events_pb2.ContractTerminated(
        event_id=notice.event_id,
        operator_id=notice.operator_id,
        messenger_id=notice.messenger_id,
        phone_number=notice.phone_number,
        identification_code=notice.identification_code,
        reason=_REASONS[notice.reason],
        occurred_at=to_timestamp(notice.occurred_at),
        recipient_operator_id=notice.recipient_operator_id,
        trace_id=notice.trace_id,
    )


class OutboxRelay:
    def __init__(
        self,
        service: NoticeOutbox,
        *,
        notifier_address: str,
        tls: TlsFiles | None = None,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        publish_timeout: float = PUBLISH_TIMEOUT_SECONDS,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self._service = service
        self._address = notifier_address
        self._identity = Caller(Kind.OPERATOR, service.operator_id)
        self._tls = tls
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._timeout = publish_timeout
        self._backoff = backoff

    async def run(self) -> None:
        """Relay until cancelled (cancellation leaves unacked notices queued for next time)."""
        log.info("relay.started", notifier=self._address)
        try:
            with registered(outbox_metrics(self._service)):
                async with open_channel(
                    self._address, identity=self._identity, tls=self._tls
                ) as channel:
                    stub = notifier_pb2_grpc.NotifierServiceStub(channel)
                    await self._loop(stub)
        finally:
            log.info("relay.stopped")

    async def _loop(self, stub: notifier_pb2_grpc.NotifierServiceStub) -> None:
        delays: Iterator[float] | None = None
        while True:
            batch: list[TerminationNotice] = []
            retry_after = 0.0
            try:
                batch = await self._service.pending_notices(self._batch_size)
                if not batch:
                    delays = None
                    await self._service.wait_for_notices(self._poll_seconds)
                    continue
                await self._deliver(stub, batch)
            except grpc.aio.AioRpcError as exc:
                asked = error_details(exc).retry_delay  # RESOURCE_EXHAUSTED: the notifier's wish
                retry_after = asked.total_seconds() if asked is not None else 0.0
                RELAY_FAILURES.labels(reason=exc.code().name).inc()
                log.warning(
                    "relay.publish_failed",
                    status=exc.code().name,
                    details=exc.details(),
                    batch=len(batch),
                )
                await self._release(batch)
            except Exception as exc:
                RELAY_FAILURES.labels(reason=type(exc).__name__).inc()
                log.error("relay.failed", error=type(exc).__name__, exc_info=exc)
            else:
                delays = None
                continue
            delays = delays or self._backoff.delays()
            await asyncio.sleep(max(next(delays), retry_after))

    async def _release(self, batch: Sequence[TerminationNotice]) -> None:
        """After a failed Publish, give the batch's claims up before backing off: a replica
        that cannot reach its notifier (a partition, a notifier down) leaves the notices to a
        replica that can, instead of renewing its claim on them at every retry."""
        try:
            released = await self._service.release_notices([n.event_id for n in batch])
        except Exception as exc:  # the claims expire on their own
            log.warning("relay.release_failed", error=type(exc).__name__)
            return
        if released:
            log.info("relay.released", count=released)

    async def _deliver(
        self, stub: notifier_pb2_grpc.NotifierServiceStub, batch: Sequence[TerminationNotice]
    ) -> None:
        """Publish batch; a refusal for good splits it in halves, in order, until the refused
        notices are found, and parks them. A failure worth retrying raises (the notices
        published so far stay published; the rest are read again)."""
        try:
            reply = await self._publish(stub, batch)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in REFUSED_FOR_GOOD:
                raise
            if len(batch) == 1:
                await self._park(batch[0], exc)
                return
            half = len(batch) // 2
            await self._deliver(stub, batch[:half])
            await self._deliver(stub, batch[half:])
            return
        await async_failpoint("registry.relay.after_publish")
        await self._service.mark_published([n.event_id for n in batch])
        RELAY_PUBLISHED.inc(len(batch))
        log.info(
            "relay.published",
            count=len(batch),
            accepted=reply.accepted,
            duplicates=reply.duplicates,
            trace_ids=_trace_ids(batch),
        )

    async def _park(self, notice: TerminationNotice, exc: grpc.aio.AioRpcError) -> None:
        status, message = exc.code().name, exc.details() or ""
        await self._service.park_notice(notice.event_id, status, message)
        OUTBOX_PARKED.labels(status=status).inc()
        log.error(
            "relay.notice_parked",
            event_id=notice.event_id,
            messenger_id=notice.messenger_id,
            trace_id=notice.trace_id,
            status=status,
            details=message,
            action="fix the cause, then idmesh registry retry-parked",
        )

    async def _publish(
        self, stub: notifier_pb2_grpc.NotifierServiceStub, batch: Sequence[TerminationNotice]
    ) -> notifier_pb2.PublishResponse:
        request = notifier_pb2.PublishRequest(events=[to_event(n) for n in batch])
        trace_ids = _trace_ids(batch)
        started = time.time_ns()
        with traced(trace_ids[0] if len(trace_ids) == 1 else None, span="outbox.publish"):
            reply: notifier_pb2.PublishResponse = await stub.Publish(request, timeout=self._timeout)
        if len(trace_ids) > 1:  # the terminations' own traces each get the publish
            for trace_id in trace_ids:
                tracing.record("outbox.publish", trace_id, started, events=len(batch))
        return reply


def _trace_ids(batch: Sequence[TerminationNotice]) -> list[str]:
    """The batch's distinct trace ids, in order (a few: one termination's notices share one)."""
    return list(dict.fromkeys(n.trace_id for n in batch if n.trace_id))
