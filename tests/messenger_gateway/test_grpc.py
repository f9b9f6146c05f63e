"""The gateway over gRPC: a real gateway GrpcServer (the production wiring) against fake
RegistryService and NotifierService servers in the same process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import duration_pb2
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from structlog.testing import capture_logs

from services.common.channels import open_channel
from services.common.config import ServerSettings
from services.common.identity import Caller, Kind, Role
from services.common.server import GrpcServer
from services.common.status import error_details
from services.common.storage import StoreSettings
from services.messenger_gateway.api.gateway import ERRORS
from services.messenger_gateway.config import GatewayConfig
from services.messenger_gateway.main import Gateway, open_gateway
from services.messenger_gateway.routing.router import NumberingPlan
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    FakeNotifier,
    FakeRegistry,
    free_port,
    outbox_code,
    read_outbox,
    registration_code,
    start_notifier,
    start_registry,
)

REPO = Path(__file__).resolve().parents[2]
FRONTEND = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
BEELINE = "+79031234567"  # 903: Beeline in deploy/numbering-plan.csv
MEGAFON = "+79261234567"  # 926: MegaFon
MTS = "+79161234567"  # 916: MTS, which this messenger has no operator entry for

S = gateway_pb2  # short name for states and reasons
AWAITING, VERIFYING = S.IDENTIFICATION_STATE_AWAITING_CODE, S.IDENTIFICATION_STATE_VERIFYING
IDENTIFIED = S.IDENTIFICATION_STATE_IDENTIFIED
NOT_COMPLETED, REVOKED = S.IDENTIFICATION_STATE_NOT_COMPLETED, S.IDENTIFICATION_STATE_REVOKED


@dataclass
class Harness:
    stub: gateway_pb2_grpc.GatewayServiceStub
    gateway: Gateway
    registry: FakeRegistry
    notifier: FakeNotifier
    outbox: Path
    megafon_port: int
    address: str  # the gateway's

    async def start(self, user_id: str, phone: str) -> gateway_pb2.Identification:
        reply: gateway_pb2.StartIdentificationResponse = await self.stub.StartIdentification(
            gateway_pb2.StartIdentificationRequest(user_id=user_id, phone_number=phone)
        )
        return reply.identification

    async def confirm(
        self, identification_id: str, code: str | None = None, *, deadline: float = 10.0
    ) -> gateway_pb2.Identification:
        reply: gateway_pb2.ConfirmPossessionResponse = await self.stub.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=identification_id,
                code=code if code is not None else outbox_code(self.outbox, identification_id),
            ),
            timeout=deadline,
        )
        return reply.identification

    async def get(self, user_id: str) -> gateway_pb2.Identification:
        reply: gateway_pb2.GetIdentificationResponse = await self.stub.GetIdentification(
            gateway_pb2.GetIdentificationRequest(user_id=user_id)
        )
        return reply.identification

    async def access(self, user_id: str) -> gateway_pb2.CheckAccessResponse:
        reply: gateway_pb2.CheckAccessResponse = await self.stub.CheckAccess(
            gateway_pb2.CheckAccessRequest(user_id=user_id)
        )
        return reply

    async def identify(self, user_id: str, phone: str = BEELINE) -> gateway_pb2.Identification:
        started = await self.start(user_id, phone)
        done = await self.confirm(started.identification_id)
        assert done.state == IDENTIFIED, done
        return done


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    *,
    window: float = 10.0,
    attempts: int = 5,
    megafon_port: int | None = None,
    store: StoreSettings | None = None,
    shards: int = 0,
) -> AsyncIterator[Harness]:
    """The production wiring on port 0 with fake servers around it; the store a SQLite file
    under tmp_path unless given (as a replica's: several may share one database). With shards,
    the policy in that many shards, on a port chosen first (the replica advertises it)."""
    registry_server, registry = await start_registry("beeline")
    notifier_server, notifier = await start_notifier()
    megafon_port = megafon_port or free_port()  # nothing listens there unless a test starts it
    bind = f"127.0.0.1:{free_port() if shards else 0}"
    config = GatewayConfig(
        server=ServerSettings(bind=bind, log_level="info", log_format="json", shutdown_grace=0),
        messenger_id="alpha",
        db_path=tmp_path / "gateway.db",
        store=store or StoreSettings(db_path=tmp_path / "gateway.db"),
        operators={
            "beeline": f"127.0.0.1:{registry_server.port}",
            "megafon": f"127.0.0.1:{megafon_port}",
        },
        carriers={"Beeline": "beeline", "MegaFon": "megafon"},
        notifier_address=f"127.0.0.1:{notifier_server.port}",
        sms_outbox=tmp_path / "sms-outbox.jsonl",
        numbering_plan=NumberingPlan.load(REPO / "deploy" / "numbering-plan.csv"),
        verification_window_seconds=window,
        otp_max_attempts=attempts,
        verify_retry_initial_seconds=0.05,
        verify_retry_max_seconds=0.2,
        notifier_retry_initial_seconds=0.02,
        notifier_retry_max_seconds=0.1,
        policy_shards=shards,
        advertise_address=bind if shards else "",
        lease_seconds=0.9 if shards else 6.0,
    )
    server = GrpcServer(name="messenger_gateway", bind=bind, errors=ERRORS)
    try:
        async with open_gateway(config, server) as gateway:
            await server.start()
            await server.set_serving()
            async with open_channel(f"127.0.0.1:{server.port}", identity=FRONTEND) as channel:
                try:
                    yield Harness(
                        gateway_pb2_grpc.GatewayServiceStub(channel),
                        gateway,
                        registry,
                        notifier,
                        config.sms_outbox,
                        megafon_port,
                        f"127.0.0.1:{server.port}",
                    )
                finally:
                    await server.stop(None)
    finally:
        await registry_server.stop(None)
        await notifier_server.stop(None)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path) as harness:
        yield harness


async def _status(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


# --- identification --------------------------------------------------------------------------


async def test_a_user_is_identified_through_the_operator(gw: Harness) -> None:
    started = await gw.start("u1", "8 (903) 123-45-67")
    assert (started.state, started.phone_number, started.operator_id) == (
        AWAITING,
        BEELINE,
        "beeline",
    )
    assert started.attempts_left == 5
    [sms] = read_outbox(gw.outbox)
    assert sms["messenger_id"] == "alpha"
    assert sms["identification_id"] == started.identification_id
    assert sms["phone_number"] == BEELINE
    assert sms["code"] in sms["text"] and sms["sent_at"]

    done = await gw.confirm(started.identification_id)
    assert (done.state, done.reason, done.operator_id) == (
        IDENTIFIED,
        S.REASON_UNSPECIFIED,
        "beeline",
    )
    assert done.HasField("verification_deadline") and done.HasField("completed_at")
    [(caller, idempotency_key, phone)] = gw.registry.requests
    assert caller == "spiffe://idmesh.local/messenger/alpha"
    assert idempotency_key and phone == BEELINE

    access = await gw.access("u1")
    assert (access.allowed, access.reason, access.state) == (True, S.REASON_UNSPECIFIED, IDENTIFIED)
    assert (await gw.get("u1")).identification_id == started.identification_id


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("no_subscriber", S.REASON_NO_SUBSCRIBER), ("refused", S.REASON_AGREEMENT_REFUSED)],
)
async def test_an_operator_refusal_ends_not_completed(
    gw: Harness, behaviour: str, reason: int
) -> None:
    gw.registry.behaviour[BEELINE] = behaviour
    started = await gw.start("u1", BEELINE)
    done = await gw.confirm(started.identification_id)
    assert (done.state, done.reason) == (NOT_COMPLETED, reason)
    access = await gw.access("u1")
    assert (access.allowed, access.reason, access.state) == (False, reason, NOT_COMPLETED)


async def test_an_operator_down_then_up_within_the_window_identifies(gw: Harness) -> None:
    started = await gw.start("u1", MEGAFON)
    assert started.operator_id == "megafon"
    pending = await gw.confirm(started.identification_id, deadline=1.0)
    assert pending.state == VERIFYING
    megafon_server, megafon = await start_registry("megafon", port=gw.megafon_port)
    try:

        async def identified() -> bool:
            return (await gw.get("u1")).state == IDENTIFIED

        await eventually(identified, within=8, what="identified once the operator is up")
        assert (await gw.get("u1")).operator_id == "megafon"
        assert len({idempotency_key for _, idempotency_key, _ in megafon.requests}) == 1
    finally:
        await megafon_server.stop(None)


async def test_an_operator_that_never_answers_times_out(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, window=1.5) as gw:
        gw.registry.behaviour[BEELINE] = "hang"
        started = await gw.start("u1", BEELINE)
        done = await gw.confirm(started.identification_id, deadline=10)
        assert (done.state, done.reason) == (NOT_COMPLETED, S.REASON_OPERATOR_TIMEOUT)
        access = await gw.access("u1")
        assert (access.allowed, access.reason) == (False, S.REASON_OPERATOR_TIMEOUT)


async def test_a_number_no_configured_operator_serves_is_refused_before_any_sms(
    gw: Harness,
) -> None:
    refused = await _status(gw.start("u1", MTS))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused).reason == "NUMBER_NOT_SERVED"
    assert read_outbox(gw.outbox) == []
    assert gw.registry.requests == []


@pytest.mark.parametrize(
    ("number", "code", "reason"),
    [
        ("+12025550123", grpc.StatusCode.INVALID_ARGUMENT, "COUNTRY_NOT_ALLOWED"),
        ("+79031234567x", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PHONE_NUMBER"),
    ],
)
async def test_foreign_and_garbled_numbers_are_refused_before_any_sms(
    gw: Harness, number: str, code: grpc.StatusCode, reason: str
) -> None:
    refused = await _status(gw.start("u1", number))
    assert refused.code() == code
    assert error_details(refused).reason == reason
    assert error_details(refused).field_violations[0][0] == "phone_number"
    assert read_outbox(gw.outbox) == []


async def test_wrong_codes_use_up_the_attempts(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, attempts=2) as gw:
        started = await gw.start("u1", BEELINE)
        right = outbox_code(gw.outbox, started.identification_id)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        first = await _status(gw.confirm(started.identification_id, wrong))
        assert first.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "1 attempt left" in (first.details() or "")
        details = error_details(first)
        assert (details.reason, details.domain) == ("WRONG_CODE", "idmesh")
        assert details.metadata == {"attempts_left": "1"}
        second = await _status(gw.confirm(started.identification_id, wrong))
        assert second.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no attempts left" in (second.details() or "")
        assert error_details(second).reason == "TOO_MANY_ATTEMPTS"
        ended = await gw.get("u1")
        assert (ended.state, ended.reason, ended.attempts_left) == (
            NOT_COMPLETED,
            S.REASON_TOO_MANY_ATTEMPTS,
            0,
        )
        late = await _status(gw.confirm(started.identification_id, right))
        assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "NOT_COMPLETED" in (late.details() or "")
        assert gw.registry.requests == []


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("hello", "not a phone number"),
        ("+7903123", "not a valid number"),
        ("+74951234567", "not a mobile number"),
    ],
)
async def test_unusable_numbers_are_invalid_argument_and_nothing_is_stored(
    gw: Harness, number: str, problem: str
) -> None:
    error = await _status(gw.start("u1", number))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (error.details() or "")
    assert (await _status(gw.get("u1"))).code() == grpc.StatusCode.NOT_FOUND
    assert read_outbox(gw.outbox) == []


async def test_bad_requests_get_statuses_a_person_can_act_on(gw: Harness) -> None:
    unknown = await _status(gw.confirm("no-such-id", "123456"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    empty_user = await _status(gw.get(""))
    assert empty_user.code() == grpc.StatusCode.INVALID_ARGUMENT
    never = await _status(gw.get("nobody"))
    assert never.code() == grpc.StatusCode.NOT_FOUND
    assert "StartIdentification" in (never.details() or "")


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (Caller(Kind.MESSENGER, "beta", Role.FRONTEND), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.MESSENGER, "alpha"), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, "beeline"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_this_messengers_front_end_may_call(
    gw: Harness, identity: Caller | None, code: grpc.StatusCode
) -> None:
    async with open_channel(gw.address, identity=identity) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        error = await _status(
            stub.StartIdentification(
                gateway_pb2.StartIdentificationRequest(user_id="u1", phone_number=BEELINE)
            )
        )
    assert error.code() == code
    assert read_outbox(gw.outbox) == []


# --- access in every state, revocation, number changes ---------------------------------------


async def test_check_access_in_every_state(gw: Harness) -> None:
    nobody = await gw.access("nobody")
    assert (nobody.allowed, nobody.reason, nobody.state) == (
        False,
        S.REASON_NOT_IDENTIFIED,
        S.IDENTIFICATION_STATE_UNSPECIFIED,
    )

    await gw.start("awaiting", "+79051112233")
    awaiting = await gw.access("awaiting")
    assert (awaiting.allowed, awaiting.reason, awaiting.state) == (
        False,
        S.REASON_NOT_IDENTIFIED,
        AWAITING,
    )

    gw.registry.behaviour["+79051112244"] = "hang"
    started = await gw.start("verifying", "+79051112244")
    assert (await gw.confirm(started.identification_id, deadline=0.5)).state == VERIFYING
    verifying = await gw.access("verifying")
    assert (verifying.allowed, verifying.reason, verifying.state) == (
        False,
        S.REASON_NOT_IDENTIFIED,
        VERIFYING,
    )

    await gw.identify("identified", BEELINE)
    identified = await gw.access("identified")
    assert (identified.allowed, identified.state) == (True, IDENTIFIED)

    gw.registry.behaviour["+79647654321"] = "no_subscriber"
    started = await gw.start("failed", "+79647654321")
    await gw.confirm(started.identification_id)
    failed = await gw.access("failed")
    assert (failed.allowed, failed.reason, failed.state) == (
        False,
        S.REASON_NO_SUBSCRIBER,
        NOT_COMPLETED,
    )
    assert failed.message

    await gw.identify("revoked", "+79037777777")
    await gw.notifier.append(
        event_id="ev-1", identification_code=registration_code("beeline", "+79037777777")
    )

    async def revoked_state() -> bool:
        return (await gw.get("revoked")).state == REVOKED

    await eventually(revoked_state, what="revoked by the notice")
    revoked = await gw.access("revoked")
    assert (revoked.allowed, revoked.reason, revoked.state) == (
        False,
        S.REASON_CONTRACT_TERMINATED,
        REVOKED,
    )
    assert (await gw.access("identified")).allowed  # another subscriber is untouched
    await eventually(lambda: 1 in gw.notifier.acks, what="ack of seq 1")
    assert await gw.gateway.store.notice_cursor("alpha") == 1


async def test_change_phone_number(gw: Harness) -> None:
    missing = await _status(
        gw.stub.ChangePhoneNumber(
            gateway_pb2.ChangePhoneNumberRequest(user_id="u1", phone_number=BEELINE)
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    first = await gw.identify("u1", BEELINE)
    same = await _status(
        gw.stub.ChangePhoneNumber(
            gateway_pb2.ChangePhoneNumberRequest(user_id="u1", phone_number="89031234567")
        )
    )
    assert same.code() == grpc.StatusCode.INVALID_ARGUMENT
    changed = await gw.stub.ChangePhoneNumber(
        gateway_pb2.ChangePhoneNumberRequest(user_id="u1", phone_number="+79051234567")
    )
    assert changed.previous.identification_id == first.identification_id
    assert (changed.previous.state, changed.previous.reason) == (REVOKED, S.REASON_NUMBER_CHANGED)
    assert (changed.identification.state, changed.identification.phone_number) == (
        AWAITING,
        "+79051234567",
    )
    assert not (await gw.access("u1")).allowed
    done = await gw.confirm(changed.identification.identification_id)
    assert done.state == IDENTIFIED


async def test_a_restarted_gateway_resumes_the_verification_with_the_same_idempotency_key(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.registry.behaviour[BEELINE] = "hang"
        started = await gw.start("u1", BEELINE)
        assert (await gw.confirm(started.identification_id, deadline=0.5)).state == VERIFYING
        await eventually(lambda: len(gw.registry.requests) >= 1, what="the first ask")
        first_idempotency_key = gw.registry.requests[0][1]
    # the whole gateway stopped mid-verification; a new one opens the same database
    async with running_gateway(tmp_path) as gw:

        async def identified() -> bool:
            return (await gw.get("u1")).state == IDENTIFIED

        await eventually(identified, what="identified after the restart")
        assert gw.registry.requests[0][1] == first_idempotency_key


# --- retries -----------------------------------------------------------------------------------


async def test_a_retried_start_with_the_same_key_returns_the_first_identification(
    gw: Harness,
) -> None:
    request = gateway_pb2.StartIdentificationRequest(
        user_id="u1", phone_number=BEELINE, idempotency_key="k-1"
    )
    first = (await gw.stub.StartIdentification(request)).identification
    again = (await gw.stub.StartIdentification(request)).identification
    assert again.identification_id == first.identification_id
    assert len(read_outbox(gw.outbox)) == 1  # no second one-time code
    other = await gw.stub.StartIdentification(
        gateway_pb2.StartIdentificationRequest(
            user_id="u1", phone_number=BEELINE, idempotency_key="k-2"
        )
    )
    assert other.identification.identification_id != first.identification_id


async def test_the_same_key_with_another_number_is_refused_and_changes_nothing(
    gw: Harness,
) -> None:
    first = await gw.stub.StartIdentification(
        gateway_pb2.StartIdentificationRequest(
            user_id="u1", phone_number=BEELINE, idempotency_key="k-1"
        )
    )
    refused = await _status(
        gw.stub.StartIdentification(
            gateway_pb2.StartIdentificationRequest(
                user_id="u1", phone_number=MEGAFON, idempotency_key="k-1"
            )
        )
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(refused)
    assert (details.reason, details.metadata["field"]) == (
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency_key",
    )
    current = await gw.get("u1")
    assert current.identification_id == first.identification.identification_id


async def test_a_retried_confirm_after_success_returns_the_identification(gw: Harness) -> None:
    started = await gw.start("u1", BEELINE)
    code = outbox_code(gw.outbox, started.identification_id)
    done = await gw.confirm(started.identification_id, code)
    assert done.state == IDENTIFIED
    again = await gw.confirm(started.identification_id, code)
    assert (again.identification_id, again.state) == (done.identification_id, IDENTIFIED)


async def test_confirm_with_max_wait_zero_returns_verifying_at_once(gw: Harness) -> None:
    gw.registry.behaviour[BEELINE] = "hang"
    started = await gw.start("u1", BEELINE)
    reply = await gw.stub.ConfirmPossession(
        gateway_pb2.ConfirmPossessionRequest(
            identification_id=started.identification_id,
            code=outbox_code(gw.outbox, started.identification_id),
            max_wait=duration_pb2.Duration(seconds=0),
        ),
        timeout=30,
    )
    assert reply.identification.state == VERIFYING
    refused = await _status(
        gw.stub.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=started.identification_id,
                code="000000",
                max_wait=duration_pb2.Duration(seconds=-1),
            )
        )
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(refused).metadata["field"] == "max_wait"


async def test_a_registry_retry_delay_is_honoured_by_the_verification(gw: Harness) -> None:
    gw.registry.behaviour[BEELINE] = "rate_limited_once"
    started = await gw.start("u1", BEELINE)
    began = time.monotonic()
    done = await gw.confirm(started.identification_id, deadline=20)
    assert done.state == IDENTIFIED
    assert len(gw.registry.requests) == 2
    assert time.monotonic() - began >= 0.7  # waited the registry's RetryInfo


async def test_each_rpc_logs_one_line_with_the_identifications_fields(gw: Harness) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        started = await gw.start("u1", BEELINE)
        await gw.confirm(started.identification_id)

    def lines(method: str) -> list[str]:
        return [e["event"] for e in logs if e.get("method", "").endswith(method)]

    # the server's `rpc` line, and no other; the verification's outcome is logged by the
    # background task it started (which carries the RPC's request id as its trace id)
    assert lines("/StartIdentification") == ["rpc"]
    assert sorted(lines("/ConfirmPossession")) == ["identification.finished", "rpc"]
    start, confirm = (
        next(e for e in logs if e["event"] == "rpc" and e["method"].endswith(m))
        for m in ("/StartIdentification", "/ConfirmPossession")
    )
    assert start["identification_id"] == started.identification_id
    assert (start["user_id"], start["operator_id"]) == ("u1", "beeline")
    assert start["state"] == "AWAITING_CODE"
    assert start["phone"] != BEELINE and start["phone"].endswith(BEELINE[-2:])  # masked
    assert confirm["identification_id"] == started.identification_id
    assert confirm["state"] == "IDENTIFIED"
    assert confirm["trace_id"] == start["request_id"]  # the verification ran under it
