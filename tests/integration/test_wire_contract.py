"""The wire contract over the real mesh, as a client in any language sees it:

- every RPC of the three services, driven with the refusals it has, answers only (code, reason)
  pairs that its comment in the protos (or its service's comment) lists;
- a 1 MB value in any string field of any request is refused INVALID_ARGUMENT (FIELD_TOO_LONG,
  naming the field) promptly, and the same channel serves the next call.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.common.v1 import bulk_pb2
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.identity import Caller, Kind, Role
from services.common.status import ErrorDetails, error_details
from services.localmesh import MeshClient
from tests.contract.protos import comments, services

pytestmark = pytest.mark.mesh

MB = 1 << 20
SUBSCRIBER = "+79031234567"  # a Beeline subscriber of the demo seed
UNKNOWN = "+79039999999"  # no contract at Beeline
AWAITING_NUMBER = "+79035550199"  # a Beeline number some user is asked the code of


# --- calling any RPC as the caller it is for ---------------------------------------------------

# Service full name -> its stub class (generated, untyped): called with a channel.
_STUBS: dict[str, Callable[[Any], Any]] = {
    "idmesh.gateway.v1.GatewayService": gateway_pb2_grpc.GatewayServiceStub,
    "idmesh.gateway.v1.GatewayAdminService": gateway_pb2_grpc.GatewayAdminServiceStub,
    "idmesh.registry.v1.RegistryService": registry_pb2_grpc.RegistryServiceStub,
    "idmesh.registry.v1.RegistryAdminService": registry_pb2_grpc.RegistryAdminServiceStub,
    "idmesh.notifier.v1.NotifierService": notifier_pb2_grpc.NotifierServiceStub,
}


def _caller(method: MethodDescriptor) -> tuple[str, Caller]:
    """(mesh service, identity) for the caller an RPC is meant for."""
    match method.containing_service.full_name:
        case "idmesh.gateway.v1.GatewayService":
            return "gateway-alpha", Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
        case "idmesh.gateway.v1.GatewayAdminService":
            return "gateway-alpha", Caller(Kind.MESSENGER, "alpha", Role.ADMIN)
        case "idmesh.registry.v1.RegistryService":
            return "registry-beeline", Caller(Kind.MESSENGER, "alpha")
        case "idmesh.registry.v1.RegistryAdminService":
            return "registry-beeline", Caller(Kind.OPERATOR, "beeline", Role.ADMIN)
        case _ if method.name == "Publish":
            return "notifier", Caller(Kind.OPERATOR, "beeline")
        case _:
            return "notifier", Caller(Kind.MESSENGER, "alpha")


@dataclass
class Caught:
    code: grpc.StatusCode
    details: ErrorDetails
    message: str
    seconds: float


class Callers:
    """One channel per (service, identity), reused: a refusal must leave it usable."""

    def __init__(self, client: MeshClient) -> None:
        self._client = client
        self._channels: dict[tuple[str, str], Any] = {}

    def channel(self, method: MethodDescriptor) -> Any:
        service, identity = _caller(method)
        key = (service, identity.uri)
        if key not in self._channels:
            self._channels[key] = self._client._channel(service, identity)
        return self._channels[key]

    async def call(self, method: MethodDescriptor, request: Message) -> Caught | None:
        """Call method with request; the refusal, or None if it succeeded."""
        stub = _STUBS[method.containing_service.full_name](self.channel(method))
        started = time.monotonic()
        try:
            await invoke(stub, method, request)
        except grpc.aio.AioRpcError as exc:
            return Caught(
                exc.code(), error_details(exc), exc.details() or "", time.monotonic() - started
            )
        return None

    async def healthy(self, method: MethodDescriptor) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel(method))
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _one(request: Message) -> AsyncIterator[Message]:
    yield request


async def invoke(stub: Any, method: MethodDescriptor, request: Message) -> None:
    """Call method on stub with request, whatever its kind (a stream gets one message; of a
    reply stream only the first item is read)."""
    rpc = getattr(stub, method.name)
    if method.client_streaming:
        await rpc(_one(request), timeout=30)
    elif method.server_streaming:
        call = rpc(request, timeout=30)
        try:
            async for _ in call:
                break
        finally:
            call.cancel()
    else:
        await rpc(request, timeout=30)


def _methods() -> Iterator[MethodDescriptor]:
    for service in services():
        yield from service.methods


# --- the documented codes ----------------------------------------------------------------------

_CODES = "|".join(code.name for code in grpc.StatusCode)


def documented(method: MethodDescriptor) -> set[tuple[str, str]]:
    """The (code, reason) pairs the RPC's comment and its service's comment list: each code
    followed by a parenthesis naming reasons ("FAILED_PRECONDITION (WRONG_CODE ...; ...)")."""
    service = method.containing_service.full_name
    text = comments().blocks[service] + " " + comments().members[f"{service}.{method.name}"]
    pairs = set()
    for match in re.finditer(rf"\b({_CODES}) \(([^)]*)\)", text):
        for reason in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\b", match.group(2)):
            pairs.add((match.group(1), reason))
    return pairs


def test_every_rpc_documents_its_codes_with_reasons() -> None:
    for method in _methods():
        comment = comments().members[f"{method.containing_service.full_name}.{method.name}"]
        assert "Errors:" in comment, f"{method.full_name}: no 'Errors:' in its comment"
        assert documented(method), method.full_name


# --- refusals of every RPC ---------------------------------------------------------------------


def _scenarios(
    ident_id: str, wrong_code: str, awaiting_user: str
) -> dict[str, list[tuple[Message, str, str]]]:
    """RPC name -> [(request, expected code, expected reason)]: the refusals each RPC has."""
    g, r, n = gateway_pb2, registry_pb2, notifier_pb2
    user = f"wire-{uuid.uuid4().hex[:8]}"
    return {
        "StartIdentification": [
            (
                g.StartIdentificationRequest(user_id="", phone_number=SUBSCRIBER),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                g.StartIdentificationRequest(user_id=user, phone_number="+79031234567x"),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
            (
                g.StartIdentificationRequest(user_id=user, phone_number="+12025550123"),
                "INVALID_ARGUMENT",
                "COUNTRY_NOT_ALLOWED",
            ),
            (
                g.StartIdentificationRequest(user_id=user, phone_number="+79161234567"),
                "FAILED_PRECONDITION",
                "NUMBER_NOT_SERVED",
            ),
        ],
        "ConfirmPossession": [
            (
                g.ConfirmPossessionRequest(identification_id="", code="123456"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                g.ConfirmPossessionRequest(identification_id=str(uuid.uuid4()), code="123456"),
                "NOT_FOUND",
                "IDENTIFICATION_NOT_FOUND",
            ),
            (
                g.ConfirmPossessionRequest(identification_id=ident_id, code="12345x"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                g.ConfirmPossessionRequest(identification_id=ident_id, code=wrong_code),
                "FAILED_PRECONDITION",
                "WRONG_CODE",
            ),
            (
                g.ConfirmPossessionRequest(
                    identification_id=ident_id,
                    code="000000",
                    max_wait=duration_pb2.Duration(seconds=-1),
                ),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "GetIdentification": [
            (g.GetIdentificationRequest(user_id=user), "NOT_FOUND", "IDENTIFICATION_NOT_FOUND"),
            (g.GetIdentificationRequest(user_id=""), "INVALID_ARGUMENT", "INVALID_FIELD"),
        ],
        "CheckAccess": [
            (g.CheckAccessRequest(user_id=""), "INVALID_ARGUMENT", "INVALID_FIELD"),
        ],
        "ChangePhoneNumber": [
            (
                g.ChangePhoneNumberRequest(user_id=user, phone_number=SUBSCRIBER),
                "NOT_FOUND",
                "IDENTIFICATION_NOT_FOUND",
            ),
            (
                g.ChangePhoneNumberRequest(user_id=awaiting_user, phone_number=AWAITING_NUMBER),
                "INVALID_ARGUMENT",
                "SAME_NUMBER",
            ),
            (
                g.ChangePhoneNumberRequest(user_id=user, phone_number="nonsense"),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
        ],
        "CheckNumberReassigned@gateway": [
            (g.CheckNumberReassignedRequest(user_id=user), "NOT_FOUND", "IDENTIFICATION_NOT_FOUND"),
            (
                g.CheckNumberReassignedRequest(user_id=awaiting_user),
                "FAILED_PRECONDITION",
                "NEVER_IDENTIFIED",
            ),
        ],
        "SetSenderRule": [
            (
                g.SetSenderRuleRequest(user_id=user, sender_id="s", rule=g.SENDER_RULE_REFUSED),
                "NOT_FOUND",
                "IDENTIFICATION_NOT_FOUND",
            ),
            (
                g.SetSenderRuleRequest(user_id=user, sender_id="s"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "SetUnacceptedSenderPolicy": [
            (
                g.SetUnacceptedSenderPolicyRequest(
                    user_id=user, policy=g.UNACCEPTED_SENDER_POLICY_REFUSE
                ),
                "NOT_FOUND",
                "IDENTIFICATION_NOT_FOUND",
            ),
        ],
        "SetAutomatedConsent": [
            (
                g.SetAutomatedConsentRequest(user_id=user, sender_id="bot"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "ListPreferences": [
            (g.ListPreferencesRequest(user_id=user), "NOT_FOUND", "IDENTIFICATION_NOT_FOUND"),
        ],
        "CheckDelivery": [
            (
                g.CheckDeliveryRequest(sender_id="a", recipient_id="b"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                g.CheckDeliveryRequest(
                    sender_id="a",
                    recipient_id="b",
                    kind=g.MESSAGE_KIND_PERSONAL,
                    min_version=10**12,
                ),
                "OUT_OF_RANGE",
                "POLICY_VERSION_OUT_OF_RANGE",
            ),
        ],
        "CheckDeliveryBatch": [
            (
                g.CheckDeliveryBatchRequest(
                    pairs=[g.DeliveryPair(recipient_id="b", kind=g.MESSAGE_KIND_PERSONAL)]
                ),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "WatchPolicyChanges": [],
        "RecordRestrictionOrder": [
            (
                g.RecordRestrictionOrderRequest(
                    order_id="", user_id=user, scope=g.RESTRICTION_SCOPE_ALL_MESSAGES
                ),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                g.RecordRestrictionOrderRequest(
                    order_id="W-1",
                    phone_number="nonsense",
                    scope=g.RESTRICTION_SCOPE_ALL_MESSAGES,
                    received_at=timestamp_pb2.Timestamp(seconds=1_700_000_000),
                ),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
        ],
        "EnforceRestrictionOrder": [
            (
                g.EnforceRestrictionOrderRequest(order_id="W-404"),
                "NOT_FOUND",
                "RESTRICTION_ORDER_NOT_FOUND",
            ),
        ],
        "LiftRestrictionOrder": [
            (
                g.LiftRestrictionOrderRequest(order_id="W-404"),
                "NOT_FOUND",
                "RESTRICTION_ORDER_NOT_FOUND",
            ),
        ],
        "ListRestrictionOrders": [
            (g.ListRestrictionOrdersRequest(limit=5000), "INVALID_ARGUMENT", "INVALID_FIELD"),
        ],
        "ListRestrictionAudit": [
            (
                g.ListRestrictionAuditRequest(order_id="has space"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "ImportPortedNumbers": [
            (g.ImportPortedNumbersRequest(mode=7), "INVALID_ARGUMENT", "INVALID_FIELD"),  # type: ignore[arg-type]
        ],
        "ResolveOperator": [
            (
                g.ResolveOperatorRequest(phone_number="nonsense"),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
        ],
        "VerifySubscriber": [
            (
                r.VerifySubscriberRequest(idempotency_key="", phone_number=SUBSCRIBER),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (
                r.VerifySubscriberRequest(idempotency_key="wire-1", phone_number="nonsense"),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
        ],
        "CheckNumberReassigned@registry": [
            (
                r.CheckNumberReassignedRequest(phone_number=SUBSCRIBER),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "CreateSubscriber": [
            (
                r.CreateSubscriberRequest(
                    phone_number=SUBSCRIBER, contract_id=f"W-{uuid.uuid4().hex[:8]}"
                ),
                "ALREADY_EXISTS",
                "SUBSCRIBER_EXISTS",
            ),
            (
                r.CreateSubscriberRequest(phone_number="nonsense", contract_id="W-1"),
                "INVALID_ARGUMENT",
                "INVALID_PHONE_NUMBER",
            ),
        ],
        "GetSubscriber": [
            (r.GetSubscriberRequest(phone_number=UNKNOWN), "NOT_FOUND", "SUBSCRIBER_NOT_FOUND"),
        ],
        "TerminateContract": [
            (r.TerminateContractRequest(phone_number=UNKNOWN), "NOT_FOUND", "SUBSCRIBER_NOT_FOUND"),
            (
                # 9: no TerminationReason (a proto3 enum field carries any number)
                r.TerminateContractRequest(
                    phone_number=SUBSCRIBER, reason=cast(events_pb2.TerminationReason, 9)
                ),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "RegisterMessenger": [
            (
                r.RegisterMessengerRequest(messenger_id="Not Valid"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "SuspendMessenger": [
            (r.SuspendMessengerRequest(messenger_id="nobody"), "NOT_FOUND", "MESSENGER_NOT_FOUND"),
        ],
        "ListMessengers": [],
        "PortOut": [
            (
                r.PortOutRequest(phone_number=UNKNOWN, recipient_operator_id="megafon"),
                "NOT_FOUND",
                "SUBSCRIBER_NOT_FOUND",
            ),
            (
                r.PortOutRequest(phone_number=SUBSCRIBER, recipient_operator_id="beeline"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "ImportSubscribers": [
            (r.ImportSubscribersRequest(mode=7), "INVALID_ARGUMENT", "INVALID_FIELD"),  # type: ignore[arg-type]
        ],
        "ListAuditRecords": [
            (r.ListAuditRecordsRequest(page_size=-1), "INVALID_ARGUMENT", "INVALID_FIELD"),
            (
                r.ListAuditRecordsRequest(page_token="not-a-token"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "ListParkedNotices": [
            (r.ListParkedNoticesRequest(page_size=-1), "INVALID_ARGUMENT", "INVALID_FIELD"),
            (
                r.ListParkedNoticesRequest(page_token="not-a-token"),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
        ],
        "RetryParkedNotices": [
            (
                r.RetryParkedNoticesRequest(event_ids=["e"] * 1001),
                "INVALID_ARGUMENT",
                "FIELD_TOO_LONG",
            ),
        ],
        "TerminateContracts": [
            (
                r.TerminateContractsRequest(rows=[r.TerminationRow(line=2)] * 10_001),
                "INVALID_ARGUMENT",
                "FIELD_TOO_LONG",
            ),
        ],
        "Publish": [
            (n.PublishRequest(), "INVALID_ARGUMENT", "INVALID_EVENT"),
        ],
        "Subscribe": [
            (n.SubscribeRequest(messenger_id="beta"), "PERMISSION_DENIED", "MESSENGER_MISMATCH"),
            (
                n.SubscribeRequest(messenger_id="alpha", after_seq=10**12),
                "OUT_OF_RANGE",
                "CURSOR_OUT_OF_RANGE",
            ),
        ],
        "Ack": [
            (
                n.AckRequest(messenger_id="alpha", up_to_seq=10**12),
                "OUT_OF_RANGE",
                "ACK_BEYOND_HEAD",
            ),
            (n.AckRequest(messenger_id=""), "INVALID_ARGUMENT", "INVALID_FIELD"),
        ],
        "GetDeliveryStatus": [
            (
                n.GetDeliveryStatusRequest(messenger_id="beta"),
                "PERMISSION_DENIED",
                "MESSENGER_MISMATCH",
            ),
        ],
    }


def _key(method: MethodDescriptor) -> str:
    if method.name == "CheckNumberReassigned":
        return f"{method.name}@{method.containing_service.name.removesuffix('Service').lower()}"
    return method.name


async def test_every_rpc_refuses_only_with_codes_and_reasons_its_comment_lists(
    client: MeshClient,
) -> None:
    awaiting_user = f"wire-{uuid.uuid4().hex[:8]}"
    started = await client.start("alpha", awaiting_user, AWAITING_NUMBER)
    right = int(client.sms_code("alpha", started.identification_id))
    scenarios = _scenarios(started.identification_id, f"{(right + 1) % 10**6:06d}", awaiting_user)
    callers = Callers(client)
    for method in _methods():
        key = _key(method)
        assert key in scenarios, f"{method.full_name}: no refusal scenario"
        allowed = documented(method)
        for request, code, reason in scenarios.pop(key):
            caught = await callers.call(method, request)
            assert caught is not None, f"{method.full_name} accepted {request}"
            got = (caught.code.name, caught.details.reason)
            assert got == (code, reason), f"{method.full_name}: {got}: {caught.message}"
            assert caught.details.domain == "idmesh"
            if caught.code == grpc.StatusCode.INVALID_ARGUMENT:  # names the field at fault
                assert caught.details.field_violations[0][0], (method.full_name, caught.message)
            assert got in allowed, f"{method.full_name} returned {got}, not in its comment"
        # every RPC checks the caller's identity: a caller it is not for is refused
        service, _ = _caller(method)
        stub = _STUBS[method.containing_service.full_name](
            client._channel(service, _wrong_caller(method))
        )
        refused = await _refuse(stub, method)
        assert refused in allowed, f"{method.full_name}: {refused} not in its comment"
    assert not scenarios, f"scenarios for unknown RPCs: {sorted(scenarios)}"


def _wrong_caller(method: MethodDescriptor) -> Caller:
    if method.name == "Publish":
        return Caller(Kind.MESSENGER, "alpha")  # only operators publish
    return Caller(Kind.OPERATOR, "megafon", Role.ADMIN)  # not for any of these APIs at beeline


async def _refuse(stub: Any, method: MethodDescriptor) -> tuple[str, str]:
    try:
        await invoke(stub, method, GetMessageClass(method.input_type)())
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, error_details(exc).reason
    raise AssertionError(f"{method.full_name} accepted a caller it is not for")


# --- bounded input -----------------------------------------------------------------------------


def _string_paths(message: Descriptor, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """(field path for the refusal, attribute path to set) of every string in a request."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            index = "[0]" if field.is_repeated else ""  # a repeated string: its first item
            yield f"{prefix}{field.name}{index}", [field.name]
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type is not None
            and not field.message_type.full_name.startswith("google.protobuf.")
        ):
            index = "[0]" if field.is_repeated else ""
            for shown, path in _string_paths(field.message_type, f"{prefix}{field.name}{index}."):
                yield shown, [field.name, *path]


