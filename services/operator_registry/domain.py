"""The registry's domain: contracts, agreements, bindings, verification answers, notices.

Rules that need no storage live here (input checks, code generation); the use cases that combine
them with the store live in service.py. Imports neither grpc nor generated code.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from services.common.errors import DomainError, InvalidInput, quote
from services.common.identity import validate_id
from services.common.ratelimit import RateLimited

IDEMPOTENCY_KEY_MAX = 64
CONTRACT_ID_MAX = 64
DISPLAY_NAME_MAX = 200
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTRACT_ID = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")


class ContractState(StrEnum):
    ACTIVE = "active"
    TERMINATED = "terminated"


class AgreementState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class VerificationResult(StrEnum):
    IDENTIFIED = "identified"
    NO_SUBSCRIBER = "no_subscriber"


class TerminationReason(StrEnum):
    CONTRACT_ENDED = "contract_ended"
    PORTED_OUT = "ported_out"


@dataclass(frozen=True, slots=True)
class Binding:
    """The subscriber under contract_id uses messenger_id; the messenger's code for the pair."""

    contract_id: str
    messenger_id: str
    identification_code: str
    bound_at: datetime


@dataclass(frozen=True, slots=True)
class Contract:
    contract_id: str
    phone_number: str
    state: ContractState
    activated_at: datetime
    terminated_at: datetime | None = None
    termination_reason: TerminationReason | None = None
    recipient_operator_id: str | None = None  # set when the contract ended by porting out


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One contract with the messengers bound under it."""

    contract: Contract
    bindings: tuple[Binding, ...] = ()


@dataclass(frozen=True, slots=True)
class Agreement:
    messenger_id: str
    display_name: str
    state: AgreementState
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Verification:
    """The stored answer to one verification request (replayed for a repeated request id)."""

    messenger_id: str
    idempotency_key: str
    phone_number: str
    result: VerificationResult
    answered_at: datetime
    contract_id: str | None = None
    identification_code: str | None = None
    identified_at: datetime | None = None
    # NO_SUBSCRIBER for a number whose most recent contract was ported out: where it went.
    recipient_operator_id: str | None = None

    def replayable(self, active_contract_id: str | None) -> bool:
        """May this stored answer be replayed to a repeated request? Not an IDENTIFIED whose
        contract is no longer the number's active one: its termination may already have been
        applied at the messenger, and a replay would identify the user on an ended contract.
        A NO_SUBSCRIBER is replayed as it was (it grants nothing)."""
        return self.result is not VerificationResult.IDENTIFIED or (
            self.contract_id is not None and self.contract_id == active_contract_id
        )


@dataclass(frozen=True, slots=True)
class TerminationNotice:
    """One outbox row: a ContractTerminated event for one bound messenger."""

    event_id: str
    operator_id: str
    messenger_id: str
    phone_number: str
    identification_code: str
    reason: TerminationReason
    occurred_at: datetime
    recipient_operator_id: str = ""
    # The trace id (x-request-id) of the TerminateContract/PortOut call that queued it.
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class ParkedNotice:
    """An outbox notice the notifier refused for good: out of the relay's queue until retried."""

    seq: int  # its place in the outbox (listing order, and the page token)
    notice: TerminationNotice
    parked_at: datetime
    status: str  # the notifier's status code name
    message: str


PARKED_PAGE_MAX = 1000
PARKED_MESSAGE_MAX = 1000  # a refusal's message is kept up to this many characters


@dataclass(frozen=True, slots=True)
class Termination:
    subscriber: Subscriber
    notices_queued: int


class TerminationOutcome(StrEnum):
    """What became of one row of a bulk termination."""

    ENDED = "ended"
    NOT_FOUND = "not_found"  # SubscriberNotFound
    NOT_ACTIVE = "not_active"  # ContractNotActive
    INVALID = "invalid"  # InvalidInput


@dataclass(frozen=True, slots=True)
class TerminationRowInput:
    """One row of a bulk termination as it arrived (validated by the service)."""

    line: int
    phone_number: str
    reason: TerminationReason | None  # None: a reason number the registry does not know
    recipient_operator_id: str = ""


@dataclass(frozen=True, slots=True)
class TerminationRefusal:
    line: int
    outcome: TerminationOutcome
    message: str


@dataclass(frozen=True, slots=True)
class BulkTermination:
    """The report of a bulk termination: counts, and the first refused rows."""

    rows: int
    ended: int
    notices_queued: int
    refusals: tuple[TerminationRefusal, ...]
    refused: int


class ReassignmentStatus(StrEnum):
    REASSIGNED = "reassigned"
    NOT_REASSIGNED = "not_reassigned"
    NO_DATA = "no_data"


@dataclass(frozen=True, slots=True)
class NumberHistory:
    """What "has the number changed hands since D?" needs: the latest contract change times of
    the number (None: it never had a contract here)."""

    last_activated_at: datetime | None
    last_terminated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReassignmentAnswer:
    status: ReassignmentStatus
    records_begin_at: datetime


def decide_reassignment(
    history: NumberHistory, since: datetime, records_begin_at: datetime
) -> ReassignmentStatus:
    """The FCC Reassigned Numbers Database's three answers, with these boundaries:

    - REASSIGNED if a contract of the number began or ended strictly after `since` (a change
      at exactly `since` is not after it). A known change is reported even when `since` is
      before the records begin: "yes" needs only the change, not the whole history.
    - otherwise NO_DATA if `since` is strictly before records_begin_at (at records_begin_at
      itself the records cover it);
    - otherwise NOT_REASSIGNED (a number that never had a contract here has not changed hands
      here either).
    """
    for changed_at in (history.last_activated_at, history.last_terminated_at):
        if changed_at is not None and changed_at > since:
            return ReassignmentStatus.REASSIGNED
    if since < records_begin_at:
        return ReassignmentStatus.NO_DATA
    return ReassignmentStatus.NOT_REASSIGNED


