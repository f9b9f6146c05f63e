"""The registry's use cases over a real SQLite file, without network."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from services.common.errors import InvalidInput
from services.operator_registry.domain import (
    AgreementRequired,
    AgreementState,
    ContractNotActive,
    ContractState,
    DeadlinePassed,
    IdempotencyKeyReused,
    MessengerNotFound,
    SubscriberExists,
    SubscriberNotFound,
    TerminationReason,
    Verification,
    VerificationResult,
)
from services.operator_registry.ports import RegistryStore, RegistryTx
from services.operator_registry.service import RegistryService

from .conftest import NUMBER, OTHER_NUMBER, PORTED_IN_NUMBER, START, FakeClock


async def verify(
    service: RegistryService,
    messenger: str = "alpha",
    idempotency_key: str = "req-1",
    number: str = NUMBER,
    time_remaining: float | None = None,
) -> Verification:
    return await service.verify_subscriber(
        messenger, idempotency_key, number, time_remaining=time_remaining
    )


async def recorded(store: RegistryStore) -> tuple[int, int]:
    """(bindings, verification answers) stored."""
    return await store.count_bindings(), await store.count_verifications()


@pytest.fixture
async def ready(service: RegistryService) -> RegistryService:
    """alpha and beta hold agreements; NUMBER has an active contract BEE-1."""
    await service.register_messenger("alpha", "Alpha Chat")
    await service.register_messenger("beta")
    await service.create_subscriber(NUMBER, "BEE-1")
    return service


# --- VerifySubscriber -------------------------------------------------------------------------


async def test_active_contract_is_identified_with_a_new_random_code(
    ready: RegistryService,
) -> None:
    answer = await verify(ready)
    assert answer.result is VerificationResult.IDENTIFIED
    assert answer.identification_code is not None
    assert re.fullmatch(r"[0-9a-f]{32}", answer.identification_code)
    assert answer.contract_id == "BEE-1"
    assert answer.identified_at == START


async def test_number_without_active_contract_gets_no_subscriber_and_is_recorded(
    ready: RegistryService, store: RegistryStore
) -> None:
    answer = await verify(ready, number=OTHER_NUMBER)
    assert answer.result is VerificationResult.NO_SUBSCRIBER
    assert answer.identification_code is None and answer.identified_at is None
    assert await recorded(store) == (0, 1)


async def test_repeated_idempotency_key_gets_the_stored_answer_unchanged(
    ready: RegistryService, clock: FakeClock
) -> None:
    first = await verify(ready, idempotency_key="r-identified")
    no_one = await verify(ready, idempotency_key="r-nobody", number=OTHER_NUMBER)
    clock.advance(60)
    await ready.create_subscriber(OTHER_NUMBER, "BEE-2")  # a NO_SUBSCRIBER grants nothing

    assert await verify(ready, idempotency_key="r-identified") == first
    assert await verify(ready, idempotency_key="r-nobody", number=OTHER_NUMBER) == no_one


async def test_a_repeated_request_after_the_contract_ended_is_not_identified(
    ready: RegistryService, store: RegistryStore, clock: FakeClock
) -> None:
    # The reply to the first request was lost; the contract ends (its notice may already be
    # applied at the messenger); the messenger asks again with the same idempotency key.
    first = await verify(ready, idempotency_key="r-lost")
    assert first.result is VerificationResult.IDENTIFIED
    clock.advance(60)
    await ready.terminate_contract(NUMBER)

    again = await verify(ready, idempotency_key="r-lost")
    assert again.result is VerificationResult.NO_SUBSCRIBER
    assert again.identification_code is None and again.contract_id is None
    assert (
        await verify(ready, idempotency_key="r-lost") == again
    )  # the new answer is the stored one
    assert await recorded(store) == (1, 1)

    # A new contract on the number: the same idempotency key is answered as the registry now stands
    # only when the stored answer was an IDENTIFIED that ended; a stored NO_SUBSCRIBER stays.
    await ready.create_subscriber(NUMBER, "BEE-9")
    assert await verify(ready, idempotency_key="r-lost") == again


async def test_same_contract_and_messenger_keep_their_code_across_idempotency_keys(
    ready: RegistryService, store: RegistryStore, clock: FakeClock
) -> None:
    first = await verify(ready, idempotency_key="r1")
    clock.advance(3600)
    second = await verify(ready, idempotency_key="r2")
    assert second.identification_code == first.identification_code
    assert second.identified_at == first.identified_at == START
    assert await recorded(store) == (1, 2)


async def test_each_messenger_gets_its_own_code(ready: RegistryService) -> None:
    alpha = await verify(ready, messenger="alpha")
    beta = await verify(ready, messenger="beta")
    assert alpha.identification_code != beta.identification_code


async def test_a_new_contract_on_the_number_gets_a_new_code(ready: RegistryService) -> None:
    old = await verify(ready, idempotency_key="r1")
    await ready.terminate_contract(NUMBER)
    await ready.create_subscriber(NUMBER, "BEE-2")
    new = await verify(ready, idempotency_key="r2")
    assert new.result is VerificationResult.IDENTIFIED
    assert new.contract_id == "BEE-2"
    assert new.identification_code != old.identification_code


@pytest.mark.parametrize("messenger", ["stranger", "beta"])
async def test_messenger_without_active_agreement_is_refused_and_nothing_recorded(
    ready: RegistryService, store: RegistryStore, messenger: str
) -> None:
    await ready.suspend_messenger("beta")
    with pytest.raises(AgreementRequired) as refused:
        await verify(ready, messenger=messenger)
    assert refused.value.message == (
        f"messenger {messenger} has no active identification agreement with operator beeline: "
        "ask the operator to register it"
    )
    assert await recorded(store) == (0, 0)


async def test_messenger_without_agreement_is_refused_even_for_malformed_input(
    ready: RegistryService,
) -> None:
    with pytest.raises(AgreementRequired):
        await verify(ready, messenger="stranger", idempotency_key="bad id!", number="123")


async def test_reregistered_messenger_is_answered_again(ready: RegistryService) -> None:
    await ready.suspend_messenger("alpha")
    with pytest.raises(AgreementRequired):
        await verify(ready)
    await ready.register_messenger("alpha")
    assert (await verify(ready)).result is VerificationResult.IDENTIFIED


@pytest.mark.parametrize("idempotency_key", ["", "x" * 65, "has space", "кириллица", "a.b"])
async def test_malformed_idempotency_key_is_invalid_and_changes_nothing(
    ready: RegistryService, store: RegistryStore, idempotency_key: str
) -> None:
    with pytest.raises(InvalidInput, match="idempotency_key"):
        await verify(ready, idempotency_key=idempotency_key)
    assert await recorded(store) == (0, 0)


@pytest.mark.parametrize("number", ["", "89031234567", "+7903123", "+7 903 123 45 67", "phone"])
async def test_number_not_in_e164_is_invalid_and_changes_nothing(
    ready: RegistryService, store: RegistryStore, number: str
) -> None:
    with pytest.raises(InvalidInput, match="phone_number"):
        await verify(ready, number=number)
    assert await recorded(store) == (0, 0)


async def test_idempotency_key_reused_for_another_number_is_refused(
    ready: RegistryService, store: RegistryStore
) -> None:
    await verify(ready, idempotency_key="r1")
    with pytest.raises(IdempotencyKeyReused, match="already used for another number"):
        await verify(ready, idempotency_key="r1", number=OTHER_NUMBER)
    assert await recorded(store) == (1, 1)


async def test_deadline_already_passed_commits_nothing(
    ready: RegistryService, store: RegistryStore
) -> None:
    with pytest.raises(DeadlinePassed, match="nothing was recorded"):
        await verify(ready, time_remaining=0.0)
    assert await recorded(store) == (0, 0)
    # The retry with the same idempotency key is answered normally.
    answer = await verify(ready, time_remaining=30.0)
    assert answer.result is VerificationResult.IDENTIFIED
    assert await recorded(store) == (1, 1)


async def test_deadline_passing_during_the_transaction_rolls_it_back(
    store: RegistryStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tx_class: Any
) -> None:
    monotonic = [100.0]
    service = RegistryService(
        store, operator_id="beeline", clock=clock, monotonic=lambda: monotonic[0]
    )
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "BEE-1")
    written = tx_class.add_verification

    async def slow(self: RegistryTx, answer: Any) -> None:
        await written(self, answer)  # the binding and the answer are written...
        monotonic[0] += 10.0  # ...but the caller's deadline passes before the commit

    monkeypatch.setattr(tx_class, "add_verification", slow)
    with pytest.raises(DeadlinePassed):
        await verify(service, time_remaining=5.0)
    assert await recorded(store) == (0, 0)


async def test_concurrent_verifications_each_get_their_own_outcome(
    ready: RegistryService, store: RegistryStore
) -> None:
    # Arriving together, they share transactions (group commit): one binding is made and every
    # answer carries it; a refusal among them is refused alone; a replay gets the stored answer.
    await verify(ready, idempotency_key="first")
    calls = [verify(ready, idempotency_key=f"r{i}") for i in range(20)]
    calls.insert(5, verify(ready, idempotency_key="first", number=OTHER_NUMBER))  # reused id
    calls.insert(9, verify(ready, messenger="gamma", idempotency_key="g"))  # no agreement
    calls.insert(12, verify(ready, idempotency_key="first"))  # a replay
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes.pop(12), Verification)
    assert isinstance(outcomes.pop(9), AgreementRequired)
    assert isinstance(outcomes.pop(5), IdempotencyKeyReused)
    answers = [a for a in outcomes if isinstance(a, Verification)]
    assert answers == outcomes  # every other call is answered
    assert {a.result for a in answers} == {VerificationResult.IDENTIFIED}
    assert len({a.identification_code for a in answers}) == 1
    assert await recorded(store) == (1, 21)


async def test_a_concurrent_verification_past_its_deadline_records_nothing_of_its_own(
    store: RegistryStore, clock: FakeClock, tx_class: Any
) -> None:
    monotonic = [100.0]
    service = RegistryService(
        store, operator_id="beeline", clock=clock, monotonic=lambda: monotonic[0]
    )
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "BEE-1")
    await service.create_subscriber(OTHER_NUMBER, "BEE-2")
    written = tx_class.add_verification

    async def slow(self: RegistryTx, answer: Any) -> None:
        await written(self, answer)
        if answer.idempotency_key == "late":
            monotonic[0] += 10.0  # its deadline (5 s) passes before the commit

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tx_class, "add_verification", slow)
        outcomes = await asyncio.gather(
            verify(service, idempotency_key="early", time_remaining=60.0),
            verify(service, idempotency_key="late", number=OTHER_NUMBER, time_remaining=5.0),
            verify(service, idempotency_key="other", time_remaining=None),
            return_exceptions=True,
        )
    early, late, other = outcomes
    assert isinstance(late, DeadlinePassed)
    assert isinstance(early, Verification) and isinstance(other, Verification)
    assert [a.result for a in (early, other)] == [VerificationResult.IDENTIFIED] * 2
    assert await recorded(store) == (1, 2)  # NUMBER's binding and two answers; none of "late"


# --- contracts --------------------------------------------------------------------------------


async def test_create_subscriber_normalises_the_number_and_accepts_ported_in_numbers(
    service: RegistryService,
) -> None:
    created = await service.create_subscriber("8 (903) 123-45-67", "BEE-1")
    assert created.contract.phone_number == NUMBER
    assert created.contract.state is ContractState.ACTIVE
    assert created.contract.activated_at == START
    ported = await service.create_subscriber(PORTED_IN_NUMBER, "BEE-2")
    assert ported.contract.phone_number == PORTED_IN_NUMBER


async def test_create_subscriber_refuses_a_second_active_contract_or_a_taken_contract_id(
    ready: RegistryService,
) -> None:
    with pytest.raises(SubscriberExists, match="already has an active contract"):
        await ready.create_subscriber(NUMBER, "BEE-9")
    with pytest.raises(SubscriberExists, match="already taken"):
        await ready.create_subscriber(OTHER_NUMBER, "BEE-1")


@pytest.mark.parametrize(
    ("number", "contract_id", "field"),
    [
        ("+74951234567", "BEE-2", "not a mobile number"),
        ("garbage", "BEE-2", "phone_number"),
        (OTHER_NUMBER, "", "contract_id"),
        (OTHER_NUMBER, "x" * 65, "contract_id"),
        (OTHER_NUMBER, "BEE 2", "contract_id"),
    ],
)
async def test_create_subscriber_refuses_bad_input(
    service: RegistryService, number: str, contract_id: str, field: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        await service.create_subscriber(number, contract_id)


async def test_get_subscriber_returns_the_active_contract_else_the_most_recent(
    ready: RegistryService, clock: FakeClock
) -> None:
    await verify(ready, messenger="alpha", idempotency_key="r1")
    clock.advance(10)
    await verify(ready, messenger="beta", idempotency_key="r2")
    current = await ready.get_subscriber(NUMBER)
    assert current.contract.contract_id == "BEE-1"
    assert [b.messenger_id for b in current.bindings] == ["alpha", "beta"]

    await ready.terminate_contract(NUMBER)
    ended = await ready.get_subscriber(NUMBER)
    assert ended.contract.state is ContractState.TERMINATED
    assert len(ended.bindings) == 2

    await ready.create_subscriber(NUMBER, "BEE-2")
    renewed = await ready.get_subscriber(NUMBER)
    assert renewed.contract.contract_id == "BEE-2" and renewed.bindings == ()
    await ready.terminate_contract(NUMBER)
    assert (await ready.get_subscriber(NUMBER)).contract.contract_id == "BEE-2"


async def test_get_subscriber_of_unknown_number_is_not_found(service: RegistryService) -> None:
    with pytest.raises(SubscriberNotFound):
        await service.get_subscriber(NUMBER)


async def test_terminate_queues_one_notice_per_bound_messenger(
    ready: RegistryService, clock: FakeClock
) -> None:
    await ready.register_messenger("gamma")  # holds an agreement, never bound: no notice
    alpha = await verify(ready, messenger="alpha", idempotency_key="r1")
    beta = await verify(ready, messenger="beta", idempotency_key="r2")
    clock.advance(60)

    termination = await ready.terminate_contract(NUMBER, TerminationReason.PORTED_OUT)

    assert termination.notices_queued == 2
    contract = termination.subscriber.contract
    assert contract.state is ContractState.TERMINATED
    assert contract.terminated_at == clock.now()
    assert contract.termination_reason is TerminationReason.PORTED_OUT
    notices = await ready.pending_notices(10)
    assert await ready.count_pending_notices() == 2
    assert {n.messenger_id: n.identification_code for n in notices} == {
        "alpha": alpha.identification_code,
        "beta": beta.identification_code,
    }
    assert len({n.event_id for n in notices}) == 2
    for notice in notices:
        assert notice.operator_id == "beeline"
        assert notice.phone_number == NUMBER
        assert notice.reason is TerminationReason.PORTED_OUT
        assert notice.occurred_at == clock.now()


async def test_terminate_changes_nothing_when_the_outbox_write_fails(
    ready: RegistryService, monkeypatch: pytest.MonkeyPatch, tx_class: Any
) -> None:
    await verify(ready)

    async def broken(self: RegistryTx, *args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tx_class, "add_notices", broken)
    with pytest.raises(OSError):
        await ready.terminate_contract(NUMBER)
    assert (await ready.get_subscriber(NUMBER)).contract.state is ContractState.ACTIVE
    assert await ready.count_pending_notices() == 0


async def test_terminate_without_bindings_queues_nothing(ready: RegistryService) -> None:
    termination = await ready.terminate_contract(NUMBER)
    assert termination.notices_queued == 0
    assert await ready.count_pending_notices() == 0


async def test_terminate_twice_is_a_failed_precondition(ready: RegistryService) -> None:
    await verify(ready)
    await ready.terminate_contract(NUMBER)
    with pytest.raises(ContractNotActive, match="already terminated on 2025-03-01"):
        await ready.terminate_contract(NUMBER)
    assert await ready.count_pending_notices() == 1


async def test_terminate_of_a_number_that_never_had_a_contract_is_not_found(
    ready: RegistryService,
) -> None:
    with pytest.raises(SubscriberNotFound):
        await ready.terminate_contract(OTHER_NUMBER)


# --- agreements -------------------------------------------------------------------------------


async def test_register_suspend_and_list_messengers(
    service: RegistryService, clock: FakeClock
) -> None:
    created = await service.register_messenger("alpha", " Alpha Chat ")
    assert (created.display_name, created.state) == ("Alpha Chat", AgreementState.ACTIVE)
    assert (await service.register_messenger("beta")).display_name == "beta"
    clock.advance(5)
    suspended = await service.suspend_messenger("alpha")
    assert suspended.state is AgreementState.SUSPENDED and suspended.updated_at == clock.now()
    clock.advance(5)
    again = await service.register_messenger("alpha")  # no name: the old one stays
    assert again.display_name == "Alpha Chat" and again.state is AgreementState.ACTIVE
    assert again.updated_at == clock.now()
    listed = await service.list_messengers()
    assert [(a.messenger_id, a.state) for a in listed] == [
        ("alpha", AgreementState.ACTIVE),
        ("beta", AgreementState.ACTIVE),
    ]


async def test_messenger_ids_are_validated_and_unknown_ones_not_found(
    service: RegistryService,
) -> None:
    with pytest.raises(InvalidInput, match="messenger_id"):
        await service.register_messenger("Alpha_Chat")
    with pytest.raises(MessengerNotFound):
        await service.suspend_messenger("nobody")
