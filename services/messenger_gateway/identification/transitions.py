"""The identification state machine: one table, state x event -> next state and reason, and
the one function that applies it.

    AWAITING_CODE --verification begun--> VERIFYING --answer: identified--> IDENTIFIED
          |                                   |                                  |
          +-- code expired / attempts ------->+-- no subscriber / refused /      +-- notice:
              exhausted / number changed          no operator / window passed /      terminated,
                                                  number changed / identified        ported out,
                                                  on a contract a notice ended       number changed
                                                  v                                  v
                                            NOT_COMPLETED                         REVOKED

Every rule about which state follows which is a row of TRANSITIONS, including "a termination
wins over an operator's answer" (an IDENTIFIED answer for a code whose notice was applied is the
event IDENTIFIED_ON_ENDED_CONTRACT or IDENTIFIED_ON_PORTED_NUMBER, which ends NOT_COMPLETED).
A (state, event) without a row changes nothing: the event came too late or does not apply.
The stores only compare-and-set: they write the identification `advance` returns, on condition
that the row is still as it was read (its state, verify key and attempts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from services.messenger_gateway.identification.model import Identification, Reason, State, Verdict
from services.messenger_gateway.notices.model import TerminationKind


class Event(StrEnum):
    """What can happen to an identification."""

    STARTED = "STARTED"  # the identification is created (from no state)
    NUMBER_CHANGED = "NUMBER_CHANGED"  # the user started another identification
    WRONG_CODE = "WRONG_CODE"  # a wrong one-time code, attempts left
    ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"  # a wrong one-time code, the last attempt
    CODE_EXPIRED = "CODE_EXPIRED"  # the right or a wrong code after the code's expiry
    VERIFICATION_BEGUN = "VERIFICATION_BEGUN"  # the right code: the operator is to be asked
    ANSWER_IDENTIFIED = "ANSWER_IDENTIFIED"
    ANSWER_NO_SUBSCRIBER = "ANSWER_NO_SUBSCRIBER"
    ANSWER_AGREEMENT_REFUSED = "ANSWER_AGREEMENT_REFUSED"
    ANSWER_HINT = "ANSWER_HINT"  # "no subscriber, ported to X": X is asked next
    # An IDENTIFIED answer for a code a termination notice already ended (a termination wins).
    IDENTIFIED_ON_ENDED_CONTRACT = "IDENTIFIED_ON_ENDED_CONTRACT"
    IDENTIFIED_ON_PORTED_NUMBER = "IDENTIFIED_ON_PORTED_NUMBER"
    NO_OPERATOR = "NO_OPERATOR"  # no operator this messenger can ask serves the number
    WINDOW_PASSED = "WINDOW_PASSED"  # the verification window ended without an answer
    CONTRACT_TERMINATED = "CONTRACT_TERMINATED"  # notice: the subscriber's contract ended
    PORTED_OUT = "PORTED_OUT"  # notice: the number moved to another operator


@dataclass(frozen=True, slots=True)
class Transition:
    to: State
    reason: Reason | None  # None: the reason stays what it was
    uses_attempt: bool = False  # one attempt at the code is used up


_A, _V, _I = State.AWAITING_CODE, State.VERIFYING, State.IDENTIFIED
_N, _R = State.NOT_COMPLETED, State.REVOKED

# The whole machine. The first key is the state the identification is in (None: there is none
# yet), the second what happened.
TRANSITIONS: Final[dict[tuple[State | None, Event], Transition]] = {
    (None, Event.STARTED): Transition(_A, Reason.UNSPECIFIED),
    # the one-time code
    (_A, Event.WRONG_CODE): Transition(_A, None, uses_attempt=True),
    (_A, Event.ATTEMPTS_EXHAUSTED): Transition(_N, Reason.TOO_MANY_ATTEMPTS, uses_attempt=True),
    (_A, Event.CODE_EXPIRED): Transition(_N, Reason.CODE_EXPIRED),
    (_A, Event.VERIFICATION_BEGUN): Transition(_V, None),
    # the operator's answer, within the window
    (_V, Event.ANSWER_IDENTIFIED): Transition(_I, Reason.UNSPECIFIED),
    (_V, Event.ANSWER_NO_SUBSCRIBER): Transition(_N, Reason.NO_SUBSCRIBER),
    (_V, Event.ANSWER_AGREEMENT_REFUSED): Transition(_N, Reason.AGREEMENT_REFUSED),
    (_V, Event.ANSWER_HINT): Transition(_V, None),
    (_V, Event.IDENTIFIED_ON_ENDED_CONTRACT): Transition(_N, Reason.CONTRACT_TERMINATED),
    (_V, Event.IDENTIFIED_ON_PORTED_NUMBER): Transition(_N, Reason.PORTED_OUT),
    (_V, Event.NO_OPERATOR): Transition(_N, Reason.NO_OPERATOR),
    (_V, Event.WINDOW_PASSED): Transition(_N, Reason.OPERATOR_TIMEOUT),
    # notices
    (_I, Event.CONTRACT_TERMINATED): Transition(_R, Reason.CONTRACT_TERMINATED),
    (_I, Event.PORTED_OUT): Transition(_R, Reason.PORTED_OUT),
    # a new identification of the user ends the current one
    (_A, Event.NUMBER_CHANGED): Transition(_N, Reason.NUMBER_CHANGED),
    (_V, Event.NUMBER_CHANGED): Transition(_N, Reason.NUMBER_CHANGED),
    (_I, Event.NUMBER_CHANGED): Transition(_R, Reason.NUMBER_CHANGED),
}

ENDED: Final = frozenset({State.NOT_COMPLETED, State.REVOKED})


def transition(state: State | None, event: Event) -> Transition | None:
    """The table's row for (state, event); None: the event changes nothing in that state."""
    return TRANSITIONS.get((state, event))


