"""The registry over gRPC: a real GrpcServer on port 0, stubs with caller identities."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.events.v1 import events_pb2
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from structlog.testing import capture_logs

from services.common.channels import open_channel
from services.common.context import traced
from services.common.identity import Caller, Kind, Role
from services.common.server import GrpcServer
from services.common.status import error_details
from services.common.timeutil import from_timestamp
from services.operator_registry.grpc_api import ERRORS
from services.operator_registry.main import add_servicers
from services.operator_registry.ports import RegistryStore, RegistryTx
from services.operator_registry.service import RegistryService

from .conftest import NUMBER, OPERATOR, OTHER_NUMBER, START, FakeClock

ALPHA = Caller(Kind.MESSENGER, "alpha")
BETA = Caller(Kind.MESSENGER, "beta")
ADMIN = Caller(Kind.OPERATOR, OPERATOR, Role.ADMIN)

Stubs = Callable[[Caller | None], Awaitable[Any]]


async def start_server(service: RegistryService) -> GrpcServer:
    server = GrpcServer(name="operator_registry", bind="127.0.0.1:0", errors=ERRORS)
    add_servicers(server, service)
    await server.start()
    return server


class Client:
    """Stubs per identity, over channels closed at the end of the test."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._channels: list[grpc.aio.Channel] = []

    def _channel(self, identity: Caller | None) -> grpc.aio.Channel:
        channel = open_channel(f"127.0.0.1:{self._port}", identity=identity)
        self._channels.append(channel)
        return channel

    def registry(self, identity: Caller | None) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self._channel(identity))

    def admin(self, identity: Caller | None = ADMIN) -> registry_pb2_grpc.RegistryAdminServiceStub:
        return registry_pb2_grpc.RegistryAdminServiceStub(self._channel(identity))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@pytest.fixture
async def client(service: RegistryService) -> AsyncIterator[Client]:
    server = await start_server(service)
    assert server.port is not None
    client = Client(server.port)
    admin = client.admin()
    await admin.RegisterMessenger(registry_pb2.RegisterMessengerRequest(messenger_id="alpha"))
    await admin.RegisterMessenger(registry_pb2.RegisterMessengerRequest(messenger_id="beta"))
    await admin.CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(phone_number=NUMBER, contract_id="BEE-1")
    )
    yield client
    await client.close()
    await server.stop(None)


_idempotency_keys = (f"req-{n}" for n in itertools.count())


async def verify(
    client: Client, identity: Caller | None = ALPHA, number: str = NUMBER, idempotency_key: str = ""
) -> registry_pb2.VerifySubscriberResponse:
    reply: registry_pb2.VerifySubscriberResponse = await client.registry(identity).VerifySubscriber(
        registry_pb2.VerifySubscriberRequest(
            idempotency_key=idempotency_key or next(_idempotency_keys), phone_number=number
        ),
        timeout=10,
    )
    return reply


