"""The gateway's domain: identification states and reasons, the one-time code, domain errors.

An identification moves

    AWAITING_CODE --right code--> VERIFYING --operator: identified--> IDENTIFIED --notice--> REVOKED
          |                           |
          +-- expired / too many ---->+-- no subscriber / refused / timeout / no operator
                                      v
                                NOT_COMPLETED

and any unfinished or IDENTIFIED identification ends (NUMBER_CHANGED) when the user starts a
new one. Only IDENTIFIED lets the user send messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.common.errors import DomainError, InvalidInput, quote

USER_ID_MAX_LENGTH = 128
CODE_DIGITS = 6


class State(StrEnum):
    AWAITING_CODE = "AWAITING_CODE"
    VERIFYING = "VERIFYING"
    IDENTIFIED = "IDENTIFIED"
    NOT_COMPLETED = "NOT_COMPLETED"
    REVOKED = "REVOKED"

    @property
    def in_progress(self) -> bool:
        return self in (State.AWAITING_CODE, State.VERIFYING)


class Reason(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    NO_SUBSCRIBER = "NO_SUBSCRIBER"
    OPERATOR_TIMEOUT = "OPERATOR_TIMEOUT"
    NO_OPERATOR = "NO_OPERATOR"
    AGREEMENT_REFUSED = "AGREEMENT_REFUSED"
    CODE_EXPIRED = "CODE_EXPIRED"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    CONTRACT_TERMINATED = "CONTRACT_TERMINATED"
    PORTED_OUT = "PORTED_OUT"
    NOT_IDENTIFIED = "NOT_IDENTIFIED"
    NUMBER_CHANGED = "NUMBER_CHANGED"


REASON_TEXT: dict[Reason, str] = {
    Reason.UNSPECIFIED: "no reason recorded",
    Reason.NO_SUBSCRIBER: "the mobile operator has no subscriber under a contract for the number",
    Reason.OPERATOR_TIMEOUT: "the mobile operator did not answer within the verification window",
    Reason.NO_OPERATOR: "no mobile operator this messenger works with serves the number",
    Reason.AGREEMENT_REFUSED: "the mobile operator has no identification agreement with "
    "this messenger",
    Reason.CODE_EXPIRED: "the one-time code expired before it was confirmed",
    Reason.TOO_MANY_ATTEMPTS: "the one-time code was entered wrongly too many times",
    Reason.CONTRACT_TERMINATED: "the mobile operator reported that the subscriber's contract ended",
    Reason.PORTED_OUT: "the mobile operator reported that the number moved to another operator",
    Reason.NOT_IDENTIFIED: "the user is not identified",
    Reason.NUMBER_CHANGED: "the user changed number or started a new identification",
}


@dataclass(frozen=True, slots=True)
class Identification:
    """One identification attempt of a user; the user's current one is the latest."""

    identification_id: str
    user_id: str
    phone_number: str  # E.164
    state: State
    reason: Reason
    operator_id: str  # the routed operator, then the answering one; "" when none serves it
    started_at: datetime
    code_expires_at: datetime
    attempts_left: int
    verification_deadline: datetime | None = None
    completed_at: datetime | None = None
    # VerifySubscriber's idempotency_key for it, fixed once VERIFYING (not the client's
    # StartIdentification idempotency key, which the store keeps apart).
    verify_key: str | None = None
    identification_code: str | None = field(default=None, repr=False)
    code_hash: str = field(default="", repr=False)
    # The donor operator whose hint ("ported to X") this verification followed; once set, the
    # verify_key is the derived one (hint_verify_key) and no further hint is followed.
    hinted_by: str | None = None
    identified_at: datetime | None = None  # when it became IDENTIFIED (kept when REVOKED)
    # The trace id of the request that started it: every VerifySubscriber call for it carries
    # it as its request id (first, retried, resumed after a restart, following a hint).
    trace_id: str | None = None
    # The replica whose lease holds the pending verification, and the lease's fencing token:
    # raised each time a replica takes it (begins or claims it), kept by renewals. The
    # verifying replica's writes carry the token they began with and are refused once another
    # replica took the verification over.
    lease_holder: str | None = None
    lease_token: int = 0


