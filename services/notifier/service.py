"""The notifier's use cases: publish, subscribe, ack, delivery status, SLA checks, retention.

A subscription is two halves joined by a bounded buffer: a reader task that reads the messenger's
events from the store in batches (then waits on the messenger's wake-up, set after every commit
that touched the messenger) and a writer, the caller iterating the subscription (the gRPC
stream), which takes every notice buffered by then, up to the batch size, as one message. The
reader never holds more than the buffer; a writer that leaves the buffer full for
the slow-consumer timeout ends the stream with ConsumerTooSlow, and the consumer resumes from
its cursor. Nothing here polls: the only timers are the progress interval and the periodic jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Final

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common.failpoints import async_failpoint
from services.common.logging import get_logger
from services.common.metrics import ScrapeCollector
from services.common.timeutil import Clock
from services.notifier.domain import (
    ConsumerTooSlow,
    ContractTerminated,
    DeliveryPolicy,
    DeliveryStatus,
    NoticeBatch,
    OldestUnacked,
    ProgressMark,
    PublishResult,
    SequenceState,
    ShuttingDown,
    StoredEvent,
    StreamItem,
    StreamPolicy,
    validate_batch,
)
from services.notifier.ports import NotifierStore

log = get_logger("idmesh.notifier")

PRUNE_CHUNK: Final = 10_000

PUBLISHED_EVENTS = Counter(
    "idmesh_notifier_published_events",
    "Events taken from registries, by result: accepted (stored, given a seq) or duplicate "
    "(an event id already stored: a relay's resend).",
    ["result"],
)
# Its children, looked up once (.labels() takes a lock and builds a key on every call).
_PUBLISHED_ACCEPTED = PUBLISHED_EVENTS.labels(result="accepted")
_PUBLISHED_DUPLICATES = PUBLISHED_EVENTS.labels(result="duplicate")


# At most this many event and trace ids in a publish's log line (a batch holds up to 1000).
_LOGGED_IDS = 20


class Hub:
    """The per-messenger registry of waiting stream readers, woken after each commit."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def watch(self, messenger_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever messenger_id may have new events (or the hub closes);
        unregistered on exit, and the messenger's entry goes with its last waiter."""
        wakeup = asyncio.Event()
        if self._closed:
            wakeup.set()
        self._waiters.setdefault(messenger_id, set()).add(wakeup)
        try:
            yield wakeup
        finally:
            waiters = self._waiters.get(messenger_id)
            if waiters is not None:
                waiters.discard(wakeup)
                if not waiters:
                    del self._waiters[messenger_id]

    def notify(self, messenger_ids: Iterable[str]) -> None:
        for messenger_id in messenger_ids:
            for wakeup in self._waiters.get(messenger_id, ()):
                wakeup.set()

    def close(self) -> None:
        """Wake every reader for good: streams end with ShuttingDown."""
        self._closed = True
        for waiters in self._waiters.values():
            for wakeup in waiters:
                wakeup.set()

    def waiter_count(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def watched_messengers(self) -> list[str]:
        return sorted(self._waiters)


@dataclass(slots=True)
class StreamStats:
    opened: int = 0
    too_slow: int = 0
    open_streams: set[Subscription] = field(default_factory=set)

    @property
    def active(self) -> int:
        return len(self.open_streams)


class _End:
    """Put in the buffer to wake a waiting writer when the reader has failed."""


_END: Final = _End()


class Subscription:
    """One messenger's stream from a cursor: `async with` checks the cursor and starts the
    reader; iterating yields NoticeBatch (at most max_batch notices, and never more than the
    policy's batch) and ProgressMark items, and raises what ended it."""

    def __init__(
        self,
        store: NotifierStore,
        hub: Hub,
        policy: StreamPolicy,
        stats: StreamStats,
        messenger_id: str,
        after_seq: int,
        max_batch: int,
    ) -> None:
        self._store = store
        self._hub = hub
        self._policy = policy
        self._batch = max(1, min(max_batch, policy.batch))
        self._stats = stats
        self._messenger_id = messenger_id
        self._after_seq = after_seq
        # One notice (or mark) per slot, so that the buffer bounds notices whatever the batch.
        self._buffer: asyncio.Queue[StoredEvent | ProgressMark | _End] = asyncio.Queue(
            maxsize=policy.buffer
        )
        self._held: StoredEvent | ProgressMark | _End | None = None
        self._failure: BaseException | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscription:
        if self._hub.closed:
            raise _shutting_down()
        state = await self._store.state(self._messenger_id)
        state.check_cursor(self._after_seq)
        self._reader = asyncio.create_task(
            self._read(), name=f"notifier-stream-{self._messenger_id}"
        )
        self._stats.open_streams.add(self)
        self._stats.opened += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, reason: BaseException | None = None) -> None:
        """Stop the reader; with a reason, the writer's next item raises it."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        self._stats.open_streams.discard(self)
        reader.cancel()
        # wait() neither raises the reader's exception nor swallows our own cancellation.
        await asyncio.wait({reader})
        if not reader.cancelled():
            reader.exception()
        if reason is not None and self._failure is None:
            self._fail(reason)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamItem:
        """The next message: every notice buffered by now (up to the batch size) as one
        NoticeBatch, or a progress mark."""
        if self._failure is not None:
            raise self._failure
        item, self._held = self._held, None
        if item is None:
            item = await self._buffer.get()
        if isinstance(item, _End):
            assert self._failure is not None
            raise self._failure
        if isinstance(item, ProgressMark):
            return item
        events = [item]
        while len(events) < self._batch and not self._buffer.empty():
            more = self._buffer.get_nowait()
            if not isinstance(more, StoredEvent):
                self._held = more  # a mark or the end: the next message
                break
            events.append(more)
        return NoticeBatch(tuple(events))

    async def _read(self) -> None:
        try:
            with self._hub.watch(self._messenger_id) as wakeup:
                await self._pump(wakeup)
        except Exception as exc:
            if isinstance(exc, ConsumerTooSlow):
                self._stats.too_slow += 1
                log.warning(
                    "stream.consumer_too_slow",
                    messenger_id=self._messenger_id,
                    buffer=self._policy.buffer,
                )
            self._fail(exc)

    async def _pump(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self._policy.progress_interval_seconds
        cursor = self._after_seq
        last_sent = loop.time()
        while True:
            if self._hub.closed:
                raise _shutting_down()
            wakeup.clear()  # before the read: a commit after this point sets it again
            batch = await self._store.read_after(self._messenger_id, cursor, self._policy.buffer)
            if batch:
                for event in batch:
                    if event.seq != cursor + 1:
                        # The events after the cursor were acknowledged and pruned meanwhile:
                        # end the stream rather than skip them silently.
                        state = await self._store.state(self._messenger_id)
                        raise state.below_floor(cursor)
                    await self._put(event)
                    cursor = event.seq
                last_sent = loop.time()
                continue
            state = await self._store.state(self._messenger_id)
            if cursor < state.floor_seq - 1:
                raise state.below_floor(cursor)  # all events after the cursor were pruned
            idle = loop.time() - last_sent
            if idle >= interval:
                await self._put(ProgressMark(head_seq=cursor))
                last_sent = loop.time()
                continue
            try:
                async with asyncio.timeout(interval - idle):
                    await wakeup.wait()
            except TimeoutError:
                pass

    async def _put(self, item: StoredEvent | ProgressMark) -> None:
        try:
            self._buffer.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(self._policy.slow_consumer_seconds):
                await self._buffer.put(item)
        except TimeoutError:
            raise ConsumerTooSlow(
                "consumer too slow; resume from your last applied seq (the stream's buffer of "
                f"{self._policy.buffer} notices stayed full for "
                f"{self._policy.slow_consumer_seconds:g} s)",
                retry_after=timedelta(0),
            ) from None

    def _fail(self, exc: BaseException) -> None:
        """Record why the stream ends, free the buffer and wake the writer."""
        self._failure = exc
        while not self._buffer.empty():
            self._buffer.get_nowait()
        self._buffer.put_nowait(_END)


def _shutting_down() -> ShuttingDown:
    return ShuttingDown(
        "the notifier is shutting down; resume from your last applied seq in a moment"
    )


@dataclass(frozen=True, slots=True)
class SlaFinding:
    """A messenger whose oldest unacknowledged event has waited past the warning or limit."""

    oldest: OldestUnacked
    age: timedelta
    breached: bool


class NotifierService:
    def __init__(
        self,
        store: NotifierStore,
        clock: Clock,
        *,
        delivery: DeliveryPolicy,
        streams: StreamPolicy,
        hub: Hub | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._delivery = delivery
        self._streams = streams
        self.hub = hub or Hub()
        self.stream_stats = StreamStats()

    async def publish(
        self, operator_id: str, events: Sequence[ContractTerminated]
    ) -> PublishResult:
        """Store a batch (all or nothing) and return once it is committed."""
        batch = validate_batch(operator_id, events)
        try:
            result, messengers = await self._store.publish(batch, self._clock.now())
        finally:
            # Also on failure or cancellation (the commit may have happened): a spurious
            # wake-up costs one read, a lost one would delay delivery to the progress timer.
            self.hub.notify({event.messenger_id for event in batch})
        await async_failpoint("notifier.publish.after_commit")
        _PUBLISHED_ACCEPTED.inc(result.accepted)
        _PUBLISHED_DUPLICATES.inc(result.duplicates)
        log.info(
            "events.published",
            operator_id=operator_id,
            accepted=result.accepted,
            duplicates=result.duplicates,
            messengers=len(messengers),
            event_ids=[event.event_id for event in batch][:_LOGGED_IDS],
            trace_ids=list(dict.fromkeys(e.trace_id for e in batch if e.trace_id))[:_LOGGED_IDS],
        )
        return result

    def wake(self, messenger_ids: list[str]) -> None:
        """Another process committed events for these messengers (none named: for any)."""
        self.hub.notify(messenger_ids or self.hub.watched_messengers())

    def subscribe(self, messenger_id: str, after_seq: int, *, max_batch: int) -> Subscription:
        """The messenger's stream after after_seq, up to max_batch notices per item (1 to the
        policy's batch size: a larger ask gets the policy's, a smaller one 1)."""
        return Subscription(
            self._store,
            self.hub,
            self._streams,
            self.stream_stats,
            messenger_id,
            after_seq,
            max_batch,
        )

    async def ack(self, messenger_id: str, up_to_seq: int) -> SequenceState:
        """Acknowledge every event up to up_to_seq (monotonic, idempotent)."""
        now = self._clock.now()
        state, late = await self._store.ack(
            messenger_id,
            up_to_seq,
            acked_at=now,
            late_if_published_before=now - self._delivery.sla_limit,
        )
        if state.acked_seq == up_to_seq:
            (log.warning if late else log.debug)(
                "events.acked",
                messenger_id=messenger_id,
                acked_seq=state.acked_seq,
                late_deliveries=late,
            )
        return state

    async def delivery_status(self, messenger_id: str) -> DeliveryStatus:
        state = await self._store.state(messenger_id)
        published_at = None
        age = timedelta(0)
        if state.unacked_count:
            published_at = await self._store.published_at(messenger_id, state.acked_seq + 1)
            if published_at is not None:
                age = max(timedelta(0), self._clock.now() - published_at)
        return DeliveryStatus(
            state=state,
            oldest_unacked_published_at=published_at,
            oldest_unacked_age=age,
            delivery_limit=self._delivery.sla_limit,
        )

    async def delivery_metric_families(self) -> list[Metric]:
        label = ["messenger_id"]
        head = GaugeMetricFamily(
            "idmesh_notifier_head_seq", "The messenger's last assigned seq.", labels=label
        )
        acked = GaugeMetricFamily(
            "idmesh_notifier_acked_seq",
            "The messenger's acknowledged position (its gateways applied every event up to it).",
            labels=label,
        )
        unacked = GaugeMetricFamily(
            "idmesh_notifier_unacked_events",
            "Events published for the messenger and not yet acknowledged.",
            labels=label,
        )
        age = GaugeMetricFamily(
            "idmesh_notifier_oldest_unacked_age_seconds",
            "Age of the messenger's oldest unacknowledged event (0 when none); the law allows "
            "idmesh_notifier_sla_limit_seconds (24 hours).",
            labels=label,
        )
        late = CounterMetricFamily(
            "idmesh_notifier_late_deliveries",
            "Events the messenger acknowledged after the SLA limit (stored: survives restarts).",
            labels=label,
        )
        now = self._clock.now()
        for state, published_at in await self._store.delivery_overview():
            values = [state.messenger_id]
            head.add_metric(values, state.head_seq)
            acked.add_metric(values, state.acked_seq)
            unacked.add_metric(values, state.unacked_count)
            oldest = 0.0 if published_at is None else (now - published_at).total_seconds()
            age.add_metric(values, max(0.0, oldest))
            late.add_metric(values, state.late_deliveries)
        return [
            head,
            acked,
            unacked,
            age,
            late,
            GaugeMetricFamily(
                "idmesh_notifier_sla_limit_seconds",
                "The delivery limit (IDMESH_SLA_LIMIT_SECONDS; the law: 24 hours).",
                value=self._delivery.sla_limit.total_seconds(),
            ),
            GaugeMetricFamily(
                "idmesh_notifier_sla_warning_seconds",
                "The age at which an unacknowledged event is warned about.",
                value=self._delivery.sla_warning.total_seconds(),
            ),
            GaugeMetricFamily(
                "idmesh_notifier_open_streams",
                "Subscribe streams open on this process.",
                value=self.stream_stats.active,
            ),
            CounterMetricFamily(
                "idmesh_notifier_slow_consumer_disconnects",
                "Streams ended because the consumer left the buffer full too long.",
                value=self.stream_stats.too_slow,
            ),
        ]

    async def check_sla(self) -> list[SlaFinding]:
        """Log every messenger whose oldest unacknowledged event is past the warning age
        (a warning) or the legal limit (an error)."""
        now = self._clock.now()
        findings: list[SlaFinding] = []
        for oldest in await self._store.oldest_unacked():
            age = now - oldest.published_at
            if age < self._delivery.sla_warning:
                continue
            finding = SlaFinding(oldest=oldest, age=age, breached=age >= self._delivery.sla_limit)
            findings.append(finding)
            (log.error if finding.breached else log.warning)(
                "delivery.sla_breached" if finding.breached else "delivery.sla_warning",
                messenger_id=oldest.messenger_id,
                oldest_unacked_seq=oldest.acked_seq + 1,
                unacked_count=oldest.unacked_count,
                oldest_unacked_age_seconds=round(age.total_seconds()),
                limit_seconds=round(self._delivery.sla_limit.total_seconds()),
            )
        return findings

    async def prune(self) -> dict[str, int]:
        """Delete events acknowledged and older than retention; the new floors."""
        cutoff = self._clock.now() - self._delivery.retention
        floors = await self._store.prune(cutoff, PRUNE_CHUNK)
        for messenger_id, floor in floors.items():
            log.info("events.pruned", messenger_id=messenger_id, floor_seq=floor)
        return floors

    async def close(self) -> None:
        """End every open stream (ShuttingDown) and refuse new ones."""
        self.hub.close()
        for subscription in list(self.stream_stats.open_streams):
            await subscription.close(_shutting_down())


def delivery_metrics(service: NotifierService) -> ScrapeCollector:
    """Per messenger, the delivery position against the 24-hour limit, read from the store at
    scrape time (so right after a restart too); and the streams of this process."""
    return ScrapeCollector("notifier_delivery", service.delivery_metric_families)
