"""The authorization matrix over mutual TLS, cell by cell: every RPC of every service (both
gateways included), called with the certificate of every identity in the mesh. A refused cell is
PERMISSION_DENIED with a message that names the caller; an allowed cell gets the answer its
request earns (OK, or the domain error of an empty request), never a transport failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.localmesh import Mesh

pytestmark = pytest.mark.mesh

ALPHA = Caller(Kind.MESSENGER, "alpha")
ALPHA_FRONTEND = Caller(Kind.MESSENGER, "alpha", Role.FRONTEND)
ALPHA_ADMIN = Caller(Kind.MESSENGER, "alpha", Role.ADMIN)
BETA = Caller(Kind.MESSENGER, "beta")
BETA_FRONTEND = Caller(Kind.MESSENGER, "beta", Role.FRONTEND)
BETA_ADMIN = Caller(Kind.MESSENGER, "beta", Role.ADMIN)
BEELINE = Caller(Kind.OPERATOR, "beeline")
BEELINE_ADMIN = Caller(Kind.OPERATOR, "beeline", Role.ADMIN)
MEGAFON = Caller(Kind.OPERATOR, "megafon")
MEGAFON_ADMIN = Caller(Kind.OPERATOR, "megafon", Role.ADMIN)
NOTIFIER = Caller(Kind.NOTIFIER, "notifier")
EVERYONE = (
    ALPHA,
    ALPHA_FRONTEND,
    ALPHA_ADMIN,
    BETA,
    BETA_FRONTEND,
    BETA_ADMIN,
    BEELINE,
    BEELINE_ADMIN,
    MEGAFON,
    MEGAFON_ADMIN,
    NOTIFIER,
)
# Every identity below holds a valid certificate of the mesh: a refusal is PERMISSION_DENIED
# (UNAUTHENTICATED is for a caller without one).
REFUSED = grpc.StatusCode.PERMISSION_DENIED

# What an allowed caller gets for the request _requests() sends: the methods below answer it,
# Subscribe after a seq beyond the head is OUT_OF_RANGE, and every other method finds a required
# field empty (INVALID_ARGUMENT). Never UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN or INTERNAL: a
# wedged or crashing server fails the cell.
ANSWERED = {
    "idmesh.gateway.v1.GatewayAdminService.ImportPortedNumbers",
    "idmesh.gateway.v1.GatewayAdminService.ListRestrictionAudit",
    "idmesh.gateway.v1.GatewayAdminService.ListRestrictionOrders",
    "idmesh.gateway.v1.GatewayService.CheckDeliveryBatch",
    "idmesh.gateway.v1.GatewayService.WatchPolicyChanges",
    "idmesh.notifier.v1.NotifierService.Ack",
    "idmesh.notifier.v1.NotifierService.GetDeliveryStatus",
    "idmesh.registry.v1.RegistryAdminService.ImportSubscribers",
    "idmesh.registry.v1.RegistryAdminService.ListAuditRecords",
    "idmesh.registry.v1.RegistryAdminService.ListMessengers",
    "idmesh.registry.v1.RegistryAdminService.ListParkedNotices",
    "idmesh.registry.v1.RegistryAdminService.RetryParkedNotices",
    "idmesh.registry.v1.RegistryAdminService.TerminateContracts",
}


def expected_when_allowed(method: MethodDescriptor) -> grpc.StatusCode:
    if method.full_name in ANSWERED:
        return grpc.StatusCode.OK
    if method.full_name == "idmesh.notifier.v1.NotifierService.Subscribe":
        return grpc.StatusCode.OUT_OF_RANGE
    return grpc.StatusCode.INVALID_ARGUMENT


def _requests(method: MethodDescriptor) -> list[Any]:
    """The request to send: empty, except where the request names the scope (a messenger or
    the publishing operator), which is then the scope under test."""
    # a generated class: its constructor takes the message's fields as keywords
    request_class: Callable[..., Message] = message_factory.GetMessageClass(method.input_type)
    if method.full_name.startswith("idmesh.notifier.v1.NotifierService."):
        if method.name == "Publish":
            event = events_pb2.ContractTerminated(operator_id="beeline")
            return [notifier_pb2.PublishRequest(events=[event])]
        if method.name == "Subscribe":
            return [notifier_pb2.SubscribeRequest(messenger_id="alpha", after_seq=1 << 60)]
        return [request_class(messenger_id="alpha")]
    return [request_class()]


def _allowed(service: str, method: str) -> set[Caller]:
    """The matrix (issue: identity on the wire), as the services must enforce it."""
    if service == "registry-beeline/idmesh.registry.v1.RegistryService":
        return {ALPHA, BETA}  # messengers with an active agreement with beeline
    if service == "registry-megafon/idmesh.registry.v1.RegistryService":
        return {ALPHA}  # megafon has no agreement with beta
    if service == "registry-beeline/idmesh.registry.v1.RegistryAdminService":
        return {BEELINE_ADMIN}
    if service == "registry-megafon/idmesh.registry.v1.RegistryAdminService":
        return {MEGAFON_ADMIN}
    if service == "notifier/idmesh.notifier.v1.NotifierService":
        return {BEELINE} if method == "Publish" else {ALPHA}  # own name / own stream only
    if service == "gateway-alpha/idmesh.gateway.v1.GatewayService":
        return {ALPHA_FRONTEND}
    if service == "gateway-alpha/idmesh.gateway.v1.GatewayAdminService":
        return {ALPHA_ADMIN}
    if service == "gateway-beta/idmesh.gateway.v1.GatewayService":
        return {BETA_FRONTEND}
    if service == "gateway-beta/idmesh.gateway.v1.GatewayAdminService":
        return {BETA_ADMIN}
    raise AssertionError(f"no matrix row for {service}")


CELLS = [
    (process, descriptor.services_by_name[name], method)
    for process, descriptor, names in (
        ("registry-beeline", registry_pb2.DESCRIPTOR, ("RegistryService", "RegistryAdminService")),
        ("registry-megafon", registry_pb2.DESCRIPTOR, ("RegistryService", "RegistryAdminService")),
        ("notifier", notifier_pb2.DESCRIPTOR, ("NotifierService",)),
        ("gateway-alpha", gateway_pb2.DESCRIPTOR, ("GatewayService", "GatewayAdminService")),
        ("gateway-beta", gateway_pb2.DESCRIPTOR, ("GatewayService", "GatewayAdminService")),
    )
    for name in names
    for method in descriptor.services_by_name[name].methods
]


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, request: Any) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response_class.FromString,
    }
    if method.server_streaming:
        call = channel.unary_stream(path, **kwargs)(request, timeout=5)
        async for _ in call:
            call.cancel()
            break
    elif method.client_streaming:

        async def requests() -> Any:
            return
            yield  # an empty stream

        await channel.stream_unary(path, **kwargs)(requests(), timeout=5)
    else:
        await channel.unary_unary(path, **kwargs)(request, timeout=5)


@pytest.mark.parametrize(
    ("process", "service", "method"),
    CELLS,
    ids=[f"{p}:{s.name}.{m.name}" for p, s, m in CELLS],
)
async def test_authorization_cell(mesh: Mesh, process: str, service: Any, method: Any) -> None:
    allowed = _allowed(f"{process}/{service.full_name}", method.name)
    outcomes: dict[str, str] = {}
    for identity in EVERYONE:
        tls = mesh.credentials(identity)
        async with open_channel(mesh.address(process), identity=identity, tls=tls) as channel:
            for request in _requests(method):
                try:
                    await _call(channel, method, request)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if code == grpc.StatusCode.PERMISSION_DENIED:
                        assert identity.id in (exc.details() or ""), exc.details()
                expected = expected_when_allowed(method) if identity in allowed else REFUSED
                if code != expected:
                    outcomes[identity.uri] = f"{code.name} (expected {expected.name})"
    assert not outcomes, outcomes


async def test_verification_requests_are_in_the_operators_audit_trail(mesh: Mesh) -> None:
    """Refused and answered requests alike, masked, readable by the operator's admin only."""
    registry = registry_pb2_grpc.RegistryServiceStub(
        open_channel(mesh.address("registry-megafon"), identity=BETA, tls=mesh.credentials(BETA))
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await registry.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(
                idempotency_key="audit-1", phone_number="+79261112233"
            ),
            timeout=5,
        )
    admin = registry_pb2_grpc.RegistryAdminServiceStub(
        open_channel(
            mesh.address("registry-megafon"),
            identity=MEGAFON_ADMIN,
            tls=mesh.credentials(MEGAFON_ADMIN),
        )
    )
    page = await admin.ListAuditRecords(
        registry_pb2.ListAuditRecordsRequest(messenger_id="beta"), timeout=5
    )
    record = next(r for r in page.records if r.idempotency_key == "audit-1")
    assert record.outcome == "NO_AGREEMENT"
    assert record.masked_phone_number == "+7926*****33"
