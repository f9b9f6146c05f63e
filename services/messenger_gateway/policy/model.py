"""The delivery policy (149-FZ art. 10.1 part 4.2): may this message go from sender to recipient?

Pure domain: the rules and their precedence as data, the preferences and restriction orders as
values, the restriction-order state machine, and what the in-memory index (policy/index.py) is
built from: the store's Snapshot and its change log (PolicyChange, in version order). No grpc,
no SQL: the store (adapters/policy_store.py) is the truth.

Precedence (the first rule that refuses decides; RULES below is this table):

    1  SENDER_NOT_IDENTIFIED     every kind   the sender's current identification is not IDENTIFIED
    2  SENDER_RESTRICTED         by scope     a regulator's order in force names the sender
                                              (by user id, or by the identified phone number)
    3  RECIPIENT_UNKNOWN         every kind   the recipient never started an identification here
    4  RECIPIENT_REFUSED_SENDER  personal,    the recipient refused this sender
                                 automated
    5  NO_AUTOMATED_CONSENT      automated    the recipient has not granted (or revoked) consent
                                              to automated messages from this sender
    6  SENDER_NOT_ACCEPTED       personal     the recipient has not accepted this sender and
                                              refuses senders not accepted

State mailings (sent at the initiative of state bodies) pass rules 1 to 3 only: the law makes
the messenger let users receive them, so a recipient's refusals do not apply to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from services.common.errors import DomainError, InvalidInput
from services.messenger_gateway.identification.model import (
    USER_ID_MAX_LENGTH,
    validate_user_id,
)

ORDER_ID_MAX_LENGTH = 64
LIFT_REASON_MAX_LENGTH = 500
MAX_BATCH_PAIRS = 10_000
# The legal limit for executing a regulator's restriction order, from its receipt.
ORDER_LIMIT = timedelta(hours=24)
# How far in the future a received_at may be (clock skew between the messenger's systems).
RECEIVED_AT_SKEW = timedelta(minutes=5)


class MessageKind(StrEnum):
    PERSONAL = "PERSONAL"  # from one user to another
    AUTOMATED = "AUTOMATED"  # sent by an automated sender (a bot, a mailing)
    STATE_MAILING = "STATE_MAILING"  # a mailing at the initiative of a state body


class DeliveryReason(StrEnum):
    ALLOWED = "ALLOWED"
    SENDER_NOT_IDENTIFIED = "SENDER_NOT_IDENTIFIED"
    SENDER_RESTRICTED = "SENDER_RESTRICTED"
    RECIPIENT_UNKNOWN = "RECIPIENT_UNKNOWN"
    RECIPIENT_REFUSED_SENDER = "RECIPIENT_REFUSED_SENDER"
    NO_AUTOMATED_CONSENT = "NO_AUTOMATED_CONSENT"
    SENDER_NOT_ACCEPTED = "SENDER_NOT_ACCEPTED"


DELIVERY_TEXT: dict[DeliveryReason, str] = {
    DeliveryReason.ALLOWED: "the message may be delivered",
    DeliveryReason.SENDER_NOT_IDENTIFIED: "the sender is not identified through a mobile operator",
    DeliveryReason.SENDER_RESTRICTED: "a regulator's restriction order in force restricts the "
    "sender's sending",
    DeliveryReason.RECIPIENT_UNKNOWN: "the recipient is not a user of this messenger's gateway",
    DeliveryReason.RECIPIENT_REFUSED_SENDER: "the recipient refused messages from the sender",
    DeliveryReason.NO_AUTOMATED_CONSENT: "the recipient has not consented to automated "
    "messages from the sender",
    DeliveryReason.SENDER_NOT_ACCEPTED: "the recipient has not accepted the sender and refuses "
    "senders not accepted",
}


class SenderRule(StrEnum):
    """A recipient's rule for one sender."""

    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"
    NONE = "NONE"  # no rule: the recipient's policy for senders not accepted applies