async def status_of(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


# --- RegistryService --------------------------------------------------------------------------


async def test_the_verification_key_answers_to_both_its_names(client: Client) -> None:
    """request_id (field 1, the first published name) and idempotency_key (field 3) name one key:
    a repeat under either name returns the first answer; two different values are refused and
    audited; the audit record carries the key under both names."""
    stub = client.registry(ALPHA)
    Request = registry_pb2.VerifySubscriberRequest
    first = await stub.VerifySubscriber(Request(request_id="k-1", phone_number=NUMBER))
    assert first.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
    for again in (
        Request(idempotency_key="k-1", phone_number=NUMBER),
        Request(request_id="k-1", idempotency_key="k-1", phone_number=NUMBER),
    ):
        reply = await stub.VerifySubscriber(again)
        assert (reply.identification_code, reply.identified_at) == (
            first.identification_code,
            first.identified_at,
        )
    refused = await status_of(
        stub.VerifySubscriber(Request(request_id="k-2", idempotency_key="k-3", phone_number=NUMBER))
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key 'k-3' differs from request_id 'k-2'" in (refused.details() or "")
    assert error_details(refused).reason == "INVALID_FIELD"

    audit = await client.admin().ListAuditRecords(registry_pb2.ListAuditRecordsRequest())
    assert [(r.request_id, r.idempotency_key, r.outcome) for r in audit.records] == [
        ("k-2", "k-2", "INVALID_REQUEST"),
        ("k-1", "k-1", "IDENTIFIED"),
        ("k-1", "k-1", "IDENTIFIED"),
        ("k-1", "k-1", "IDENTIFIED"),
    ]


async def test_verify_identifies_the_subscriber_with_a_code(client: Client) -> None:
    reply = await verify(client, idempotency_key="r1")
    assert reply.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
    assert len(reply.identification_code) == 32
    assert reply.operator_id == OPERATOR
    assert from_timestamp(reply.identified_at) == START
    assert reply.recipient_operator_id == ""
    assert await verify(client, idempotency_key="r1") == reply
    again = await verify(client, idempotency_key="r2")
    assert again.identification_code == reply.identification_code
    other = await verify(client, identity=BETA)
    assert other.identification_code != reply.identification_code


async def test_verify_answers_no_subscriber_without_a_code(client: Client) -> None:
    reply = await verify(client, number=OTHER_NUMBER)
    assert reply.result == registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER
    assert reply.identification_code == ""
    assert not reply.HasField("identified_at")
    assert reply.operator_id == OPERATOR


async def test_verify_by_a_messenger_without_agreement_is_permission_denied(
    client: Client, store: RegistryStore
) -> None:
    stranger = Caller(Kind.MESSENGER, "stranger")
    error = await status_of(verify(client, identity=stranger))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        "messenger stranger has no active identification agreement with operator beeline: "
        "ask the operator to register it"
    )
    await client.admin().SuspendMessenger(registry_pb2.SuspendMessengerRequest(messenger_id="beta"))
    error = await status_of(verify(client, identity=BETA))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "+7" not in (error.details() or "")
    assert await store.count_bindings() == 0


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (Caller(Kind.MESSENGER, "alpha", Role.FRONTEND), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, OPERATOR), grpc.StatusCode.PERMISSION_DENIED),
        (ADMIN, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_verify_requires_a_messenger_service_identity(
    client: Client, identity: Caller | None, code: grpc.StatusCode
) -> None:
    assert (await status_of(verify(client, identity=identity))).code() == code


@pytest.mark.parametrize(
    ("idempotency_key", "number"),
    [("bad id", NUMBER), ("x" * 65, NUMBER), ("ok", "89031234567"), ("ok", "+7903")],
)
async def test_verify_with_malformed_input_is_invalid_argument_and_records_nothing(
    client: Client, store: RegistryStore, idempotency_key: str, number: str
) -> None:
    error = await status_of(verify(client, idempotency_key=idempotency_key, number=number))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await store.count_verifications() == 0


async def test_verify_past_the_deadline_is_deadline_exceeded_and_records_nothing(
    store: RegistryStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tx_class: Any
) -> None:
    # The server's clock jumps past the caller's deadline while the answer is prepared.
    monotonic = [0.0]
    service = RegistryService(
        store, operator_id=OPERATOR, clock=clock, monotonic=lambda: monotonic[0]
    )
    written = tx_class.add_verification

    async def slow(self: RegistryTx, answer: Any) -> None:
        await written(self, answer)
        monotonic[0] += 1_000.0

    monkeypatch.setattr(tx_class, "add_verification", slow)
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "BEE-1")
    server = await start_server(service)
    assert server.port is not None
    client = Client(server.port)
    try:
        error = await status_of(verify(client))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await store.count_bindings() == 0
        assert await store.count_verifications() == 0
    finally:
        await client.close()
        await server.stop(None)


# --- RegistryAdminService ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (Caller(Kind.OPERATOR, "megafon", Role.ADMIN), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, OPERATOR), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.MESSENGER, "alpha", Role.ADMIN), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_admin_calls_require_this_operators_admin_identity(
    client: Client, identity: Caller | None, code: grpc.StatusCode
) -> None:
    admin = client.admin(identity)
    calls = [
        admin.ListMessengers(registry_pb2.ListMessengersRequest()),
        admin.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=NUMBER)),
        admin.TerminateContract(registry_pb2.TerminateContractRequest(phone_number=NUMBER)),
    ]
    for call in calls:
        assert (await status_of(call)).code() == code
    reply = await client.admin().GetSubscriber(
        registry_pb2.GetSubscriberRequest(phone_number=NUMBER)
    )
    assert reply.subscriber.state == registry_pb2.CONTRACT_STATE_ACTIVE


