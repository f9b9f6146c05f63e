"""Domain rules without any network: batch validation, cursor range, acks, the waiter hub."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.notifier.domain import (
    AckBeyondHead,
    ContractTerminated,
    CursorOutOfRange,
    DeliveryPolicy,
    InvalidEvent,
    NotYourMessenger,
    OperatorMismatch,
    SequenceState,
    TerminationReason,
    require_own_messenger,
    validate_batch,
)
from services.notifier.service import Hub
from tests.notifier.support import T0


def valid(**changes: object) -> ContractTerminated:
    base = ContractTerminated(
        event_id="7f1c2f1e-0000-4000-8000-000000000001",
        operator_id="beeline",
        messenger_id="alpha",
        phone_number="+79031234567",
        identification_code="c0de",
        reason=1,
        occurred_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_valid_batch_is_returned_with_typed_reasons() -> None:
    [checked] = validate_batch("beeline", [valid(reason=2, recipient_operator_id="megafon")])
    assert checked.reason is TerminationReason.PORTED_OUT


def test_ownership_is_checked_before_anything_else_in_the_batch() -> None:
    with pytest.raises(OperatorMismatch, match=r"events\[1\]\.operator_id"):
        validate_batch("beeline", [valid(event_id=""), valid(operator_id="mts")])


def test_validation_names_the_first_bad_index_and_field() -> None:
    with pytest.raises(InvalidEvent, match=r"events\[1\]\.occurred_at"):
        validate_batch("beeline", [valid(), valid(occurred_at=None), valid(reason=0)])


def test_unknown_reason_values_are_refused() -> None:
    with pytest.raises(InvalidEvent, match=r"events\[0\]\.reason is 7"):
        validate_batch("beeline", [valid(reason=7)])


def test_the_valid_cursors_are_floor_minus_one_to_head() -> None:
    state = SequenceState("alpha", head_seq=10, acked_seq=6, floor_seq=5)
    for cursor in (4, 7, 10):
        state.check_cursor(cursor)
    for cursor in (3, 11):
        with pytest.raises(CursorOutOfRange) as e:
            state.check_cursor(cursor)
        assert e.value.trailers == {"idmesh-floor-seq": "5", "idmesh-head-seq": "10"}


def test_acks_are_bounded_by_the_head() -> None:
    state = SequenceState("alpha", head_seq=3)
    state.check_ack(3)
    with pytest.raises(AckBeyondHead):
        state.check_ack(4)


def test_a_messenger_may_name_only_itself() -> None:
    assert require_own_messenger("alpha", "alpha") == "alpha"
    with pytest.raises(NotYourMessenger):
        require_own_messenger("beta", "alpha")


def test_the_sla_warning_comes_before_the_limit_and_retention_is_at_least_a_week() -> None:
    with pytest.raises(ValueError):
        DeliveryPolicy(sla_warning=timedelta(hours=25))
    with pytest.raises(ValueError):
        DeliveryPolicy(retention=timedelta(days=6))


async def test_hub_wakes_only_the_messengers_waiters_and_forgets_them_on_exit() -> None:
    hub = Hub()
    with hub.watch("alpha") as alpha, hub.watch("beta") as beta:
        assert hub.waiter_count() == 2
        hub.notify(["alpha"])
        assert alpha.is_set() and not beta.is_set()
        hub.close()
        assert beta.is_set()
    assert hub.watched_messengers() == []