def _with_value(message: Descriptor, path: list[str], value: str) -> Message:
    request = GetMessageClass(message)()
    _set(request, path, value)
    return request


def _set(target: Message, path: list[str], value: str) -> None:
    name, rest = path[0], path[1:]
    field = target.DESCRIPTOR.fields_by_name[name]
    if not rest:
        if field.is_repeated:
            getattr(target, name).append(value)
        else:
            setattr(target, name, value)
        return
    child = getattr(target, name).add() if field.is_repeated else getattr(target, name)
    _set(child, rest, value)


async def test_a_megabyte_in_any_string_field_is_refused_promptly_and_the_channel_stays_usable(
    client: MeshClient,
) -> None:
    callers = Callers(client)
    huge = "7" * MB
    checked = 0
    for method in _methods():
        for shown, path in _string_paths(method.input_type):
            caught = await callers.call(method, _with_value(method.input_type, path, huge))
            assert caught is not None, f"{method.full_name}: {shown} of 1 MB was accepted"
            assert (caught.code, caught.details.reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "FIELD_TOO_LONG",
            ), f"{method.full_name} {shown}: {caught.code.name} {caught.message[:200]}"
            assert caught.details.metadata["field"] == shown
            assert len(caught.message) < 200  # no echo of the value
            assert caught.seconds < 10, f"{method.full_name} {shown}: {caught.seconds:.1f} s"
            assert await callers.healthy(method)  # the same channel, right after
            checked += 1
    assert checked > 40


