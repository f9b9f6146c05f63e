"""Ported numbers at the registry: port-out (donor side), contracts for ported-in numbers
(recipient side), and "has this number changed hands since D?" with its boundaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.events.v1 import events_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.config import ConfigError, Env
from services.common.db import Database
from services.common.errors import InvalidInput
from services.common.identity import Caller, Kind, Role
from services.common.timeutil import from_timestamp, to_timestamp
from services.operator_registry.config import RegistryConfig
from services.operator_registry.domain import (
    AgreementRequired,
    ContractNotActive,
    ContractState,
    NumberHistory,
    ReassignmentStatus,
    SubscriberNotFound,
    TerminationReason,
    VerificationResult,
    decide_reassignment,
)
from services.operator_registry.ports import RegistryStore
from services.operator_registry.relay import to_event
from services.operator_registry.service import RegistryService
from services.operator_registry.store import MIGRATIONS, SqliteRegistryStore

from .conftest import NUMBER, OPERATOR, OTHER_NUMBER, START, FakeClock
from .test_config import REQUIRED
from .test_grpc_api import ALPHA, BETA, Client, start_server, status_of

US = timedelta(microseconds=1)
MEGAFON_RANGE_NUMBER = "+79261234567"  # MegaFon's range; ported in to Beeline in a test


async def verify(
    service: RegistryService, idempotency_key: str, number: str = NUMBER, messenger: str = "alpha"
) -> Any:
    return await service.verify_subscriber(messenger, idempotency_key, number, time_remaining=None)


@pytest.fixture
async def ready(service: RegistryService) -> RegistryService:
    """alpha and beta hold agreements; NUMBER has an active contract BEE-1 (activated START)."""
    await service.register_messenger("alpha")
    await service.register_messenger("beta")
    await service.create_subscriber(NUMBER, "BEE-1")
    return service


# --- PortOut (donor side) -----------------------------------------------------------------------


async def test_port_out_ends_the_contract_and_notifies_every_bound_messenger_with_the_recipient(
    ready: RegistryService, store: RegistryStore, clock: FakeClock
) -> None:
    codes = {
        m: (await verify(ready, f"r-{m}", messenger=m)).identification_code
        for m in ("alpha", "beta")
    }
    clock.advance(60)

    ported = await ready.port_out(NUMBER, "megafon")

    contract = ported.subscriber.contract
    assert contract.state is ContractState.TERMINATED
    assert contract.termination_reason is TerminationReason.PORTED_OUT
    assert contract.recipient_operator_id == "megafon"
    assert contract.terminated_at == START + timedelta(seconds=60)
    assert ported.notices_queued == 2
    notices = await store.pending_notices(10)
    assert {n.messenger_id: n.identification_code for n in notices} == codes
    for notice in notices:
        assert notice.reason is TerminationReason.PORTED_OUT
        assert notice.recipient_operator_id == "megafon"
        event = to_event(notice)
        assert event.reason == events_pb2.TERMINATION_REASON_PORTED_OUT
        assert event.recipient_operator_id == "megafon"
    kept = await ready.get_subscriber(NUMBER)
    assert kept.contract.recipient_operator_id == "megafon"


@pytest.mark.parametrize(
    ("recipient", "problem"),
    [
        (OPERATOR, "is this operator"),
        ("MegaFon", "not valid"),
        ("mega fon", "not valid"),
        ("", "empty"),
    ],
)
async def test_port_out_to_this_operator_or_an_invalid_id_changes_nothing(
    ready: RegistryService, store: RegistryStore, recipient: str, problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        await ready.port_out(NUMBER, recipient)
    assert (await ready.get_subscriber(NUMBER)).contract.state is ContractState.ACTIVE
    assert await store.count_pending_notices() == 0


async def test_port_out_of_an_unknown_or_ended_contract_is_refused(ready: RegistryService) -> None:
    with pytest.raises(SubscriberNotFound):
        await ready.port_out(OTHER_NUMBER, "megafon")
    await ready.port_out(NUMBER, "megafon")
    with pytest.raises(ContractNotActive):
        await ready.port_out(NUMBER, "mts")


async def test_a_ported_out_number_answers_no_subscriber_with_the_recipient_as_a_hint(
    ready: RegistryService,
) -> None:
    await ready.port_out(NUMBER, "megafon")

    answer = await verify(ready, "after-port")

    assert answer.result is VerificationResult.NO_SUBSCRIBER
    assert answer.recipient_operator_id == "megafon"
    assert answer.identification_code is None
    assert await verify(ready, "after-port") == answer  # a replay keeps the hint


async def test_termination_as_ported_out_without_a_recipient_gives_no_hint(
    ready: RegistryService, store: RegistryStore
) -> None:
    await verify(ready, "r1")
    ended = await ready.terminate_contract(NUMBER, TerminationReason.PORTED_OUT)
    assert ended.subscriber.contract.recipient_operator_id is None
    [notice] = await store.pending_notices(10)
    assert (notice.reason, notice.recipient_operator_id) == (TerminationReason.PORTED_OUT, "")
    answer = await verify(ready, "r2")
    assert answer.result is VerificationResult.NO_SUBSCRIBER
    assert answer.recipient_operator_id is None


async def test_only_the_most_recent_contract_gives_the_hint(ready: RegistryService) -> None:
    await ready.port_out(NUMBER, "megafon")
    await ready.create_subscriber(NUMBER, "BEE-2")  # ported back in
    back = await verify(ready, "r1")
    assert back.result is VerificationResult.IDENTIFIED
    assert back.recipient_operator_id is None
    await ready.terminate_contract(NUMBER)  # then ended normally: no hint any more
    gone = await verify(ready, "r2")
    assert (gone.result, gone.recipient_operator_id) == (VerificationResult.NO_SUBSCRIBER, None)


# --- the recipient side -------------------------------------------------------------------------


async def test_a_ported_in_number_outside_our_ranges_gets_a_contract_and_a_new_code(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The donor (MegaFon) ports a number of its own range to Beeline, which creates a contract
    for it and identifies it with a code of its own."""
    donor_db = await Database.open(tmp_path / "megafon.db", MIGRATIONS)
    recipient_db = await Database.open(tmp_path / "beeline.db", MIGRATIONS)
    try:
        donor = RegistryService(SqliteRegistryStore(donor_db), operator_id="megafon", clock=clock)
        recipient = RegistryService(
            SqliteRegistryStore(recipient_db), operator_id="beeline", clock=clock
        )
        for registry in (donor, recipient):
            await registry.register_messenger("alpha")
        await donor.create_subscriber(MEGAFON_RANGE_NUMBER, "MEG-1")
        old = await verify(donor, "r1", MEGAFON_RANGE_NUMBER)

        await donor.port_out(MEGAFON_RANGE_NUMBER, "beeline")
        created = await recipient.create_subscriber(MEGAFON_RANGE_NUMBER, "BEE-77")
        new = await verify(recipient, "r1-hint", MEGAFON_RANGE_NUMBER)

        assert created.contract.state is ContractState.ACTIVE
        assert new.result is VerificationResult.IDENTIFIED
        assert new.identification_code != old.identification_code
        assert new.contract_id == "BEE-77"
        hint = await verify(donor, "r2", MEGAFON_RANGE_NUMBER)
        assert hint.recipient_operator_id == "beeline"
    finally:
        await donor_db.close()
        await recipient_db.close()


