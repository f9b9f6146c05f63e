"""Identification end to end, over the whole mesh as real processes (issue: identification)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.status import error_details
from services.localmesh import Mesh, MeshClient, log_lines_with
from tests.eventually import eventually

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
Reason = gateway_pb2.Reason
_serial = itertools.count(1000001)


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


async def new_subscriber(client: MeshClient, operator: str, prefix: str) -> str:
    """A fresh active contract at `operator` for a number in the range `prefix` (e.g. +7903)."""
    phone = f"{prefix}{next(_serial):07d}"
    await client.registry_admin(operator).CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(
            phone_number=phone, contract_id=f"C-{uuid.uuid4().hex[:10]}"
        ),
        timeout=5,
    )
    return phone


async def test_subscriber_is_identified_and_may_send(client: MeshClient) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = user()
    started = await client.start("alpha", u, phone)
    assert started.state == State.IDENTIFICATION_STATE_AWAITING_CODE
    assert started.phone_number == phone

    done = await client.confirm("alpha", started)

    assert done.state == State.IDENTIFICATION_STATE_IDENTIFIED
    assert done.operator_id == "beeline"
    access = await client.gateway("alpha").CheckAccess(gateway_pb2.CheckAccessRequest(user_id=u))
    assert access.allowed
    assert list(await client.bindings("beeline", phone)) == ["alpha"]


async def test_national_format_is_normalised_to_e164(client: MeshClient) -> None:
    phone = await new_subscriber(client, "megafon", "+7926")
    national = "8 " + phone[2:5] + " " + phone[5:]
    done = await client.identify("alpha", user(), national)
    assert done.phone_number == phone
    assert done.state == State.IDENTIFICATION_STATE_IDENTIFIED


async def test_number_without_subscriber_is_not_completed(client: MeshClient) -> None:
    u = user()
    done = await client.identify("alpha", u, f"+7903{next(_serial):07d}")
    assert done.state == State.IDENTIFICATION_STATE_NOT_COMPLETED
    assert done.reason == Reason.REASON_NO_SUBSCRIBER
    access = await client.gateway("alpha").CheckAccess(gateway_pb2.CheckAccessRequest(user_id=u))
    assert not access.allowed
    assert access.reason == Reason.REASON_NO_SUBSCRIBER
    assert access.message


async def test_operator_that_does_not_answer_times_out_after_the_window(client: MeshClient) -> None:
    # gamma's window is short and its T2 numbers route to an operator that accepts and never
    # answers.
    u = user()
    started = await client.start("gamma", u, "+79001234567")
    await client.confirm_pending("gamma", started)
    done = await client.wait_state("gamma", u, {State.IDENTIFICATION_STATE_NOT_COMPLETED})
    assert done.reason == Reason.REASON_OPERATOR_TIMEOUT


async def test_number_of_an_operator_not_configured_is_refused_before_any_sms(
    client: MeshClient,
) -> None:
    # +7916 is MTS in the numbering plan, and no MTS registry is configured.
    u = user()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", u, "+79161234567")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(e.value).reason == "NUMBER_NOT_SERVED"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", u, "+1 202 555 0123")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(e.value).reason == "COUNTRY_NOT_ALLOWED"
    missing = client.gateway("alpha").GetIdentification(
        gateway_pb2.GetIdentificationRequest(user_id=u), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await missing
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_messenger_without_agreement_is_refused(client: MeshClient) -> None:
    # megafon has an agreement with alpha only.
    phone = await new_subscriber(client, "megafon", "+7926")
    done = await client.identify("beta", user(), phone)
    assert done.state == State.IDENTIFICATION_STATE_NOT_COMPLETED
    assert done.reason == Reason.REASON_AGREEMENT_REFUSED
    assert await client.bindings("megafon", phone) == {}
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.registry_as_messenger("megafon", "beta").VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(idempotency_key="r-1", phone_number=phone),
            timeout=5,
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert phone not in (e.value.details() or "")


@pytest.mark.parametrize(
    ("number", "problem"),
    [("12345", "not a"), ("+74951234567", "not a mobile number"), ("", "empty")],
)
async def test_invalid_and_non_mobile_numbers_are_refused(
    client: MeshClient, number: str, problem: str
) -> None:
    u = user()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", u, number)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.gateway("alpha").GetIdentification(
            gateway_pb2.GetIdentificationRequest(user_id=u)
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_wrong_code_counts_attempts_until_the_limit(client: MeshClient) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = user()
    started = await client.start("alpha", u, phone)
    right = client.sms_code("alpha", started.identification_id)
    wrong = "000000" if right != "000000" else "111111"
    stub = client.gateway("alpha")
    request = gateway_pb2.ConfirmPossessionRequest(
        identification_id=started.identification_id, code=wrong
    )
    for _ in range(started.attempts_left - 1):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ConfirmPossession(request, timeout=5)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "attempt" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ConfirmPossession(request, timeout=5)
    current = (
        await stub.GetIdentification(gateway_pb2.GetIdentificationRequest(user_id=u))
    ).identification
    assert current.state == State.IDENTIFICATION_STATE_NOT_COMPLETED
    assert current.reason == Reason.REASON_TOO_MANY_ATTEMPTS
    # The right code no longer helps, and the operator was never asked.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=started.identification_id, code=right
            ),
            timeout=5,
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await client.bindings("beeline", phone) == {}


async def test_same_contract_and_messenger_keep_one_code(client: MeshClient) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    await client.identify("alpha", user(), phone)
    first = await client.bindings("beeline", phone)
    await client.identify("alpha", user(), phone)
    assert await client.bindings("beeline", phone) == first
    registry = client.registry_as_messenger("beeline", "alpha")
    answers = [
        await registry.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(
                idempotency_key=uuid.uuid4().hex, phone_number=phone
            ),
            timeout=5,
        )
        for _ in range(2)
    ]
    assert {a.identification_code for a in answers} == {first["alpha"]}


async def test_two_messengers_get_different_codes(client: MeshClient) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    assert (
        await client.identify("alpha", user(), phone)
    ).state == State.IDENTIFICATION_STATE_IDENTIFIED
    assert (
        await client.identify("beta", user(), phone)
    ).state == State.IDENTIFICATION_STATE_IDENTIFIED
    codes = await client.bindings("beeline", phone)
    assert set(codes) == {"alpha", "beta"}
    assert codes["alpha"] != codes["beta"]
    assert all(len(c) >= 32 for c in codes.values())


async def test_operator_down_then_up_inside_the_window_identifies(
    client: MeshClient, mesh: Mesh
) -> None:
    phone = await new_subscriber(client, "megafon", "+7926")
    u = user()
    started = await client.start("alpha", u, phone)
    mesh.terminate("registry-megafon")
    try:
        pending = await client.confirm_pending("alpha", started)
        assert pending.state == State.IDENTIFICATION_STATE_VERIFYING
    finally:
        mesh.restart("registry-megafon")
    done = await client.wait_state("alpha", u, {State.IDENTIFICATION_STATE_IDENTIFIED})
    assert done.operator_id == "megafon"


async def test_gateway_restarted_mid_verification_resumes_with_the_same_request(
    client: MeshClient, mesh: Mesh
) -> None:
    """...with the same idempotency key, and the same trace id: the resumed VerifySubscriber
    reaches the registry under the request id StartIdentification had."""
    phone = await new_subscriber(client, "megafon", "+7926")
    u = user()
    trace_id = f"trace-{uuid.uuid4().hex}"
    started = await start_traced(client, "alpha", u, phone, trace_id)
    mesh.terminate("registry-megafon")
    try:
        pending = await client.confirm_pending("alpha", started)
        assert pending.state == State.IDENTIFICATION_STATE_VERIFYING
        mesh.kill("gateway-alpha")
    finally:
        mesh.restart("registry-megafon")
    mesh.restart("gateway-alpha")
    done = await client.wait_state("alpha", u, {State.IDENTIFICATION_STATE_IDENTIFIED})
    assert done.identification_id == started.identification_id
    assert list(await client.bindings("megafon", phone)) == ["alpha"]
    await logged_call(mesh, "registry-megafon", trace_id, "VerifySubscriber")


async def test_gateway_restarted_after_the_window_fails_the_verification(
    client: MeshClient, mesh: Mesh
) -> None:
    u = user()
    started = await client.start("gamma", u, "+79001234568")
    pending = await client.confirm_pending("gamma", started)
    assert pending.state == State.IDENTIFICATION_STATE_VERIFYING
    mesh.kill("gateway-gamma")
    try:
        deadline = pending.verification_deadline.ToDatetime(tzinfo=UTC)
        # Not synchronisation: the window has to pass while the gateway is down.
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds() + 0.3))
    finally:
        mesh.restart("gateway-gamma")
    done = await client.wait_state("gamma", u, {State.IDENTIFICATION_STATE_NOT_COMPLETED})
    assert done.reason == Reason.REASON_OPERATOR_TIMEOUT


async def test_one_time_codes_are_rate_limited_per_number_and_per_user(
    client: MeshClient,
) -> None:
    """Against code flooding and SMS pumping: the gateway's defaults are a burst of 5 codes
    per number and 10 per user."""
    phone = f"+7903{next(_serial):07d}"
    for _ in range(5):
        await client.start("alpha", user(), phone)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", user(), phone)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this number" in (e.value.details() or "")
    details = error_details(e.value)
    assert details.reason == "RATE_LIMITED"
    assert details.retry_delay is not None and details.retry_delay.total_seconds() > 0

    u = user()
    for _ in range(10):
        await client.start("alpha", u, f"+7903{next(_serial):07d}")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", u, f"+7903{next(_serial):07d}")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this user" in (e.value.details() or "")


async def logged_call(mesh: Mesh, service: str, trace_id: str, method: str) -> list[dict[str, Any]]:
    """The log lines of `service` that carry trace_id, once one of them is a `method` RPC."""

    def lines() -> list[dict[str, Any]]:
        found = log_lines_with(mesh, service, trace_id)
        return found if any(f.get("method", "").endswith(f"/{method}") for f in found) else []

    result: list[dict[str, Any]] = await eventually(
        lines, within=30, what=f"{service} to log {method} with {trace_id}"
    )
    return result


async def start_traced(
    client: MeshClient, messenger: str, user_id: str, phone: str, trace_id: str
) -> gateway_pb2.Identification:
    reply: gateway_pb2.StartIdentificationResponse = await client.gateway(
        messenger
    ).StartIdentification(
        gateway_pb2.StartIdentificationRequest(user_id=user_id, phone_number=phone),
        metadata=(("x-request-id", trace_id),),
        timeout=10,
    )
    return reply.identification


async def test_the_request_id_crosses_hops_to_the_operator(client: MeshClient, mesh: Mesh) -> None:
    """The identification keeps the request id of StartIdentification as its trace id: the
    VerifySubscriber call that ConfirmPossession (with a request id of its own) starts carries
    it to the operator, unchanged in the logs."""
    phone = await new_subscriber(client, "beeline", "+7903")
    trace_id = f"trace-{uuid.uuid4().hex}"
    started = await start_traced(client, "alpha", user(), phone, trace_id)
    await client.gateway("alpha").ConfirmPossession(
        gateway_pb2.ConfirmPossessionRequest(
            identification_id=started.identification_id,
            code=client.sms_code("alpha", started.identification_id),
        ),
        metadata=(("x-request-id", f"confirm-{uuid.uuid4().hex}"),),
        timeout=20,
    )
    lines = await logged_call(mesh, "registry-beeline", trace_id, "VerifySubscriber")
    assert all(line.get("request_id") == trace_id for line in lines)