class UnacceptedPolicy(StrEnum):
    """What a recipient wants done with personal messages from senders not accepted."""

    ALLOW = "ALLOW"
    REFUSE = "REFUSE"
    DEFAULT = "DEFAULT"  # the gateway's default (IDMESH_POLICY_UNACCEPTED_DEFAULT)


class Consent(StrEnum):
    GRANTED = "GRANTED"
    REVOKED = "REVOKED"


class OrderScope(StrEnum):
    ALL_MESSAGES = "ALL_MESSAGES"  # every kind of message from the sender
    AUTOMATED = "AUTOMATED"  # the sender's automated messages only


class OrderTarget(StrEnum):
    USER = "USER"  # a user id of this messenger
    PHONE = "PHONE"  # a phone number: whichever user is identified with it


class OrderState(StrEnum):
    RECEIVED = "RECEIVED"  # recorded, held for review: not yet in force
    IN_FORCE = "IN_FORCE"
    LIFTED = "LIFTED"


class OrderEvent(StrEnum):
    ENFORCE = "ENFORCE"
    LIFT = "LIFT"


# The order state machine as data: (state, event) -> new state. Anything else is refused.
ORDER_TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState] = {
    (OrderState.RECEIVED, OrderEvent.ENFORCE): OrderState.IN_FORCE,
    (OrderState.RECEIVED, OrderEvent.LIFT): OrderState.LIFTED,
    (OrderState.IN_FORCE, OrderEvent.LIFT): OrderState.LIFTED,
}


class ChangeKind(StrEnum):
    """What a change-log entry changed."""

    IDENTIFICATION = "IDENTIFICATION"  # a user's current identification state
    SENDER_RULE = "SENDER_RULE"
    UNACCEPTED_POLICY = "UNACCEPTED_POLICY"
    AUTOMATED_CONSENT = "AUTOMATED_CONSENT"
    RESTRICTION_ORDER = "RESTRICTION_ORDER"


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """One per reason (DECISIONS): compared and hashed by identity, which is cheap."""

    reason: DeliveryReason

    @property
    def allowed(self) -> bool:
        return self.reason is DeliveryReason.ALLOWED


DECISIONS: dict[DeliveryReason, Decision] = {r: Decision(r) for r in DeliveryReason}


@dataclass(frozen=True, slots=True)
class SenderRuleEntry:
    sender_id: str
    rule: SenderRule
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AutomatedConsent:
    sender_id: str
    consent: Consent
    granted_at: datetime | None  # the last grant
    revoked_at: datetime | None  # the last revocation (None while never revoked)
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Preferences:
    user_id: str
    unaccepted_policy: UnacceptedPolicy  # DEFAULT when the user never set one
    effective_unaccepted_policy: UnacceptedPolicy  # ALLOW or REFUSE: what decisions use
    sender_rules: tuple[SenderRuleEntry, ...]
    automated_consents: tuple[AutomatedConsent, ...]


@dataclass(frozen=True, slots=True)
class RestrictionOrder:
    order_id: str  # the regulator's own id of the order
    target: OrderTarget
    target_value: str  # a user id, or a phone number in E.164
    scope: OrderScope
    state: OrderState
    received_at: datetime  # when the regulator's demand reached the messenger
    recorded_at: datetime
    in_force_at: datetime | None = None
    lifted_at: datetime | None = None
    lift_reason: str = ""

    def same_order(self, other: RestrictionOrder) -> bool:
        """Whether other records the same demand (a retried RecordRestrictionOrder)."""
        return (self.target, self.target_value, self.scope, self.received_at) == (
            other.target,
            other.target_value,
            other.scope,
            other.received_at,
        )


@dataclass(frozen=True, slots=True)
class OrderAuditRecord:
    seq: int
    at: datetime
    order_id: str
    action: str  # RECORDED, ENFORCED, LIFTED
    actor: str  # the caller's identity (URI)
    target: OrderTarget
    masked_target: str  # a phone number masked; a user id as it is
    scope: OrderScope
    state: OrderState  # the order's state after the action
    note: str