@dataclass(frozen=True, slots=True)
class Access:
    """The answer to "may this user send messages?"."""

    allowed: bool
    reason: Reason
    message: str
    state: State | None


def decide_access(user_id: str, current: Identification | None) -> Access:
    if current is None:
        return Access(
            False,
            Reason.NOT_IDENTIFIED,
            f"user {quote(user_id)} has no identification: start one with StartIdentification",
            None,
        )
    if current.state is State.IDENTIFIED:
        return Access(
            True, Reason.UNSPECIFIED, f"user {quote(user_id)} is identified", current.state
        )
    if current.state.in_progress:
        step = (
            "confirm the one-time code sent by SMS"
            if current.state is State.AWAITING_CODE
            else "the mobile operator is being asked; try again shortly"
        )
        return Access(
            False,
            Reason.NOT_IDENTIFIED,
            f"user {quote(user_id)} is not identified yet: {step}",
            current.state,
        )
    what = (
        "identification was not completed"
        if current.state is State.NOT_COMPLETED
        else ("identification was revoked")
    )
    return Access(
        False,
        current.reason,
        f"user {quote(user_id)}'s {what}: {REASON_TEXT[current.reason]}; identify again",
        current.state,
    )


# --- the one-time code's SMS ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsMessage:
    messenger_id: str
    identification_id: str
    phone_number: str
    code: str = field(repr=False)
    text: str = field(repr=False)


# --- the operator's answer -------------------------------------------------------------------


class Verdict(StrEnum):
    IDENTIFIED = "IDENTIFIED"
    NO_SUBSCRIBER = "NO_SUBSCRIBER"
    REFUSED = "REFUSED"  # no active identification agreement (PERMISSION_DENIED)
    TIMED_OUT = "TIMED_OUT"  # the operator's deadline passed (DEADLINE_EXCEEDED)


@dataclass(frozen=True, slots=True)
class OperatorAnswer:
    verdict: Verdict
    operator_id: str = ""
    identification_code: str = field(default="", repr=False)
    # With NO_SUBSCRIBER: the operator the number was ported to, when the asked one knows it.
    recipient_operator_id: str = ""


class OperatorUnavailable(Exception):
    """The operator could not be asked this time (down, overloaded, ...); worth retrying, not
    before retry_after seconds when the operator said so (its RetryInfo)."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OperatorRefused(Exception):
    """The operator refused us: no active identification agreement (PERMISSION_DENIED)."""


HINT_KEY_SUFFIX = "-hint"


def hint_verify_key(verify_key: str) -> str:
    """The VerifySubscriber key for asking the recipient a donor named: derived from the
    original, so a gateway restarted mid-hint asks again with the same key and the recipient
    answers idempotently. (A uuid hex of 32 characters plus the suffix fits the registry's 64.)"""
    return verify_key + HINT_KEY_SUFFIX


# --- "has the number changed hands?" ---------------------------------------------------------


class Reassignment(StrEnum):
    REASSIGNED = "REASSIGNED"
    NOT_REASSIGNED = "NOT_REASSIGNED"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True, slots=True)
class ReassignmentCheck:
    reassignment: Reassignment
    since: datetime  # the identification time asked about
    operator_id: str
    phone_number: str


# --- input rules -----------------------------------------------------------------------------


def validate_user_id(user_id: str) -> str:
    if not user_id or len(user_id) > USER_ID_MAX_LENGTH:
        raise InvalidInput(
            f"user_id must be 1 to {USER_ID_MAX_LENGTH} characters, got {len(user_id or '')}: "
            "give the messenger's identifier of the user"
        )
    if not user_id.isprintable() or user_id.strip() == "":
        raise InvalidInput(
            "user_id must be printable characters (no control characters, not only spaces)"
        )
    return user_id