# --- CheckNumberReassigned ----------------------------------------------------------------------


def history(activated: datetime | None, terminated: datetime | None = None) -> NumberHistory:
    return NumberHistory(last_activated_at=activated, last_terminated_at=terminated)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (START - US, ReassignmentStatus.REASSIGNED),  # activated just after since
        (START, ReassignmentStatus.NOT_REASSIGNED),  # activated exactly at since: not after
        (START + US, ReassignmentStatus.NOT_REASSIGNED),
    ],
)
def test_a_contract_beginning_after_since_is_a_reassignment(
    since: datetime, expected: ReassignmentStatus
) -> None:
    assert decide_reassignment(history(START), since, START - timedelta(days=1)) is expected


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (START - US, ReassignmentStatus.NO_DATA),
        (START, ReassignmentStatus.NOT_REASSIGNED),  # records begin exactly at since: covered
    ],
)
def test_since_before_the_records_begin_has_no_data(
    since: datetime, expected: ReassignmentStatus
) -> None:
    assert decide_reassignment(history(None), since, START) is expected
    older = history(START - timedelta(days=9))
    assert decide_reassignment(older, since, START) is expected


def test_a_known_change_is_reported_even_before_the_records_begin() -> None:
    change = START + timedelta(days=1)
    assert (
        decide_reassignment(history(None, change), START - timedelta(days=9), START)
        is ReassignmentStatus.REASSIGNED
    )


async def check(service: RegistryService, since: datetime | None, number: str = NUMBER) -> Any:
    return await service.check_number_reassigned("alpha", number, since)