def test_the_bulk_imports_speak_one_vocabulary_on_the_wire() -> None:
    """Each import keeps the ImportMode and RowError types its package first published; the
    registry's ImportMode and the shared one (the gateway's mode) have the same values, and every
    RowError the same fields, so one client code path reads both imports."""

    def values(enum: Any) -> list[tuple[str, int]]:
        return [(v.name, v.number) for v in enum.values]

    def fields(message: Any) -> list[tuple[str, int, int]]:
        return [(f.name, f.number, f.type) for f in message.fields]

    gateway_mode = gateway_pb2.ImportPortedNumbersRequest.DESCRIPTOR.fields_by_name["mode"]
    registry_mode = registry_pb2.ImportSubscribersRequest.DESCRIPTOR.fields_by_name["mode"]
    assert gateway_mode.enum_type is bulk_pb2.ImportMode.DESCRIPTOR
    assert registry_mode.enum_type is registry_pb2.ImportMode.DESCRIPTOR
    assert values(registry_mode.enum_type) == values(gateway_mode.enum_type)
    gateway_errors = gateway_pb2.ImportPortedNumbersResponse.DESCRIPTOR.fields_by_name["errors"]
    registry_errors = registry_pb2.ImportSubscribersResponse.DESCRIPTOR.fields_by_name["errors"]
    assert gateway_errors.message_type is gateway_pb2.RowError.DESCRIPTOR
    assert registry_errors.message_type is registry_pb2.RowError.DESCRIPTOR
    shared = fields(bulk_pb2.RowError.DESCRIPTOR)
    assert fields(gateway_errors.message_type) == fields(registry_errors.message_type) == shared
