"""The identification state machine as a decision table: every (state, event) pair, and what
applying each row does to an identification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.messenger_gateway.identification.model import Identification, Reason, State, Verdict
from services.messenger_gateway.identification.transitions import (
    TRANSITIONS,
    Event,
    advance,
    answer_event,
    notice_event,
    transition,
    wrong_code_event,
)
from services.messenger_gateway.notices.model import TerminationKind

A, V, ID, N, R = (
    State.AWAITING_CODE,
    State.VERIFYING,
    State.IDENTIFIED,
    State.NOT_COMPLETED,
    State.REVOKED,
)
_: None = None  # no row: the event changes nothing in that state
KEEP = "keep"  # the reason stays what it was

# One line per event: the outcome (next state, reason) from no identification, AWAITING_CODE,
# VERIFYING, IDENTIFIED, NOT_COMPLETED, REVOKED. Written out by hand from the rules (the law's
# flow and DESIGN.md's promises), not derived from the table under test.
COLUMNS: tuple[State | None, ...] = (None, A, V, ID, N, R)
EXPECTED: dict[Event, tuple[tuple[State, Reason | str] | None, ...]] = {
    Event.STARTED: ((A, Reason.UNSPECIFIED), _, _, _, _, _),
    Event.NUMBER_CHANGED: (
        _,
        (N, Reason.NUMBER_CHANGED),
        (N, Reason.NUMBER_CHANGED),
        (R, Reason.NUMBER_CHANGED),
        _,
        _,
    ),
    Event.WRONG_CODE: (_, (A, KEEP), _, _, _, _),
    Event.ATTEMPTS_EXHAUSTED: (_, (N, Reason.TOO_MANY_ATTEMPTS), _, _, _, _),
    Event.CODE_EXPIRED: (_, (N, Reason.CODE_EXPIRED), _, _, _, _),
    Event.VERIFICATION_BEGUN: (_, (V, KEEP), _, _, _, _),
    Event.ANSWER_IDENTIFIED: (_, _, (ID, Reason.UNSPECIFIED), _, _, _),
    Event.ANSWER_NO_SUBSCRIBER: (_, _, (N, Reason.NO_SUBSCRIBER), _, _, _),
    Event.ANSWER_AGREEMENT_REFUSED: (_, _, (N, Reason.AGREEMENT_REFUSED), _, _, _),
    Event.ANSWER_HINT: (_, _, (V, KEEP), _, _, _),
    # a termination wins over an operator's answer
    Event.IDENTIFIED_ON_ENDED_CONTRACT: (_, _, (N, Reason.CONTRACT_TERMINATED), _, _, _),
    Event.IDENTIFIED_ON_PORTED_NUMBER: (_, _, (N, Reason.PORTED_OUT), _, _, _),
    Event.NO_OPERATOR: (_, _, (N, Reason.NO_OPERATOR), _, _, _),
    Event.WINDOW_PASSED: (_, _, (N, Reason.OPERATOR_TIMEOUT), _, _, _),
    Event.CONTRACT_TERMINATED: (_, _, _, (R, Reason.CONTRACT_TERMINATED), _, _),
    Event.PORTED_OUT: (_, _, _, (R, Reason.PORTED_OUT), _, _),
}

PAIRS = [(state, event) for event in Event for state in COLUMNS]
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_the_expected_table_names_every_event() -> None:
    assert set(EXPECTED) == set(Event)


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=lambda v: str(v))
def test_each_state_and_event_has_the_expected_outcome(state: State | None, event: Event) -> None:
    expected = EXPECTED[event][COLUMNS.index(state)]
    step = transition(state, event)
    if expected is None:
        assert step is None
        return
    assert step is not None
    to, reason = expected
    assert step.to is to
    assert step.reason is (None if reason == KEEP else reason)


def _ident(state: State, **changes: object) -> Identification:
    fields: dict[str, object] = {
        "identification_id": "id-1",
        "user_id": "u",
        "phone_number": "+79031234567",
        "state": state,
        "reason": Reason.UNSPECIFIED,
        "operator_id": "beeline",
        "started_at": NOW - timedelta(minutes=1),
        "code_expires_at": NOW + timedelta(minutes=4),
        "attempts_left": 3,
        "code_hash": "hmac-sha256$aa$bb" if state is State.AWAITING_CODE else "",
        **changes,
    }
    return Identification(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "event"), [p for p in PAIRS if p[0] is not None], ids=lambda v: str(v)
)
def test_applying_a_row_sets_what_the_table_says_and_records_the_times(
    state: State, event: Event
) -> None:
    before = _ident(state)
    after = advance(before, event, now=NOW)
    step = TRANSITIONS.get((state, event))
    if step is None:
        assert after is None
        return
    assert after is not None
    assert after.state is step.to
    assert after.reason is (before.reason if step.reason is None else step.reason)
    assert after.attempts_left == before.attempts_left - (1 if step.uses_attempt else 0)
    if state is State.AWAITING_CODE and step.to is not State.AWAITING_CODE:
        assert after.code_hash == ""  # the code is used up
    ended = not step.to.in_progress and step.to is not state
    assert after.completed_at == (NOW if ended else None)
    entered_identified = step.to is State.IDENTIFIED and state is not State.IDENTIFIED
    assert after.identified_at == (NOW if entered_identified else None)


def test_an_events_own_data_is_applied_with_it() -> None:
    deadline = NOW + timedelta(minutes=20)
    verifying = advance(
        _ident(A), Event.VERIFICATION_BEGUN, now=NOW, verify_key="k", verification_deadline=deadline
    )
    assert verifying is not None
    assert (verifying.state, verifying.verify_key, verifying.code_hash) == (V, "k", "")
    identified = advance(verifying, Event.ANSWER_IDENTIFIED, now=NOW, identification_code="IC")
    assert identified is not None
    assert (identified.state, identified.identification_code) == (ID, "IC")


def test_the_last_wrong_code_ends_the_identification() -> None:
    assert wrong_code_event(_ident(A, attempts_left=3)) is Event.WRONG_CODE
    assert wrong_code_event(_ident(A, attempts_left=1)) is Event.ATTEMPTS_EXHAUSTED
    last = advance(_ident(A, attempts_left=1), Event.ATTEMPTS_EXHAUSTED, now=NOW)
    assert last is not None
    assert (last.state, last.reason, last.attempts_left) == (N, Reason.TOO_MANY_ATTEMPTS, 0)


@pytest.mark.parametrize(
    ("verdict", "ended", "event"),
    [
        (Verdict.IDENTIFIED, None, Event.ANSWER_IDENTIFIED),
        (Verdict.IDENTIFIED, TerminationKind.CONTRACT_ENDED, Event.IDENTIFIED_ON_ENDED_CONTRACT),
        (Verdict.IDENTIFIED, TerminationKind.PORTED_OUT, Event.IDENTIFIED_ON_PORTED_NUMBER),
        (Verdict.NO_SUBSCRIBER, None, Event.ANSWER_NO_SUBSCRIBER),
        (Verdict.REFUSED, None, Event.ANSWER_AGREEMENT_REFUSED),
        (Verdict.TIMED_OUT, None, Event.WINDOW_PASSED),
    ],
)
def test_an_operators_verdict_is_its_event_and_a_termination_wins(
    verdict: Verdict, ended: TerminationKind | None, event: Event
) -> None:
    assert answer_event(verdict, ended) is event


def test_a_notice_revokes_only_an_identified_identification() -> None:
    for kind, reason in (
        (TerminationKind.CONTRACT_ENDED, Reason.CONTRACT_TERMINATED),
        (TerminationKind.PORTED_OUT, Reason.PORTED_OUT),
    ):
        event = notice_event(kind)
        revoked = advance(_ident(ID), event, now=NOW)
        assert revoked is not None and (revoked.state, revoked.reason) == (R, reason)
        for state in (A, V, N, R):
            assert advance(_ident(state), event, now=NOW) is None