async def test_reassignment_boundaries_at_termination_and_new_contract(
    ready: RegistryService, clock: FakeClock
) -> None:
    clock.advance(3600)
    identified_at = clock.now()
    await verify(ready, "r1")
    assert (await check(ready, identified_at)).status is ReassignmentStatus.NOT_REASSIGNED

    clock.advance(60)
    ported_at = clock.now()
    await ready.port_out(NUMBER, "megafon")
    assert (await check(ready, identified_at)).status is ReassignmentStatus.REASSIGNED
    assert (await check(ready, ported_at - US)).status is ReassignmentStatus.REASSIGNED
    assert (await check(ready, ported_at)).status is ReassignmentStatus.NOT_REASSIGNED

    clock.advance(60)
    new_contract_at = clock.now()
    await ready.create_subscriber(NUMBER, "BEE-2")  # the number came back under a new contract
    assert (await check(ready, new_contract_at - US)).status is ReassignmentStatus.REASSIGNED
    assert (await check(ready, new_contract_at)).status is ReassignmentStatus.NOT_REASSIGNED


async def test_records_begin_at_the_earliest_of_creation_and_first_activation(
    service: RegistryService, clock: FakeClock
) -> None:
    await service.register_messenger("alpha")
    created = await service.records_begin_at()
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)  # the database's creation
    assert (await check(service, START)).status is ReassignmentStatus.NO_DATA  # START < creation

    await service.create_subscriber(
        OTHER_NUMBER, "BEE-OLD", activated_at=START - timedelta(days=30)
    )

    answer = await check(service, START - timedelta(days=30))
    assert answer.records_begin_at == START - timedelta(days=30)
    assert answer.status is ReassignmentStatus.NOT_REASSIGNED  # for NUMBER: no contract at all
    assert (await check(service, START - timedelta(days=30) - US)).status is (
        ReassignmentStatus.NO_DATA
    )


async def test_configured_records_begin_at_wins(store: RegistryStore, clock: FakeClock) -> None:
    begin = START - timedelta(days=365)
    service = RegistryService(store, operator_id=OPERATOR, clock=clock, records_begin_at=begin)
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "BEE-1", activated_at=begin - timedelta(days=1))
    assert await service.records_begin_at() == begin  # not the earlier activation
    assert (await check(service, begin)).status is ReassignmentStatus.NOT_REASSIGNED
    assert (await check(service, begin - US)).status is ReassignmentStatus.NO_DATA


async def test_a_missing_or_future_since_is_invalid(
    ready: RegistryService, clock: FakeClock
) -> None:
    with pytest.raises(InvalidInput, match="since is missing"):
        await check(ready, None)
    with pytest.raises(InvalidInput, match="in the future"):
        await check(ready, clock.now() + US)
    assert (await check(ready, clock.now())).status is ReassignmentStatus.NOT_REASSIGNED
    with pytest.raises(InvalidInput, match=r"E\.164"):
        await check(ready, clock.now(), "8 903 123 45 67")


async def test_a_messenger_without_an_agreement_learns_nothing(ready: RegistryService) -> None:
    await ready.suspend_messenger("beta")
    for messenger, number, since in (
        ("beta", NUMBER, START),
        ("beta", "garbage", None),
        ("gamma", NUMBER, START),
    ):
        with pytest.raises(AgreementRequired):
            await ready.check_number_reassigned(messenger, number, since)


# --- configuration ------------------------------------------------------------------------------


def test_records_begin_at_is_read_from_the_environment() -> None:
    assert RegistryConfig.from_env(Env(REQUIRED)).records_begin_at is None
    config = RegistryConfig.from_env(
        Env({**REQUIRED, "IDMESH_RECORDS_BEGIN_AT": "2019-05-05T03:00:00+03:00"})
    )
    assert config.records_begin_at == datetime(2019, 5, 5, tzinfo=UTC)


@pytest.mark.parametrize(("value", "problem"), [("yesterday", "RFC 3339"), ("2019-05-05", "zone")])
def test_a_bad_records_begin_at_names_the_variable(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"IDMESH_RECORDS_BEGIN_AT: .*{problem}"):
        RegistryConfig.from_env(Env({**REQUIRED, "IDMESH_RECORDS_BEGIN_AT": value}))


# --- over gRPC ----------------------------------------------------------------------------------

ADMIN = Caller(Kind.OPERATOR, OPERATOR, Role.ADMIN)


@pytest.fixture
async def client(ready: RegistryService) -> AsyncIterator[Client]:
    server = await start_server(ready)
    assert server.port is not None
    client = Client(server.port)
    yield client
    await client.close()
    await server.stop(None)