def validate_code_format(code: str) -> str:
    if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise InvalidInput(
            f"code must be the {CODE_DIGITS} digits sent by SMS, got {len(code)} characters"
        )
    return code


IDEMPOTENCY_KEY_MAX_LENGTH = 128


def validate_idempotency_key(key: str) -> str | None:
    """A client's idempotency key: empty for none, else 1 to 128 printable characters."""
    if not key:
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not key.isprintable() or not key.strip():
        raise InvalidInput(
            f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters "
            "(a UUID, for example), or empty for none"
        )
    return key


def validate_max_wait(seconds: float) -> float:
    """ConfirmPossession's max_wait: not negative."""
    if seconds < 0:
        raise InvalidInput(f"max_wait is negative ({seconds:g} s): give 0 or more")
    return seconds


# --- domain errors ---------------------------------------------------------------------------


class IdentificationNotFound(DomainError):
    """No such identification, or the user has none."""

    REASON = "IDENTIFICATION_NOT_FOUND"


class PreconditionFailed(DomainError):
    """The identification is not in a state that allows this."""

    REASON = "WRONG_STATE"


class WrongState(PreconditionFailed):
    """The identification is not AWAITING_CODE."""

    REASON = "WRONG_STATE"


class CodeExpired(PreconditionFailed):
    """The one-time code expired; the identification is NOT_COMPLETED."""

    REASON = "CODE_EXPIRED"


class WrongCode(PreconditionFailed):
    """A wrong one-time code (TOO_MANY_ATTEMPTS when none are left)."""

    REASON = "WRONG_CODE"


class SameNumber(InvalidInput):
    """ChangePhoneNumber to the number the user already has."""

    REASON = "SAME_NUMBER"


class NumberNotServed(PreconditionFailed):
    """No configured operator serves the number: it cannot be identified here (no code sent)."""

    REASON = "NUMBER_NOT_SERVED"


class CountryNotAllowed(InvalidInput):
    """The number is of a country outside the messenger's allowed countries (no code sent)."""

    REASON = "COUNTRY_NOT_ALLOWED"


class IdempotencyKeyReused(InvalidInput):
    """The idempotency key was used by the same user for another number."""

    REASON = "IDEMPOTENCY_KEY_REUSED"


class IdempotentReplay(Exception):
    """The user already started an identification with this idempotency key."""

    def __init__(self, identification: Identification) -> None:
        super().__init__(identification.identification_id)
        self.identification = identification


class SmsNotSent(DomainError):
    """The one-time code could not be sent; the caller may start again."""

    REASON = "SMS_NOT_SENT"


class NeverIdentified(PreconditionFailed):
    """The user's current identification was never IDENTIFIED (FAILED_PRECONDITION)."""

    REASON = "NEVER_IDENTIFIED"


class AgreementMissing(PreconditionFailed):
    """The operator refused this messenger: no active agreement (FAILED_PRECONDITION)."""

    REASON = "AGREEMENT_MISSING"


class OperatorUnreachable(DomainError):
    """The operator could not be asked now (UNAVAILABLE); try again later."""

    REASON = "OPERATOR_UNREACHABLE"


def wrong_state_error(ident: Identification) -> WrongState:
    match ident.state:
        case State.VERIFYING:
            todo = "the code was already accepted and the operator is being asked; poll "
            todo += "GetIdentification"
        case State.IDENTIFIED:
            todo = "the user is already identified; nothing to confirm"
        case _:
            todo = f"it ended ({REASON_TEXT[ident.reason]}); start a new identification"
    return WrongState(
        f"identification {ident.identification_id} is {ident.state}, not AWAITING_CODE: {todo}",
        metadata={"state": ident.state.value},
    )