@dataclass(frozen=True, slots=True)
class OrderSla:
    """The restriction orders against the 24-hour limit, from the store."""

    received: int  # orders RECEIVED, not yet in force
    oldest_received_at: datetime | None  # the oldest of them
    in_force: int
    late: int  # orders put in force more than ORDER_LIMIT after their receipt


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One entry of the change log; version is gap-free and in commit order."""

    version: int
    changed_at: datetime
    kind: ChangeKind
    user_id: str = ""  # the recipient (preferences), the user (identification), an order's user
    sender_id: str = ""
    phone_number: str = ""  # the user's (identification) or the order's target number
    value: str = ""  # the new state, rule, policy, consent or order state
    order_id: str = ""
    scope: str = ""  # an order's scope


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The store's state at one version, to build the index from."""

    version: int
    users: Iterable[tuple[str, str, str]]  # (user_id, phone_number, current state)
    sender_rules: Iterable[tuple[str, str, str]]  # (recipient, sender, rule)
    unaccepted: Iterable[tuple[str, str]]  # (user_id, policy)
    consents: Iterable[tuple[str, str]]  # (recipient, sender) with consent granted
    orders: Iterable[tuple[str, str, str, str]]  # (order_id, target, value, scope) in force


# --- the rules, in precedence order --------------------------------------------------------


class PolicyFacts(Protocol):
    """What the rules read: the index (policy/index.py) answers these."""

    def is_identified(self, user_id: str) -> bool: ...
    def is_restricted(self, user_id: str, kind: MessageKind) -> bool: ...
    def is_known(self, user_id: str) -> bool: ...
    def refused(self, recipient: str, sender: str) -> bool: ...
    def accepted(self, recipient: str, sender: str) -> bool: ...
    def refuses_unaccepted(self, recipient: str) -> bool: ...
    def consented(self, recipient: str, sender: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Rule:
    reason: DeliveryReason
    kinds: frozenset[MessageKind]
    refuses: Callable[[PolicyFacts, str, str, MessageKind], bool]
    text: str  # the wording of the rule in docs/policy.md


EVERY_KIND = frozenset(MessageKind)
RULES: tuple[Rule, ...] = (
    Rule(
        DeliveryReason.SENDER_NOT_IDENTIFIED,
        EVERY_KIND,
        lambda ix, s, r, k: not ix.is_identified(s),
        "the sender's current identification is not IDENTIFIED",
    ),
    Rule(
        DeliveryReason.SENDER_RESTRICTED,
        EVERY_KIND,
        lambda ix, s, r, k: ix.is_restricted(s, k),
        "a restriction order in force names the sender (user id, or identified number); "
        "scope AUTOMATED restricts automated messages only",
    ),
    Rule(
        DeliveryReason.RECIPIENT_UNKNOWN,
        EVERY_KIND,
        lambda ix, s, r, k: not ix.is_known(r),
        "the recipient never started an identification at this gateway",
    ),
    Rule(
        DeliveryReason.RECIPIENT_REFUSED_SENDER,
        frozenset({MessageKind.PERSONAL, MessageKind.AUTOMATED}),
        lambda ix, s, r, k: ix.refused(r, s),
        "the recipient refused this sender",
    ),
    Rule(
        DeliveryReason.NO_AUTOMATED_CONSENT,
        frozenset({MessageKind.AUTOMATED}),
        lambda ix, s, r, k: not ix.consented(r, s),
        "the recipient has no consent in force for automated messages from this sender",
    ),
    Rule(
        DeliveryReason.SENDER_NOT_ACCEPTED,
        frozenset({MessageKind.PERSONAL}),
        lambda ix, s, r, k: not ix.accepted(r, s) and ix.refuses_unaccepted(r),
        "the recipient has not accepted this sender and refuses senders not accepted",
    ),
)
RULES_BY_KIND: dict[MessageKind, tuple[Rule, ...]] = {
    kind: tuple(rule for rule in RULES if kind in rule.kinds) for kind in MessageKind
}


def decide_by_rules(facts: PolicyFacts, sender: str, recipient: str, kind: MessageKind) -> Decision:
    """The reference decision: the first rule of RULES (in order) that refuses, or ALLOWED."""
    for rule in RULES_BY_KIND[kind]:
        if rule.refuses(facts, sender, recipient, kind):
            return DECISIONS[rule.reason]
    return DECISIONS[DeliveryReason.ALLOWED]


# --- input rules -----------------------------------------------------------------------------


def validate_pair_user(value: str, field: str) -> None:
    """A user id in a decision request; field names it in the error (pairs[3].sender_id)."""
    if not value or len(value) > USER_ID_MAX_LENGTH or not value.isprintable() or value.isspace():
        raise InvalidInput(
            f"{field} must be 1 to {USER_ID_MAX_LENGTH} printable characters (a user id), got "
            f"{len(value)} characters"
        )


def validate_sender_id(sender_id: str) -> str:
    try:
        return validate_user_id(sender_id)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("user_id", "sender_id", 1)) from None