async def test_port_out_over_grpc_returns_the_ported_contract_and_the_hint_follows(
    client: Client,
) -> None:
    await client.registry(ALPHA).VerifySubscriber(
        registry_pb2.VerifySubscriberRequest(idempotency_key="g1", phone_number=NUMBER)
    )
    reply = await client.admin().PortOut(
        registry_pb2.PortOutRequest(phone_number="8 903 123-45-67", recipient_operator_id="megafon")
    )
    assert reply.notices_queued == 1
    assert reply.subscriber.state == registry_pb2.CONTRACT_STATE_TERMINATED
    assert reply.subscriber.termination_reason == events_pb2.TERMINATION_REASON_PORTED_OUT
    assert reply.subscriber.recipient_operator_id == "megafon"
    got = await client.admin().GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=NUMBER))
    assert got.subscriber.recipient_operator_id == "megafon"
    answer = await client.registry(ALPHA).VerifySubscriber(
        registry_pb2.VerifySubscriberRequest(idempotency_key="g2", phone_number=NUMBER)
    )
    assert answer.result == registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER
    assert answer.recipient_operator_id == "megafon"


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (ALPHA, grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, "megafon", Role.ADMIN), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, OPERATOR), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_this_operators_admin_may_port_out(
    client: Client, identity: Caller | None, code: grpc.StatusCode
) -> None:
    failed = await status_of(
        client.admin(identity).PortOut(
            registry_pb2.PortOutRequest(phone_number=NUMBER, recipient_operator_id="megafon")
        )
    )
    assert failed.code() == code


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            registry_pb2.PortOutRequest(phone_number=NUMBER, recipient_operator_id=OPERATOR),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            registry_pb2.PortOutRequest(phone_number=NUMBER, recipient_operator_id="Mega Fon"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            registry_pb2.PortOutRequest(phone_number=OTHER_NUMBER, recipient_operator_id="mts"),
            grpc.StatusCode.NOT_FOUND,
        ),
    ],
)
async def test_port_out_refusals_over_grpc(
    client: Client, request_: registry_pb2.PortOutRequest, code: grpc.StatusCode
) -> None:
    failed = await status_of(client.admin().PortOut(request_))
    assert failed.code() == code
    assert failed.details()


async def test_port_out_of_an_ended_contract_is_failed_precondition(client: Client) -> None:
    await client.admin().TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=NUMBER)
    )
    failed = await status_of(
        client.admin().PortOut(
            registry_pb2.PortOutRequest(phone_number=NUMBER, recipient_operator_id="megafon")
        )
    )
    assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_check_number_reassigned_over_grpc(client: Client, clock: FakeClock) -> None:
    async def ask(since: datetime | None, identity: Caller = ALPHA) -> Any:
        request = registry_pb2.CheckNumberReassignedRequest(phone_number=NUMBER)
        if since is not None:
            request.since.CopyFrom(to_timestamp(since))
        return await client.registry(identity).CheckNumberReassigned(request)

    clock.advance(10)
    reply = await ask(START)
    assert reply.status == registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED
    assert from_timestamp(reply.records_begin_at) == START  # the first contract's activation
    assert (await ask(START - US)).status == registry_pb2.REASSIGNMENT_STATUS_REASSIGNED
    await client.admin().PortOut(
        registry_pb2.PortOutRequest(phone_number=NUMBER, recipient_operator_id="megafon")
    )
    assert (await ask(START)).status == registry_pb2.REASSIGNMENT_STATUS_REASSIGNED
    assert (await ask(clock.now())).status == registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED

    for since, code in (
        (None, grpc.StatusCode.INVALID_ARGUMENT),
        (clock.now() + timedelta(seconds=1), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        assert (await status_of(ask(since))).code() == code
    await client.admin().SuspendMessenger(registry_pb2.SuspendMessengerRequest(messenger_id="beta"))
    refused = await status_of(ask(START, BETA))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert NUMBER not in (refused.details() or "")


async def test_a_timestamp_with_nanoseconds_is_compared_at_microseconds(
    client: Client, clock: FakeClock
) -> None:
    since = Timestamp()
    since.FromDatetime(START)
    since.nanos += 999  # below the microsecond the registry stores
    reply = await client.registry(ALPHA).CheckNumberReassigned(
        registry_pb2.CheckNumberReassignedRequest(phone_number=NUMBER, since=since)
    )
    assert reply.status == registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED
