"""The service layer without a network: one-time codes, state transitions, the verification
window, resuming after a restart, notices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.common.context import traced
from services.common.db import Database
from services.common.errors import InvalidInput
from services.common.phone import InvalidPhoneNumber
from services.common.ratelimit import RateLimit, RateLimited
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.codes import CodeHasher
from services.messenger_gateway.identification.model import (
    CodeExpired,
    CountryNotAllowed,
    IdentificationNotFound,
    NumberNotServed,
    OperatorAnswer,
    OperatorUnavailable,
    Reason,
    SameNumber,
    State,
    Verdict,
    WrongCode,
    WrongState,
)
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.identification.transitions import Event
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    BEELINE_PHONE,
    FAST_HASHER,
    MEGAFON_PHONE,
    UNAVAILABLE,
    UNROUTED_PHONE,
    FakeClock,
    FakeOperators,
    RecordingSms,
    hang,
    identified,
    identify,
    make_service,
    open_store,
)


@pytest.fixture
async def db_and_store(tmp_path: Path) -> AsyncIterator[tuple[Database, GatewayStore]]:
    db, store = await open_store(tmp_path / "gw.db")
    yield db, store
    await db.close()


# --- one-time codes --------------------------------------------------------------------------


def test_code_hash_matches_only_its_code_and_key_and_differs_per_salt() -> None:
    hasher = CodeHasher(key=b"k" * 32)
    first, second = hasher.hash("123456"), hasher.hash("123456")
    assert first != second
    assert "123456" not in first
    assert hasher.matches("123456", first)
    assert not hasher.matches("123457", first)
    assert not hasher.matches("123456", "garbage")
    assert not CodeHasher(key=b"x" * 32).matches("123456", first)  # the key is needed
    with pytest.raises(ValueError):
        CodeHasher(key=b"short")


async def test_start_sends_a_six_digit_code_and_stores_only_its_hash(
    db_and_store: tuple[Database, GatewayStore], tmp_path: Path
) -> None:
    db, store = db_and_store
    sms, clock = RecordingSms(), FakeClock()
    service = make_service(store, sms=sms, clock=clock, attempts=4)
    ident = await service.start_identification("user-1", "8 903 123-45-67")
    assert ident.state is State.AWAITING_CODE
    assert ident.phone_number == BEELINE_PHONE
    assert ident.operator_id == "beeline"
    assert ident.attempts_left == 4
    assert ident.code_expires_at - ident.started_at == timedelta(seconds=300)
    code = sms.code_for(ident.identification_id)
    assert len(code) == 6 and code.isdigit()
    assert code in sms.sent[0].text
    rows = await db.fetchall("SELECT * FROM identifications")
    assert len(rows) == 1
    assert all(code not in str(value) for value in tuple(rows[0]))
    assert FAST_HASHER.matches(code, rows[0]["code_hash"])


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("", "empty"),
        ("hello", "not a phone number"),
        ("+7903123", "not a valid number"),
        ("+74951234567", "not a mobile number"),
    ],
)
async def test_unusable_numbers_are_refused_and_nothing_is_stored(
    store: GatewayStore, number: str, problem: str
) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    with pytest.raises(InvalidPhoneNumber, match=problem):
        await service.start_identification("user-1", number)
    assert await store.current("user-1") is None
    assert sms.sent == []


@pytest.mark.parametrize("user_id", ["", "x" * 129, "bad\nid", "   "])
async def test_malformed_user_ids_are_refused(store: GatewayStore, user_id: str) -> None:
    with pytest.raises(InvalidInput, match="user_id"):
        await make_service(store).start_identification(user_id, BEELINE_PHONE)


async def test_an_expired_code_ends_the_identification(store: GatewayStore) -> None:
    sms, clock = RecordingSms(), FakeClock()
    service = make_service(store, sms=sms, clock=clock, otp_ttl=60)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    clock.advance(61)
    with pytest.raises(CodeExpired, match="code expired; start again"):
        await service.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=1
        )
    after = await store.get(ident.identification_id)
    assert after is not None
    assert (after.state, after.reason) == (State.NOT_COMPLETED, Reason.CODE_EXPIRED)
    with pytest.raises(WrongState, match="NOT_COMPLETED"):
        await service.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=1
        )


async def test_wrong_codes_use_up_attempts_then_end_the_identification(
    store: GatewayStore,
) -> None:
    sms, operators = RecordingSms(), FakeOperators()
    service = make_service(store, sms=sms, operators=operators, attempts=3)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    right = sms.code_for(ident.identification_id)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    with pytest.raises(WrongCode, match="2 attempts left") as first:
        await service.confirm_possession(ident.identification_id, wrong, wait=1)
    assert (first.value.reason, first.value.metadata) == ("WRONG_CODE", {"attempts_left": "2"})
    with pytest.raises(WrongCode, match="1 attempt left"):
        await service.confirm_possession(ident.identification_id, wrong, wait=1)
    with pytest.raises(WrongCode, match="no attempts left"):
        await service.confirm_possession(ident.identification_id, wrong, wait=1)
    after = await store.get(ident.identification_id)
    assert after is not None
    assert (after.state, after.reason, after.attempts_left) == (
        State.NOT_COMPLETED,
        Reason.TOO_MANY_ATTEMPTS,
        0,
    )
    with pytest.raises(WrongState):
        await service.confirm_possession(ident.identification_id, right, wait=1)
    assert operators.calls == []


async def test_a_malformed_code_is_refused_without_using_an_attempt(store: GatewayStore) -> None:
    service = make_service(store)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    with pytest.raises(InvalidInput, match="6 digits"):
        await service.confirm_possession(ident.identification_id, "12ab", wait=1)
    after = await store.get(ident.identification_id)
    assert after is not None and after.attempts_left == ident.attempts_left


async def test_unknown_identification_is_not_found(store: GatewayStore) -> None:
    with pytest.raises(IdentificationNotFound):
        await make_service(store).confirm_possession("nope", "123456", wait=1)


# --- verification ----------------------------------------------------------------------------


async def test_the_verifying_state_is_stored_before_the_operator_is_asked(
    store: GatewayStore,
) -> None:
    seen: list[tuple[State, str | None]] = []
    operators = FakeOperators()
    sms = RecordingSms()
    service = make_service(store, sms=sms, operators=operators)

    async def on_call(idempotency_key: str, phone: str) -> None:
        current = await store.current("user-1")
        assert current is not None
        seen.append((current.state, current.verify_key))

    operators.on_call = on_call
    ident_id = await identify(service, sms, "user-1")
    idempotency_key = operators.calls[0][1]
    assert seen == [(State.VERIFYING, idempotency_key)]
    done = await store.get(ident_id)
    assert done is not None
    assert done.state is State.IDENTIFIED
    assert done.operator_id == "beeline"
    assert done.identification_code == "IC-beeline-4567"
    assert done.code_hash == ""
    assert done.verification_deadline is not None and done.completed_at is not None


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [(Verdict.NO_SUBSCRIBER, Reason.NO_SUBSCRIBER), (Verdict.REFUSED, Reason.AGREEMENT_REFUSED)],
)
async def test_operator_refusals_end_not_completed(
    store: GatewayStore, verdict: Verdict, reason: Reason
) -> None:
    sms = RecordingSms()
    operators = FakeOperators(answers={BEELINE_PHONE: OperatorAnswer(verdict, "beeline")})
    service = make_service(store, sms=sms, operators=operators)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    done = await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=5
    )
    assert (done.state, done.reason) == (State.NOT_COMPLETED, reason)
    assert done.identification_code is None


async def test_an_unroutable_number_is_refused_before_a_code_is_sent(
    store: GatewayStore,
) -> None:
    sms, operators = RecordingSms(), FakeOperators()
    service = make_service(store, sms=sms, operators=operators)
    with pytest.raises(NumberNotServed):
        await service.start_identification("user-1", UNROUTED_PHONE)
    assert sms.sent == [] and operators.calls == []
    assert await store.current("user-1") is None


async def test_a_number_of_a_country_not_allowed_is_refused_before_a_code_is_sent(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    with pytest.raises(CountryNotAllowed) as e:
        await service.start_identification("user-1", "+1 202 555 0123")
    assert (e.value.reason, e.value.metadata["country"]) == ("COUNTRY_NOT_ALLOWED", "US")
    assert sms.sent == []


async def test_an_unavailable_operator_is_retried_with_the_same_idempotency_key(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    operators = FakeOperators(answers={})
    operators.answers[BEELINE_PHONE] = [
        UNAVAILABLE,
        UNAVAILABLE,
        OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-1"),
    ]
    service = make_service(store, sms=sms, operators=operators)
    await identify(service, sms, "user-1")
    assert len(operators.calls) == 3
    assert len({idempotency_key for _, idempotency_key, _ in operators.calls}) == 1
    assert len(set(operators.traces)) == 1 and operators.traces[0]  # and the same trace id


async def test_an_operator_that_asks_for_a_delay_is_not_asked_again_sooner(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    asked_at: list[float] = []

    async def note(idempotency_key: str, phone: str) -> None:
        asked_at.append(time.monotonic())

    operators = FakeOperators(answers={}, on_call=note)
    operators.answers[BEELINE_PHONE] = [
        OperatorUnavailable("beeline: RESOURCE_EXHAUSTED: overloaded", retry_after=0.5),
        OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-1"),
    ]
    service = make_service(store, sms=sms, operators=operators)
    await identify(service, sms, "user-1")
    assert len(asked_at) == 2
    assert asked_at[1] - asked_at[0] >= 0.5  # its RetryInfo, not the fast retry backoff


async def test_an_operator_that_never_answers_times_out_at_the_window(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    operators = FakeOperators(answers={BEELINE_PHONE: hang})
    service = make_service(store, sms=sms, operators=operators, window=0.3)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    done = await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=5
    )
    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)


async def test_a_late_answer_changes_nothing(store: GatewayStore) -> None:
    sms, clock = RecordingSms(), FakeClock()

    async def late(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        clock.advance(time_limit + 1)  # the answer arrives after the window
        return OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-late")

    operators = FakeOperators(answers={BEELINE_PHONE: late})
    service = make_service(store, sms=sms, operators=operators, clock=clock, window=60)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    done = await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=5
    )
    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)
    assert done.identification_code is None
    # and an answer recorded after the timeout is refused by the conditional update
    assert done.verify_key is not None
    assert not await transactions.finish_verification(
        store,
        done.identification_id,
        done.verify_key,
        event=Event.ANSWER_IDENTIFIED,
        now=clock.now(),
        identification_code="IC-later",
        within_window=False,
    )


async def test_confirm_returns_verifying_when_the_answer_is_slower_than_its_wait(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    release = asyncio.Event()

    async def slow(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        await release.wait()
        return OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-slow")

    service = make_service(store, sms=sms, operators=FakeOperators(answers={BEELINE_PHONE: slow}))
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    pending = await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
    )
    assert pending.state is State.VERIFYING
    release.set()  # the task outlives the call that started it
    await eventually(
        lambda: _state_is(store, ident.identification_id, State.IDENTIFIED), what="identified"
    )
    await service.close()


async def test_cancelling_the_confirming_call_does_not_stop_the_verification(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    release = asyncio.Event()

    async def slow(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        await release.wait()
        return OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-slow")

    operators = FakeOperators(answers={BEELINE_PHONE: slow})
    service = make_service(store, sms=sms, operators=operators)
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    call = asyncio.create_task(
        service.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=30
        )
    )
    await eventually(lambda: len(operators.calls) == 1, what="the operator asked")
    call.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await call
    release.set()
    await eventually(
        lambda: _state_is(store, ident.identification_id, State.IDENTIFIED), what="identified"
    )
    await service.close()


async def test_the_watchdog_fails_overdue_verifications_nobody_owns(store: GatewayStore) -> None:
    sms, clock = RecordingSms(), FakeClock()
    crashed = make_service(
        store, sms=sms, operators=FakeOperators(answers={BEELINE_PHONE: hang}), clock=clock
    )
    ident = await crashed.start_identification("user-1", BEELINE_PHONE)
    await crashed.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
    )
    await crashed.close()  # a peer process died mid-verification
    survivor = make_service(store, clock=clock)
    assert await survivor.expire_overdue() == 0  # still inside the window
    clock.advance(10)
    assert await survivor.expire_overdue() == 1
    done = await store.get(ident.identification_id)
    assert done is not None
    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)


async def _state_is(store: GatewayStore, identification_id: str, state: State) -> bool:
    ident = await store.get(identification_id)
    return ident is not None and ident.state is state


# --- restart ---------------------------------------------------------------------------------


async def test_a_restart_resumes_a_pending_verification_with_its_idempotency_key(
    store: GatewayStore,
) -> None:
    """...and its trace id: the request id of StartIdentification, on every call for it."""
    sms, clock = RecordingSms(), FakeClock()
    first_ops = FakeOperators(answers={BEELINE_PHONE: hang})
    first = make_service(store, sms=sms, operators=first_ops, clock=clock, window=60)
    with traced("trace-start-1"):
        ident = await first.start_identification("user-1", BEELINE_PHONE)
    with traced("trace-confirm-2"):
        await first.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
        )
    await eventually(lambda: len(first_ops.calls) == 1, what="first ask")
    await first.close()  # the process stops mid-verification
    pending = await store.get(ident.identification_id)
    assert pending is not None and pending.state is State.VERIFYING

    clock.advance(30)  # still inside the 60 s window
    second_ops = FakeOperators()
    second = make_service(store, sms=sms, operators=second_ops, clock=clock, window=60)
    assert await second.resume_pending() == (1, 0)
    await eventually(
        lambda: _state_is(store, ident.identification_id, State.IDENTIFIED), what="identified"
    )
    assert second_ops.calls[0][1] == first_ops.calls[0][1] == pending.verify_key
    assert first_ops.traces == second_ops.traces == ["trace-start-1"] == [pending.trace_id]
    await second.close()


async def test_an_identification_started_without_a_request_id_gets_a_trace_id_of_its_own(
    store: GatewayStore,
) -> None:
    sms, operators = RecordingSms(), FakeOperators()
    service = make_service(store, sms=sms, operators=operators)
    one = await service.start_identification("user-1", BEELINE_PHONE)
    two = await service.start_identification("user-2", BEELINE_PHONE)
    assert one.trace_id and two.trace_id and one.trace_id != two.trace_id
    done = await service.confirm_possession(
        one.identification_id, sms.code_for(one.identification_id), wait=5
    )
    assert done.state is State.IDENTIFIED
    assert operators.traces == [one.trace_id]
    await service.close()


async def test_a_restart_after_the_window_fails_the_verification(store: GatewayStore) -> None:
    sms, clock = RecordingSms(), FakeClock()
    first = make_service(
        store, sms=sms, operators=FakeOperators(answers={BEELINE_PHONE: hang}), clock=clock
    )
    ident = await first.start_identification("user-1", BEELINE_PHONE)
    await first.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
    )
    await first.close()

    clock.advance(3600)
    operators = FakeOperators()
    second = make_service(store, sms=sms, operators=operators, clock=clock)
    assert await second.resume_pending() == (0, 1)
    done = await store.get(ident.identification_id)
    assert done is not None
    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)
    assert operators.calls == []


# --- replacing and changing numbers ----------------------------------------------------------


async def test_starting_again_ends_the_previous_identification_and_keeps_history(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    first = await service.start_identification("user-1", BEELINE_PHONE)
    second = await service.start_identification("user-1", MEGAFON_PHONE)
    ended = await store.get(first.identification_id)
    assert ended is not None
    assert (ended.state, ended.reason) == (State.NOT_COMPLETED, Reason.NUMBER_CHANGED)
    current = await store.current("user-1")
    assert current is not None and current.identification_id == second.identification_id
    # an IDENTIFIED one is revoked when replaced
    done = await service.confirm_possession(
        second.identification_id, sms.code_for(second.identification_id), wait=5
    )
    assert done.state is State.IDENTIFIED
    await service.start_identification("user-1", BEELINE_PHONE)
    revoked = await store.get(second.identification_id)
    assert revoked is not None
    assert (revoked.state, revoked.reason) == (State.REVOKED, Reason.NUMBER_CHANGED)
    assert len(await store.history("user-1")) == 3


async def test_replacing_a_verifying_identification_ignores_its_answer(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    release = asyncio.Event()

    async def slow(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        await release.wait()
        return OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-old")

    service = make_service(store, sms=sms, operators=FakeOperators(answers={BEELINE_PHONE: slow}))
    old = await service.start_identification("user-1", BEELINE_PHONE)
    await service.confirm_possession(
        old.identification_id, sms.code_for(old.identification_id), wait=0.05
    )
    await service.start_identification("user-1", MEGAFON_PHONE)
    release.set()
    ended = await store.get(old.identification_id)
    assert ended is not None
    assert (ended.state, ended.reason) == (State.NOT_COMPLETED, Reason.NUMBER_CHANGED)
    assert ended.verify_key is not None
    assert not await transactions.finish_verification(
        store,
        old.identification_id,
        ended.verify_key,
        event=Event.ANSWER_IDENTIFIED,
        now=FakeClock().now(),
        within_window=True,
    )
    await service.close()


async def test_change_phone_number_rules(store: GatewayStore) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    with pytest.raises(IdentificationNotFound):
        await service.change_phone_number("user-1", BEELINE_PHONE)
    await identify(service, sms, "user-1")
    with pytest.raises(SameNumber):
        await service.change_phone_number("user-1", "+7 903 123 45 67")
    with pytest.raises(InvalidPhoneNumber):
        await service.change_phone_number("user-1", "+74951234567")
    new, previous = await service.change_phone_number("user-1", MEGAFON_PHONE)
    assert (previous.state, previous.reason) == (State.REVOKED, Reason.NUMBER_CHANGED)
    assert (new.state, new.phone_number) == (State.AWAITING_CODE, MEGAFON_PHONE)
    access = await service.check_access("user-1")
    assert not access.allowed and access.reason is Reason.NOT_IDENTIFIED


# --- access ----------------------------------------------------------------------------------


async def test_only_an_identified_user_may_send(store: GatewayStore) -> None:
    sms = RecordingSms()
    operators = FakeOperators(
        answers={MEGAFON_PHONE: OperatorAnswer(Verdict.NO_SUBSCRIBER, "megafon")}
    )
    service = make_service(store, sms=sms, operators=operators)
    unknown = await service.check_access("nobody")
    assert (unknown.allowed, unknown.reason, unknown.state) == (
        False,
        Reason.NOT_IDENTIFIED,
        None,
    )
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    waiting = await service.check_access("user-1")
    assert (waiting.allowed, waiting.reason, waiting.state) == (
        False,
        Reason.NOT_IDENTIFIED,
        State.AWAITING_CODE,
    )
    await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=5
    )
    allowed = await service.check_access("user-1")
    assert (allowed.allowed, allowed.reason, allowed.state) == (
        True,
        Reason.UNSPECIFIED,
        State.IDENTIFIED,
    )
    failed = await service.start_identification("user-2", MEGAFON_PHONE)
    await service.confirm_possession(
        failed.identification_id, sms.code_for(failed.identification_id), wait=5
    )
    refused = await service.check_access("user-2")
    assert (refused.allowed, refused.reason, refused.state) == (
        False,
        Reason.NO_SUBSCRIBER,
        State.NOT_COMPLETED,
    )
    assert "no subscriber" in refused.message


# --- notices ---------------------------------------------------------------------------------


def _notice(
    seq: int, event_id: str, code: str, kind: TerminationKind = TerminationKind.CONTRACT_ENDED
) -> TerminationNotice:
    return TerminationNotice(
        seq=seq,
        event_id=event_id,
        operator_id="beeline",
        messenger_id="alpha",
        identification_code=code,
        kind=kind,
    )


async def test_a_notice_revokes_the_identification_it_names_once(store: GatewayStore) -> None:
    sms = RecordingSms()
    # the second identification of user-1 is under a new contract: a new code
    renewed = OperatorAnswer(Verdict.IDENTIFIED, "beeline", "IC-beeline-new")
    operators = FakeOperators(
        answers={BEELINE_PHONE: [identified("beeline", BEELINE_PHONE), renewed]}
    )
    service = make_service(store, sms=sms, operators=operators)
    first = await identify(service, sms, "user-1")
    other = await identify(service, sms, "user-2", "+79037654321")

    result = await service.apply_notice(_notice(1, "ev-1", "IC-beeline-4567"))
    assert (result.applied, result.revoked, result.cursor) == (True, 1, 1)
    revoked = await store.get(first)
    assert revoked is not None
    assert (revoked.state, revoked.reason) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    untouched = await store.get(other)
    assert untouched is not None and untouched.state is State.IDENTIFIED

    # the user identifies again; the same event delivered again, under another seq, must not
    # revoke the new identification
    again = await identify(service, sms, "user-1")
    repeat = await service.apply_notice(_notice(2, "ev-1", "IC-beeline-4567"))
    assert (repeat.applied, repeat.revoked, repeat.cursor) == (False, 0, 2)
    current = await store.get(again)
    assert current is not None and current.state is State.IDENTIFIED
    assert await service.notice_cursor() == 2


async def test_a_port_out_notice_revokes_with_ported_out(store: GatewayStore) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    ident = await identify(service, sms, "user-1")
    await service.apply_notice(_notice(1, "ev-p", "IC-beeline-4567", TerminationKind.PORTED_OUT))
    revoked = await store.get(ident)
    assert revoked is not None
    assert (revoked.state, revoked.reason) == (State.REVOKED, Reason.PORTED_OUT)
    access = await service.check_access("user-1")
    assert (access.allowed, access.reason) == (False, Reason.PORTED_OUT)


async def test_the_cursor_never_moves_back(store: GatewayStore) -> None:
    service = make_service(store)
    await service.apply_notice(_notice(5, "ev-5", "x"))
    result = await service.apply_notice(_notice(3, "ev-3", "y"))
    assert result.cursor == 5


# --- a termination wins over any operator answer ----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (TerminationKind.CONTRACT_ENDED, Reason.CONTRACT_TERMINATED),
        (TerminationKind.PORTED_OUT, Reason.PORTED_OUT),
    ],
)
async def test_an_identified_answer_recorded_after_its_termination_does_not_identify(
    store: GatewayStore, kind: TerminationKind, reason: Reason
) -> None:
    # The operator answered IDENTIFIED, but the answer reaches the gateway only after the
    # contract's termination notice was applied (a lost reply retried, a replay after a restart):
    # the notice revoked nothing then (the identification was VERIFYING); the answer must not make
    # the user identified on the ended contract.
    sms = RecordingSms()
    asked, release = asyncio.Event(), asyncio.Event()

    async def answer_after_the_notice(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        asked.set()
        await release.wait()
        return identified("beeline", BEELINE_PHONE)

    operators = FakeOperators(answers={BEELINE_PHONE: answer_after_the_notice})
    service = make_service(store, sms=sms, operators=operators)
    started = await service.start_identification("user-1", BEELINE_PHONE)
    await service.confirm_possession(
        started.identification_id, sms.code_for(started.identification_id), wait=0
    )
    await asyncio.wait_for(asked.wait(), 5)
    code = identified("beeline", BEELINE_PHONE).identification_code
    assert (await service.apply_notice(_notice(1, "ev-1", code, kind))).revoked == 0
    release.set()

    async def ended() -> bool:
        current = await store.get(started.identification_id)
        return current is not None and current.state is not State.VERIFYING

    await eventually(ended)
    done = await store.get(started.identification_id)
    assert done is not None
    assert (done.state, done.reason) == (State.NOT_COMPLETED, reason)
    assert done.identification_code is None and done.identified_at is None
    access = await service.check_access("user-1")
    assert (access.allowed, access.reason) == (False, reason)


async def test_an_identified_answer_with_another_code_is_recorded_after_a_notice(
    store: GatewayStore,
) -> None:
    # the inbox blocks only the code the notice ended (another messenger's or contract's code
    # does not), and another messenger's notice, ignored, blocks nothing
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    await service.apply_notice(_notice(1, "ev-old", "IC-beeline-old-contract"))
    foreign = TerminationNotice(
        seq=2,
        event_id="ev-foreign",
        operator_id="beeline",
        messenger_id="beta",
        identification_code=identified("beeline", BEELINE_PHONE).identification_code,
        kind=TerminationKind.CONTRACT_ENDED,
    )
    await service.apply_notice(foreign)
    await identify(service, sms, "user-1")
    assert (await service.check_access("user-1")).allowed


async def test_concurrent_starts_with_one_key_start_one_identification(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms)
    first, second = await asyncio.gather(
        *(
            service.start_identification("user-1", BEELINE_PHONE, idempotency_key="k")
            for _ in range(2)
        )
    )
    assert first.identification_id == second.identification_id
    assert len(sms.sent) == 1
    assert len(await store.history("user-1")) == 1


@pytest.mark.parametrize("key", ["x" * 129, "bad\nkey", "   "])
async def test_malformed_idempotency_keys_are_refused(store: GatewayStore, key: str) -> None:
    with pytest.raises(InvalidInput, match="idempotency_key") as e:
        await make_service(store).start_identification("user-1", BEELINE_PHONE, idempotency_key=key)
    assert e.value.field == "idempotency_key"


async def test_retried_starts_return_the_first_even_at_the_code_limit_and_cost_no_code(
    store: GatewayStore,
) -> None:
    sms = RecordingSms()
    service = make_service(store, sms=sms, user_limit=RateLimit(per_second=1e-6, burst=2))
    first = await service.start_identification("u", BEELINE_PHONE, idempotency_key="k1")
    for _ in range(3):  # retries: the same identification, no code sent, no code counted
        again = await service.start_identification("u", BEELINE_PHONE, idempotency_key="k1")
        assert again.identification_id == first.identification_id
    second = await service.start_identification("u", BEELINE_PHONE, idempotency_key="k2")
    with pytest.raises(RateLimited):  # two codes: the limit
        await service.start_identification("u", BEELINE_PHONE, idempotency_key="k3")
    # at the limit, a retry of a call that started one still gets it
    again = await service.start_identification("u", BEELINE_PHONE, idempotency_key="k2")
    assert again.identification_id == second.identification_id
    assert [m.identification_id for m in sms.sent] == [
        first.identification_id,
        second.identification_id,
    ]