def validate_order_id(order_id: str) -> str:
    if not order_id or len(order_id) > ORDER_ID_MAX_LENGTH:
        raise InvalidInput(
            f"order_id must be 1 to {ORDER_ID_MAX_LENGTH} characters, got {len(order_id)}: "
            "give the regulator's id of the order"
        )
    if not order_id.isprintable() or any(c.isspace() for c in order_id):
        raise InvalidInput("order_id must be printable characters without spaces")
    return order_id


def validate_received_at(received_at: datetime | None, now: datetime) -> datetime:
    if received_at is None:
        raise InvalidInput(
            "received_at is missing: give when the regulator's demand reached the messenger"
        )
    if received_at > now + RECEIVED_AT_SKEW:
        raise InvalidInput("received_at is in the future: give when the demand was received")
    return received_at


def validate_lift_reason(reason: str) -> str:
    if len(reason) > LIFT_REASON_MAX_LENGTH or not reason.isprintable():
        raise InvalidInput(f"reason must be at most {LIFT_REASON_MAX_LENGTH} printable characters")
    return reason


def order_transition(order: RestrictionOrder, event: OrderEvent) -> OrderState:
    new = ORDER_TRANSITIONS.get((order.state, event))
    if new is None:
        verb = "put in force" if event is OrderEvent.ENFORCE else "lifted"
        raise OrderWrongState(
            f"restriction order {order.order_id!r} is {order.state}: it cannot be {verb}",
            metadata={"state": order.state.value},
        )
    return new


# --- domain errors ---------------------------------------------------------------------------


class UserUnknown(DomainError):
    """The user never started an identification at this gateway (NOT_FOUND)."""

    REASON = "IDENTIFICATION_NOT_FOUND"

    @classmethod
    def of(cls, user_id: str) -> UserUnknown:
        return cls(
            f"user {user_id!r} has no identification at this gateway: preferences are kept "
            "for users who started one (StartIdentification)"
        )


class OrderNotFound(DomainError):
    """No restriction order with that id (NOT_FOUND)."""

    REASON = "RESTRICTION_ORDER_NOT_FOUND"


class OrderConflict(DomainError):
    """An order with that id exists with other contents (ALREADY_EXISTS)."""

    REASON = "RESTRICTION_ORDER_CONFLICT"


class OrderWrongState(DomainError):
    """The order's state does not allow this (FAILED_PRECONDITION); metadata "state"."""

    REASON = "WRONG_STATE"


class VersionAhead(DomainError):
    """A decision was asked at a policy version the store has not reached (OUT_OF_RANGE)."""

    REASON = "POLICY_VERSION_OUT_OF_RANGE"


class ChangesPruned(DomainError):
    """The change log no longer reaches back to the requested version (OUT_OF_RANGE)."""

    REASON = "POLICY_VERSION_OUT_OF_RANGE"