# --- errors -------------------------------------------------------------------------------------


class RegistryError(DomainError):
    """Base of the registry's own refusals."""


class AgreementRequired(RegistryError):
    """The calling messenger has no active identification agreement (PERMISSION_DENIED)."""

    REASON = "AGREEMENT_MISSING"


class IdempotencyKeyReused(InvalidInput):
    """An idempotency key already answered for another number (INVALID_ARGUMENT)."""

    REASON = "IDEMPOTENCY_KEY_REUSED"


class DeadlinePassed(RegistryError):
    """The caller's deadline passed before the answer could be committed (DEADLINE_EXCEEDED)."""

    REASON = "DEADLINE_PASSED"


class SubscriberExists(RegistryError):
    """The number already has an active contract, or the contract id is taken (ALREADY_EXISTS)."""

    REASON = "SUBSCRIBER_EXISTS"


class SubscriberNotFound(RegistryError):
    """The number never had a contract here (NOT_FOUND)."""

    REASON = "SUBSCRIBER_NOT_FOUND"


class MessengerNotFound(RegistryError):
    """No agreement with that messenger was ever registered (NOT_FOUND)."""

    REASON = "MESSENGER_NOT_FOUND"


class ContractNotActive(RegistryError):
    """The number's contract has already ended (FAILED_PRECONDITION)."""

    REASON = "CONTRACT_NOT_ACTIVE"


def validate_recipient(recipient_operator_id: str, operator_id: str) -> str:
    """The operator a number is ported to: a valid operator id, and not this operator."""
    if not recipient_operator_id:
        raise InvalidInput(
            "recipient_operator_id is empty: name the operator the number moved to, e.g. megafon"
        )
    validate_id(recipient_operator_id, "recipient_operator_id")
    if recipient_operator_id == operator_id:
        raise InvalidInput(
            f"recipient_operator_id {quote(recipient_operator_id)} is this operator: a number is "
            "ported out to another operator"
        )
    return recipient_operator_id


# --- rules --------------------------------------------------------------------------------------


def one_idempotency_key(request_id: str, idempotency_key: str) -> str:
    """A verification request's key from its two names for it, request_id and idempotency_key
    (the API's first name and its second): either one, or both equal."""
    if request_id and idempotency_key and request_id != idempotency_key:
        raise InvalidInput(
            f"idempotency_key {quote(idempotency_key)} differs from request_id "
            f"{quote(request_id)}: both name the verification's key; set one of them"
        )
    return request_id or idempotency_key


def validate_idempotency_key(value: str) -> str:
    if not _IDEMPOTENCY_KEY.match(value or ""):
        raise InvalidInput(
            f"idempotency_key {quote(value)} is not valid: use 1 to {IDEMPOTENCY_KEY_MAX} letters, "
            "digits, '-' and '_', one per verification attempt"
        )
    return value


def validate_contract_id(value: str) -> str:
    if not _CONTRACT_ID.match(value or ""):
        raise InvalidInput(
            f"contract_id {quote(value)} is not valid: use 1 to {CONTRACT_ID_MAX} characters "
            "without spaces or control characters"
        )
    return value


def normalise_display_name(value: str) -> str | None:
    """The given display name, stripped; None when empty (keep the current name, or use the
    messenger id for a new agreement)."""
    name = (value or "").strip()
    if not name:
        return None
    if len(name) > DISPLAY_NAME_MAX or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput(
            f"display_name is not valid: use at most {DISPLAY_NAME_MAX} printable characters"
        )
    return name


def new_identification_code() -> str:
    """128 random bits, hex: unguessable, and independent between messengers by construction."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One verification request as the registry saw it: never the full number."""

    recorded_at: datetime
    messenger_id: str
    masked_phone_number: str
    idempotency_key: str
    outcome: str  # IDENTIFIED, NO_SUBSCRIBER, or the refusal (see refusal_outcome)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    messenger_id: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 100
    before_id: int | None = None  # the page token: records older than this one


AUDIT_PAGE_MAX = 1000

# A reused key's audit outcome has had two names: REQUEST_ID_REUSED (the first v1, and the
# records written then: the trail is append-only) and IDEMPOTENCY_KEY_REUSED (written now).
_SAME_OUTCOME: Final = ("IDEMPOTENCY_KEY_REUSED", "REQUEST_ID_REUSED")


def audit_outcome_names(outcome: str) -> tuple[str, ...]:
    """The stored outcomes an audit filter on `outcome` matches: itself, or for a reused key
    both of its names."""
    return _SAME_OUTCOME if outcome in _SAME_OUTCOME else (outcome,)


def refusal_outcome(exc: BaseException) -> str:
    """The audit outcome of a refused verification request: the refusal's kind, in words an
    auditor reads (NO_AGREEMENT, INVALID_REQUEST, ...)."""
    if isinstance(exc, AgreementRequired):
        return "NO_AGREEMENT"
    if isinstance(exc, RateLimited):
        return "RATE_LIMITED"
    if isinstance(exc, DeadlinePassed):
        return "DEADLINE_PASSED"
    if isinstance(exc, IdempotencyKeyReused):
        return "IDEMPOTENCY_KEY_REUSED"
    if isinstance(exc, InvalidInput):
        return "INVALID_REQUEST"
    return "REFUSED"
