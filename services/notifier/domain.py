"""The notifier's domain: termination events, per-messenger sequences, cursors, acks, retention.

Plain data and rules; no grpc, no protobuf, no storage. The guarantees (modelled on etcd's watch
API) are stated where the rule lives:

- a messenger's events carry seq 1, 2, 3, ... without gaps, assigned at commit;
- the retained events of a messenger are the contiguous range floor_seq .. head_seq, and a
  cursor (the highest seq a consumer has applied) is valid from floor_seq - 1 to head_seq;
- acks are monotonic; only acknowledged events are ever pruned, so floor_seq <= acked_seq + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Final

from services.common.context import is_valid_request_id
from services.common.errors import DomainError, Forbidden, InvalidInput, quote
from services.common.identity import validate_id
from services.common.phone import InvalidPhoneNumber, require_e164

MAX_BATCH: Final = 1000
MAX_EVENT_ID_LENGTH: Final = 64
MAX_CODE_LENGTH: Final = 256
MIN_RETENTION_DAYS: Final = 7

FLOOR_TRAILER: Final = "idmesh-floor-seq"
HEAD_TRAILER: Final = "idmesh-head-seq"


class TerminationReason(IntEnum):
    """Why a contract ended; the values are those of idmesh.events.v1.TerminationReason."""

    CONTRACT_ENDED = 1
    PORTED_OUT = 2


# --- errors -------------------------------------------------------------------------------------


class InvalidEvent(InvalidInput):
    """An event of a Publish batch is malformed; nothing of the batch was stored."""

    REASON = "INVALID_EVENT"


class OperatorMismatch(Forbidden):
    """An operator tried to publish an event in another operator's name."""

    REASON = "OPERATOR_MISMATCH"


class NotYourMessenger(Forbidden):
    """A messenger asked about another messenger's events."""

    REASON = "MESSENGER_MISMATCH"


class EventIdConflict(DomainError):
    """An event id is already stored for a different event (an event id names one event)."""

    REASON = "EVENT_ID_CONFLICT"


class OutOfRange(DomainError):
    """A sequence number outside what the messenger's sequence allows."""


class CursorOutOfRange(OutOfRange):
    """A Subscribe cursor below the retained floor or beyond the head."""

    REASON = "CURSOR_OUT_OF_RANGE"


class AckBeyondHead(OutOfRange):
    """An Ack of a seq that has not been assigned yet."""

    REASON = "ACK_BEYOND_HEAD"


class ConsumerTooSlow(DomainError):
    """The subscriber did not drain its stream's buffer in time; it resumes from its cursor."""

    REASON = "CONSUMER_TOO_SLOW"


class ShuttingDown(DomainError):
    """The notifier is stopping; the subscriber resumes from its cursor elsewhere or later."""

    REASON = "SHUTTING_DOWN"


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractTerminated:
    """One termination event for one messenger (idmesh.events.v1.ContractTerminated)."""

    event_id: str
    operator_id: str
    messenger_id: str
    phone_number: str
    identification_code: str
    reason: int  # a TerminationReason once validated; 0 or unknown values arrive from the wire
    occurred_at: datetime | None
    recipient_operator_id: str = ""
    # The trace id of the operator's call that ended the contract ("" when unknown); kept with
    # the event and streamed with it, but not part of what makes two publications the same.
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as delivered: its place in the messenger's sequence and its commit time."""

    seq: int
    event: ContractTerminated
    published_at: datetime


@dataclass(frozen=True, slots=True)
class ProgressMark:
    """Sent on an idle stream: every event up to head_seq has been sent on this stream."""

    head_seq: int


@dataclass(frozen=True, slots=True)
class NoticeBatch:
    """The next events of a stream, in seq order without gaps: one message on the wire."""

    events: tuple[StoredEvent, ...]


StreamItem = NoticeBatch | ProgressMark


@dataclass(frozen=True, slots=True)
class PublishResult:
    accepted: int
    duplicates: int