async def test_create_and_get_subscriber(client: Client) -> None:
    admin = client.admin()
    activated = Timestamp(seconds=1_705_276_800)  # 2024-01-15T00:00:00Z
    created = await admin.CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(
            phone_number="8 905 111-22-33", contract_id="BEE-2", activated_at=activated
        )
    )
    assert created.subscriber.phone_number == OTHER_NUMBER
    assert created.subscriber.activated_at == activated
    assert not created.subscriber.HasField("terminated_at")
    assert created.subscriber.termination_reason == events_pb2.TERMINATION_REASON_UNSPECIFIED

    code = (await verify(client, number=OTHER_NUMBER)).identification_code
    got = await admin.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=OTHER_NUMBER))
    assert got.subscriber.contract_id == "BEE-2"
    assert [(b.messenger_id, b.identification_code) for b in got.subscriber.bindings] == [
        ("alpha", code)
    ]


async def test_create_subscriber_conflicts_are_already_exists(client: Client) -> None:
    admin = client.admin()
    for number, contract_id in [(NUMBER, "BEE-9"), (OTHER_NUMBER, "BEE-1")]:
        error = await status_of(
            admin.CreateSubscriber(
                registry_pb2.CreateSubscriberRequest(phone_number=number, contract_id=contract_id)
            )
        )
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_admin_bad_input_is_invalid_argument(client: Client) -> None:
    admin = client.admin()
    calls = [
        admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number="+74951234567", contract_id="X")
        ),
        admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="")
        ),
        admin.RegisterMessenger(registry_pb2.RegisterMessengerRequest(messenger_id="")),
        admin.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number="nope")),
        admin.TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=NUMBER, reason=99)  # type: ignore[arg-type]
        ),
    ]
    for call in calls:
        assert (await status_of(call)).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_number_and_messenger_are_not_found(client: Client) -> None:
    admin = client.admin()
    calls = [
        admin.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=OTHER_NUMBER)),
        admin.TerminateContract(registry_pb2.TerminateContractRequest(phone_number=OTHER_NUMBER)),
        admin.SuspendMessenger(registry_pb2.SuspendMessengerRequest(messenger_id="nobody")),
    ]
    for call in calls:
        assert (await status_of(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_terminate_queues_notices_and_a_second_terminate_fails(
    client: Client, service: RegistryService
) -> None:
    await verify(client, identity=ALPHA)
    await verify(client, identity=BETA)
    admin = client.admin()
    reply = await admin.TerminateContract(
        registry_pb2.TerminateContractRequest(
            phone_number=NUMBER, reason=events_pb2.TERMINATION_REASON_PORTED_OUT
        )
    )
    assert reply.notices_queued == 2
    assert reply.subscriber.state == registry_pb2.CONTRACT_STATE_TERMINATED
    assert reply.subscriber.termination_reason == events_pb2.TERMINATION_REASON_PORTED_OUT
    assert len(reply.subscriber.bindings) == 2
    assert await service.count_pending_notices() == 2

    error = await status_of(
        admin.TerminateContract(registry_pb2.TerminateContractRequest(phone_number=NUMBER))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already terminated on" in (error.details() or "")
    after = await verify(client)
    assert after.result == registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER


async def test_terminate_defaults_to_contract_ended(client: Client) -> None:
    reply = await client.admin().TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=NUMBER)
    )
    assert reply.subscriber.termination_reason == events_pb2.TERMINATION_REASON_CONTRACT_ENDED
    assert reply.notices_queued == 0


async def test_register_suspend_and_list_messengers(client: Client) -> None:
    admin = client.admin()
    registered = await admin.RegisterMessenger(
        registry_pb2.RegisterMessengerRequest(messenger_id="gamma", display_name="Gamma")
    )
    assert registered.agreement.state == registry_pb2.AGREEMENT_STATE_ACTIVE
    suspended = await admin.SuspendMessenger(
        registry_pb2.SuspendMessengerRequest(messenger_id="gamma")
    )
    assert suspended.agreement.state == registry_pb2.AGREEMENT_STATE_SUSPENDED
    listed = await admin.ListMessengers(registry_pb2.ListMessengersRequest())
    assert [(a.messenger_id, a.display_name, a.state) for a in listed.agreements] == [
        ("alpha", "alpha", registry_pb2.AGREEMENT_STATE_ACTIVE),
        ("beta", "beta", registry_pb2.AGREEMENT_STATE_ACTIVE),
        ("gamma", "Gamma", registry_pb2.AGREEMENT_STATE_SUSPENDED),
    ]


async def test_verify_without_a_deadline_is_answered(client: Client) -> None:
    reply = await client.registry(ALPHA).VerifySubscriber(
        registry_pb2.VerifySubscriberRequest(idempotency_key="no-deadline", phone_number=NUMBER)
    )
    assert reply.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED


# --- parked notices ---------------------------------------------------------------------------


async def test_parked_notices_are_listed_masked_in_pages_and_retried(
    client: Client, service: RegistryService
) -> None:
    admin = client.admin()
    await verify(client, ALPHA)
    await verify(client, BETA)
    with traced("trace-ended-by-ops"):
        await admin.TerminateContract(registry_pb2.TerminateContractRequest(phone_number=NUMBER))
    queued = await service.pending_notices(10)
    for notice in queued:
        await service.park_notice(notice.event_id, "PERMISSION_DENIED", "not yours")
    assert await service.count_pending_notices() == 0

    first = await admin.ListParkedNotices(registry_pb2.ListParkedNoticesRequest(page_size=1))
    rest = await admin.ListParkedNotices(
        registry_pb2.ListParkedNoticesRequest(page_size=1, page_token=first.next_page_token)
    )
    last = await admin.ListParkedNotices(
        registry_pb2.ListParkedNoticesRequest(page_size=1, page_token=rest.next_page_token)
    )
    listed = [*first.notices, *rest.notices]
    assert [n.event_id for n in listed] == [n.event_id for n in queued]
    assert not last.notices and last.next_page_token == ""
    for parked in listed:
        assert parked.masked_phone_number == "+7903*****67"
        assert (parked.status, parked.message) == ("PERMISSION_DENIED", "not yours")
        assert parked.trace_id == "trace-ended-by-ops"
        assert parked.reason == events_pb2.TERMINATION_REASON_CONTRACT_ENDED
    assert NUMBER not in str(listed)

    one = await admin.RetryParkedNotices(
        registry_pb2.RetryParkedNoticesRequest(event_ids=[listed[0].event_id, "unknown"])
    )
    assert one.requeued == 1
    assert [n.event_id for n in await service.pending_notices(10)] == [listed[0].event_id]
    every = await admin.RetryParkedNotices(registry_pb2.RetryParkedNoticesRequest())
    assert every.requeued == 1
    assert await service.count_parked_notices() == 0


@pytest.mark.parametrize(
    "request_",
    [
        registry_pb2.ListParkedNoticesRequest(page_size=1001),
        registry_pb2.ListParkedNoticesRequest(page_size=-1),
        registry_pb2.ListParkedNoticesRequest(page_token="x" * 100),
    ],
)
async def test_a_bad_parked_listing_is_invalid_naming_the_field(
    client: Client, request_: registry_pb2.ListParkedNoticesRequest
) -> None:
    error = await status_of(client.admin().ListParkedNotices(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_" in (error.details() or "")
    assert len(error.details() or "") < 200


@pytest.mark.parametrize(
    ("event_ids", "field"),
    [([f"e{i}" for i in range(1001)], "event_ids"), (["ok", "x" * 65], "event_ids[1]")],
)
async def test_retrying_too_many_or_too_long_event_ids_is_invalid_naming_the_field(
    client: Client, service: RegistryService, event_ids: list[str], field: str
) -> None:
    request = registry_pb2.RetryParkedNoticesRequest(event_ids=event_ids)
    error = await status_of(client.admin().RetryParkedNotices(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error_details(error).reason, error_details(error).metadata["field"]) == (
        "FIELD_TOO_LONG",
        field,
    )


# --- TerminateContracts (bulk) -------------------------------------------------------------


def _rows(
    *rows: tuple[int, str, events_pb2.TerminationReason, str],
) -> registry_pb2.TerminateContractsRequest:
    return registry_pb2.TerminateContractsRequest(
        rows=[
            registry_pb2.TerminationRow(
                line=line, phone_number=phone, reason=reason, recipient_operator_id=recipient
            )
            for line, phone, reason, recipient in rows
        ]
    )


async def _stream(*requests: registry_pb2.TerminateContractsRequest) -> Any:
    for request in requests:
        yield request


async def test_bulk_termination_ends_each_row_or_says_why_and_queues_the_notices(
    client: Client, service: RegistryService
) -> None:
    admin = client.admin()
    await verify(client, identity=ALPHA)
    await verify(client, identity=BETA)
    ported = "+79051112244"
    await admin.CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(phone_number=ported, contract_id="BEE-2")
    )
    await verify(client, identity=ALPHA, number=ported)
    unspecified = events_pb2.TERMINATION_REASON_UNSPECIFIED
    ported_out = events_pb2.TERMINATION_REASON_PORTED_OUT
    reply = await admin.TerminateContracts(
        _stream(
            _rows(
                (2, NUMBER, unspecified, ""),  # ends: 2 notices
                (3, "+79059999999", unspecified, ""),  # no contract
                (4, NUMBER, unspecified, ""),  # ended by line 2 already
            ),
            _rows(
                (5, "not a number", unspecified, ""),
                (6, ported, ported_out, ""),  # a port-out needs the recipient
                (7, ported, cast(events_pb2.TerminationReason, 99), ""),  # an unknown reason
                (8, ported, ported_out, "megafon"),  # ends: 1 notice
            ),
        ),
        timeout=10,
    )
    assert (reply.rows, reply.ended, reply.refused, reply.notices_queued) == (7, 2, 5, 3)
    outcome = registry_pb2.TerminationOutcome
    assert [(r.line, outcome.Name(r.outcome)) for r in reply.refusals] == [
        (3, "TERMINATION_OUTCOME_NOT_FOUND"),
        (4, "TERMINATION_OUTCOME_NOT_ACTIVE"),
        (5, "TERMINATION_OUTCOME_INVALID"),
        (6, "TERMINATION_OUTCOME_INVALID"),
        (7, "TERMINATION_OUTCOME_INVALID"),
    ]
    assert "recipient_operator_id" in reply.refusals[3].message
    assert await service.count_pending_notices() == 3
    gone = await admin.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=ported))
    assert gone.subscriber.state == registry_pb2.CONTRACT_STATE_TERMINATED
    assert gone.subscriber.recipient_operator_id == "megafon"

    # the same rows again end nothing twice
    again = await admin.TerminateContracts(
        _stream(_rows((2, NUMBER, unspecified, ""), (8, ported, ported_out, "megafon"))),
        timeout=10,
    )
    assert (again.ended, again.refused, again.notices_queued) == (0, 2, 0)
    assert await service.count_pending_notices() == 3


async def test_bulk_termination_refuses_an_oversized_batch_and_ends_nothing_of_it(
    client: Client, service: RegistryService
) -> None:
    unspecified = events_pb2.TERMINATION_REASON_UNSPECIFIED
    rows = [(n, NUMBER, unspecified, "") for n in range(2, 10_003)]  # 10,001 rows
    error = await status_of(client.admin().TerminateContracts(_stream(_rows(*rows)), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows" in (error.details() or "")
    reply = await client.admin().GetSubscriber(
        registry_pb2.GetSubscriberRequest(phone_number=NUMBER)
    )
    assert reply.subscriber.state == registry_pb2.CONTRACT_STATE_ACTIVE


async def test_bulk_termination_needs_the_operators_admin_identity(client: Client) -> None:
    error = await status_of(
        client.admin(ALPHA).TerminateContracts(
            _stream(_rows((2, NUMBER, events_pb2.TERMINATION_REASON_UNSPECIFIED, ""))), timeout=10
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await client.admin().GetSubscriber(
        registry_pb2.GetSubscriberRequest(phone_number=NUMBER)
    )
    assert reply.subscriber.state == registry_pb2.CONTRACT_STATE_ACTIVE


async def test_bulk_terminations_notices_carry_the_streams_trace_id(
    client: Client, service: RegistryService
) -> None:
    await verify(client, identity=ALPHA)
    await verify(client, identity=BETA)
    with traced("trace-billing-run-7"):
        reply = await client.admin().TerminateContracts(
            _stream(_rows((2, NUMBER, events_pb2.TERMINATION_REASON_UNSPECIFIED, ""))), timeout=10
        )
    assert reply.notices_queued == 2
    assert {n.trace_id for n in await service.pending_notices(10)} == {"trace-billing-run-7"}


async def test_a_verification_writes_one_log_line_with_its_outcome(client: Client) -> None:
    with capture_logs() as logs:
        await verify(client, idempotency_key="one-line")
        await verify(client, idempotency_key="one-line")  # a replay
    assert [line["event"] for line in logs] == ["rpc", "rpc"]
    first, replay = logs
    masked = NUMBER[:5] + "*" * (len(NUMBER) - 7) + NUMBER[-2:]
    assert first["status"] == "OK" and first["phone"] == masked
    assert first["result"] == "identified" and first["new_binding"] is True
    assert first["replayed"] is False and replay["replayed"] is True