def advance(
    ident: Identification, event: Event, *, now: datetime, **changes: Any
) -> Identification | None:
    """ident after event at `now`, None when the table has no row for it. `changes` are the
    event's own data (the verify key and deadline a verification begins with, the operator and
    code of an answer). Leaving AWAITING_CODE clears the code's hash; entering IDENTIFIED,
    NOT_COMPLETED or REVOKED records completed_at, entering IDENTIFIED identified_at too."""
    step = TRANSITIONS.get((ident.state, event))
    if step is None:
        return None
    fields: dict[str, Any] = {
        "state": step.to,
        "reason": ident.reason if step.reason is None else step.reason,
        **changes,
    }
    if step.uses_attempt:
        fields["attempts_left"] = ident.attempts_left - 1
    if ident.state is State.AWAITING_CODE and step.to is not State.AWAITING_CODE:
        fields["code_hash"] = ""
    if not step.to.in_progress and step.to is not ident.state:
        fields["completed_at"] = now
    if step.to is State.IDENTIFIED and ident.state is not State.IDENTIFIED:
        fields["identified_at"] = now
    return replace(ident, **fields)


def wrong_code_event(ident: Identification) -> Event:
    """A wrong code uses an attempt; the last one ends the identification."""
    return Event.ATTEMPTS_EXHAUSTED if ident.attempts_left <= 1 else Event.WRONG_CODE


def answer_event(verdict: Verdict, ended: TerminationKind | None = None) -> Event:
    """The event of an operator's verdict; `ended`: a notice already ended the answer's code."""
    match verdict:
        case Verdict.IDENTIFIED if ended is TerminationKind.PORTED_OUT:
            return Event.IDENTIFIED_ON_PORTED_NUMBER
        case Verdict.IDENTIFIED if ended is TerminationKind.CONTRACT_ENDED:
            return Event.IDENTIFIED_ON_ENDED_CONTRACT
        case Verdict.IDENTIFIED:
            return Event.ANSWER_IDENTIFIED
        case Verdict.NO_SUBSCRIBER:
            return Event.ANSWER_NO_SUBSCRIBER
        case Verdict.REFUSED:
            return Event.ANSWER_AGREEMENT_REFUSED
        case Verdict.TIMED_OUT:
            return Event.WINDOW_PASSED


def notice_event(kind: TerminationKind) -> Event:
    return Event.PORTED_OUT if kind is TerminationKind.PORTED_OUT else Event.CONTRACT_TERMINATED
