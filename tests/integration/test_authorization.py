"""The authorization matrix over mutual TLS, cell by cell: every RPC of every service, called
with the certificate of every identity in the mesh. A refused cell is PERMISSION_DENIED with a
message that names the caller and the rule; an allowed cell gets past authorization (any other
status: the empty request may well be INVALID_ARGUMENT)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
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
    BEELINE,
    BEELINE_ADMIN,
    MEGAFON,
    MEGAFON_ADMIN,
    NOTIFIER,
)
REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def _requests(method: MethodDescriptor) -> list[Any]:
    """The request to send: empty, except where the request names the scope (a messenger or
    the publishing operator), which is then the scope under test."""
    request_class = message_factory.GetMessageClass(method.input_type)
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
    raise AssertionError(f"no matrix row for {service}")


CELLS = [
    (process, descriptor.services_by_name[name], method)
    for process, descriptor, names in (
        ("registry-beeline", registry_pb2.DESCRIPTOR, ("RegistryService", "RegistryAdminService")),
        ("registry-megafon", registry_pb2.DESCRIPTOR, ("RegistryService", "RegistryAdminService")),
        ("notifier", notifier_pb2.DESCRIPTOR, ("NotifierService",)),
        ("gateway-alpha", gateway_pb2.DESCRIPTOR, ("GatewayService", "GatewayAdminService")),
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
                    if code in REFUSED:
                        assert identity.id in (exc.details() or ""), exc.details()
                assert code != grpc.StatusCode.UNIMPLEMENTED, f"{method.full_name} unimplemented"
                refused = code in REFUSED
                if refused == (identity in allowed):
                    expected = "allowed" if identity in allowed else "refused"
                    outcomes[identity.uri] = f"{code.name} (expected {expected})"
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