def validate_batch(
    operator_id: str, events: Sequence[ContractTerminated]
) -> list[ContractTerminated]:
    """The batch with phone numbers normalised, or the first problem, naming index and field.

    Ownership is checked over the whole batch first: an event in another operator's name is
    PERMISSION_DENIED whatever else is wrong with the batch."""
    if not 1 <= len(events) <= MAX_BATCH:
        raise InvalidEvent(
            f"events: a batch holds 1 to {MAX_BATCH} events, got {len(events)}; "
            "split larger batches"
        )
    for index, event in enumerate(events):
        if event.operator_id and event.operator_id != operator_id:
            raise OperatorMismatch(
                f"events[{index}].operator_id is {quote(event.operator_id)} but the caller is "
                f"operator {operator_id!r}: an operator publishes only its own events"
            )
    return [validate_event(index, operator_id, event) for index, event in enumerate(events)]


def validate_event(index: int, operator_id: str, event: ContractTerminated) -> ContractTerminated:
    where = f"events[{index}]"
    if not event.event_id:
        raise InvalidEvent(f"{where}.event_id is empty: give each event a unique id (a UUID)")
    if len(event.event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidEvent(
            f"{where}.event_id is {len(event.event_id)} characters long: "
            f"use at most {MAX_EVENT_ID_LENGTH} (a UUID is 36)"
        )
    if not event.operator_id:
        raise InvalidEvent(f"{where}.operator_id is empty: give your own operator id")
    if event.operator_id != operator_id:
        raise OperatorMismatch(
            f"{where}.operator_id is {quote(event.operator_id)} but the caller is operator "
            f"{operator_id!r}: an operator publishes only its own events"
        )
    try:
        validate_id(event.messenger_id, f"{where}.messenger_id")
    except InvalidInput as exc:
        raise InvalidEvent(exc.message) from None
    try:
        phone = require_e164(event.phone_number)
    except InvalidPhoneNumber as exc:
        raise InvalidEvent(f"{where}.{exc.message}") from None
    if not event.identification_code:
        raise InvalidEvent(
            f"{where}.identification_code is empty: give the code the operator issued to this "
            "messenger for the contract"
        )
    if len(event.identification_code) > MAX_CODE_LENGTH:
        raise InvalidEvent(
            f"{where}.identification_code is longer than {MAX_CODE_LENGTH} characters"
        )
    if event.reason not in set(TerminationReason):
        raise InvalidEvent(
            f"{where}.reason is {event.reason}: give TERMINATION_REASON_CONTRACT_ENDED or "
            "TERMINATION_REASON_PORTED_OUT"
        )
    if event.occurred_at is None:
        raise InvalidEvent(f"{where}.occurred_at is not set: give when the contract ended")
    if event.recipient_operator_id:
        try:
            validate_id(event.recipient_operator_id, f"{where}.recipient_operator_id")
        except InvalidInput as exc:
            raise InvalidEvent(exc.message) from None
    if event.trace_id and not is_valid_request_id(event.trace_id):
        raise InvalidEvent(
            f"{where}.trace_id {quote(event.trace_id)} is not valid: use 1 to 64 letters, "
            "digits, '.', '_', ':' and '-', or leave it empty"
        )
    return ContractTerminated(
        event_id=event.event_id,
        operator_id=event.operator_id,
        messenger_id=event.messenger_id,
        phone_number=phone,
        identification_code=event.identification_code,
        reason=TerminationReason(event.reason),
        occurred_at=event.occurred_at,
        recipient_operator_id=event.recipient_operator_id,
        trace_id=event.trace_id,
    )


def require_own_messenger(caller_messenger_id: str, messenger_id: str) -> str:
    """A messenger reads and acknowledges only its own events; the refusal tells it nothing
    about the other messenger."""
    if not messenger_id:
        raise InvalidInput("messenger_id is empty: give your own messenger id")
    if messenger_id != caller_messenger_id:
        raise NotYourMessenger(
            f"messenger {caller_messenger_id!r} may not use the events of messenger "
            f"{quote(messenger_id)}: give your own messenger id"
        )
    return messenger_id


# --- a messenger's sequence ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequenceState:
    """A messenger's position: what was assigned, acknowledged and still retained."""

    messenger_id: str
    head_seq: int = 0
    acked_seq: int = 0
    floor_seq: int = 1  # head_seq + 1 when nothing is retained
    late_deliveries: int = 0

    @property
    def unacked_count(self) -> int:
        return self.head_seq - self.acked_seq

    def range_trailers(self) -> dict[str, str]:
        return {FLOOR_TRAILER: str(self.floor_seq), HEAD_TRAILER: str(self.head_seq)}

    def range_metadata(self) -> dict[str, int]:
        """The valid range in the refusal's ErrorInfo (the trailers carry it too)."""
        return {"floor_seq": self.floor_seq, "head_seq": self.head_seq}

    def check_cursor(self, after_seq: int) -> None:
        """A cursor must lie in floor_seq - 1 .. head_seq: never a silent skip, never a wait
        for numbers that were not assigned."""
        if after_seq > self.head_seq:
            raise CursorOutOfRange(
                f"after_seq {after_seq} is beyond the head {self.head_seq} of messenger "
                f"{self.messenger_id!r}: resume from a seq this notifier delivered "
                f"(at most {self.head_seq})",
                trailers=self.range_trailers(),
                metadata=self.range_metadata(),
            )
        if after_seq < self.floor_seq - 1:
            raise self.below_floor(after_seq)

    def below_floor(self, after_seq: int) -> CursorOutOfRange:
        return CursorOutOfRange(
            f"after_seq {after_seq} is older than retention for messenger "
            f"{self.messenger_id!r}: events up to {self.floor_seq - 1} were acknowledged and "
            f"pruned; subscribe with after_seq from {self.floor_seq - 1} to {self.head_seq}",
            trailers=self.range_trailers(),
            metadata=self.range_metadata(),
        )

    def check_ack(self, up_to_seq: int) -> None:
        if up_to_seq > self.head_seq:
            raise AckBeyondHead(
                f"up_to_seq {up_to_seq} is beyond the head {self.head_seq} of messenger "
                f"{self.messenger_id!r}: acknowledge only seqs you have received",
                trailers=self.range_trailers(),
                metadata=self.range_metadata(),
            )


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    state: SequenceState
    oldest_unacked_published_at: datetime | None
    oldest_unacked_age: timedelta
    delivery_limit: timedelta  # the SLA limit (24 hours)


@dataclass(frozen=True, slots=True)
class OldestUnacked:
    """A messenger with unacknowledged events, and when the oldest of them was published."""

    messenger_id: str
    head_seq: int
    acked_seq: int
    published_at: datetime

    @property
    def unacked_count(self) -> int:
        return self.head_seq - self.acked_seq


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Timing rules: the legal limit, when to warn, how long acknowledged events are kept."""

    sla_warning: timedelta = timedelta(hours=12)
    sla_limit: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=MIN_RETENTION_DAYS)

    def __post_init__(self) -> None:
        if self.sla_warning > self.sla_limit:
            raise ValueError("the SLA warning must come before the SLA limit")
        if self.retention < timedelta(days=MIN_RETENTION_DAYS):
            raise ValueError(f"retention must be at least {MIN_RETENTION_DAYS} days")


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """Per-stream limits: the bounded buffer, the slow-consumer timeout, the progress interval,
    and how many notices one message carries at most."""

    buffer: int = 256
    slow_consumer_seconds: float = 10.0
    progress_interval_seconds: float = 5.0
    batch: int = 256

    def __post_init__(self) -> None:
        if self.buffer < 1:
            raise ValueError("the stream buffer holds at least one notice")
        if self.batch < 1:
            raise ValueError("a stream message carries at least one notice")
        if self.slow_consumer_seconds <= 0 or self.progress_interval_seconds <= 0:
            raise ValueError("stream timeouts must be positive")
