"""Drive a running local mesh through its public gRPC APIs, as a messenger's front end or admin,
an operator's admin, or a messenger calling a registry or the notifier: each stub on a channel
with that caller's mutual-TLS identity from the mesh's development PKI."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Set
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.localmesh import sms
from services.localmesh.eventually import eventually
from services.localmesh.mesh import Mesh

State = gateway_pb2.IdentificationState


class MeshClient:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._channels: list[Any] = []

    def _channel(self, service: str, identity: Caller) -> Any:
        channel = open_channel(
            self.mesh.address(service), identity=identity, tls=self.mesh.credentials(identity)
        )
        self._channels.append(channel)
        return channel

    def gateway(self, messenger: str, replica: str = "") -> gateway_pb2_grpc.GatewayServiceStub:
        identity = Caller(Kind.MESSENGER, messenger, Role.FRONTEND)
        return gateway_pb2_grpc.GatewayServiceStub(
            self._channel(f"gateway-{messenger}{replica}", identity)
        )

    def gateway_admin(self, messenger: str) -> gateway_pb2_grpc.GatewayAdminServiceStub:
        identity = Caller(Kind.MESSENGER, messenger, Role.ADMIN)
        return gateway_pb2_grpc.GatewayAdminServiceStub(
            self._channel(f"gateway-{messenger}", identity)
        )

    def registry_admin(self, operator: str) -> registry_pb2_grpc.RegistryAdminServiceStub:
        identity = Caller(Kind.OPERATOR, operator, Role.ADMIN)
        return registry_pb2_grpc.RegistryAdminServiceStub(
            self._channel(f"registry-{operator}", identity)
        )

    def registry_as_messenger(
        self, operator: str, messenger: str
    ) -> registry_pb2_grpc.RegistryServiceStub:
        identity = Caller(Kind.MESSENGER, messenger)
        return registry_pb2_grpc.RegistryServiceStub(
            self._channel(f"registry-{operator}", identity)
        )

    def notifier_as(self, messenger: str) -> notifier_pb2_grpc.NotifierServiceStub:
        return notifier_pb2_grpc.NotifierServiceStub(
            self._channel("notifier", Caller(Kind.MESSENGER, messenger))
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def sms_code(self, messenger: str, identification_id: str) -> str:
        """The one-time code the gateway sent for an identification (its development SMS
        outbox); LookupError if none was sent."""
        outbox = Path(self.mesh.services[f"gateway-{messenger}"].info["sms_outbox"])
        code = sms.latest_code(outbox, identification_id=identification_id)
        if code is None:
            raise LookupError(f"no SMS for identification {identification_id} in {outbox}")
        return code

    async def start(self, messenger: str, user: str, phone: str) -> gateway_pb2.Identification:
        reply: gateway_pb2.StartIdentificationResponse = await self.gateway(
            messenger
        ).StartIdentification(
            gateway_pb2.StartIdentificationRequest(user_id=user, phone_number=phone), timeout=10
        )
        return reply.identification

    async def confirm(
        self, messenger: str, identification: gateway_pb2.Identification, *, timeout: float = 20
    ) -> gateway_pb2.Identification:
        code = self.sms_code(messenger, identification.identification_id)
        reply: gateway_pb2.ConfirmPossessionResponse = await self.gateway(
            messenger
        ).ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=identification.identification_id, code=code
            ),
            timeout=timeout,
        )
        return reply.identification

    async def identify(self, messenger: str, user: str, phone: str) -> gateway_pb2.Identification:
        started = await self.start(messenger, user, phone)
        return await self.confirm(messenger, started)

    async def confirm_pending(
        self, messenger: str, identification: gateway_pb2.Identification
    ) -> gateway_pb2.Identification:
        """Confirm the code without waiting for the operator's answer (max_wait 0: the gateway
        stores VERIFYING, starts the verification and answers at once), under a deadline with
        a real margin; the identification as it then stands (VERIFYING, or later if the answer
        came at once)."""
        code = self.sms_code(messenger, identification.identification_id)
        request = gateway_pb2.ConfirmPossessionRequest(
            identification_id=identification.identification_id, code=code
        )
        request.max_wait.FromTimedelta(timedelta(0))
        reply: gateway_pb2.ConfirmPossessionResponse = await self.gateway(
            messenger
        ).ConfirmPossession(request, timeout=30)
        return reply.identification

    async def identification(
        self, messenger: str, user: str, replica: str = ""
    ) -> gateway_pb2.Identification:
        reply: gateway_pb2.GetIdentificationResponse = await self.gateway(
            messenger, replica
        ).GetIdentification(gateway_pb2.GetIdentificationRequest(user_id=user), timeout=10)
        return reply.identification

    async def wait_state(
        self, messenger: str, user: str, states: Set[int], *, timeout: float = 30, replica: str = ""
    ) -> gateway_pb2.Identification:
        """Until the user's identification is in one of `states` (bounded); it."""

        async def reached() -> gateway_pb2.Identification | None:
            ident = await self.identification(messenger, user, replica)
            return ident if ident.state in states else None

        names = ", ".join(sorted(State.Name(s) for s in states))
        result: gateway_pb2.Identification = await eventually(
            reached, within=timeout, what=f"{user} to be {names}"
        )
        return result

    async def wait_revoked(
        self, messenger: str, user: str, *, timeout: float = 30
    ) -> gateway_pb2.Identification:
        """Until a termination notice has been applied to the user's identification (REVOKED)."""
        return await self.wait_state(
            messenger, user, {State.IDENTIFICATION_STATE_REVOKED}, timeout=timeout
        )

    async def create_subscriber(
        self, operator: str, phone: str | None = None, *, prefix: str = "+7903"
    ) -> str:
        """A new active contract at operator for phone (default: a fresh number in the range
        prefix, which the mesh's numbering plan routes to operator); the number."""
        number = phone or fresh_number(prefix)
        await self.registry_admin(operator).CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(
                phone_number=number, contract_id=f"C-{uuid.uuid4().hex[:10]}"
            ),
            timeout=10,
        )
        return number

    async def terminate_contract(self, operator: str, phone: str) -> int:
        """End the subscriber's contract at operator; the notices queued for messengers."""
        reply = await self.registry_admin(operator).TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=phone), timeout=10
        )
        return int(reply.notices_queued)

    async def bindings(self, operator: str, phone: str) -> dict[str, str]:
        reply = await self.registry_admin(operator).GetSubscriber(
            registry_pb2.GetSubscriberRequest(phone_number=phone), timeout=5
        )
        return {b.messenger_id: b.identification_code for b in reply.subscriber.bindings}


def fresh_number(prefix: str = "+7903") -> str:
    """A random Russian mobile number in the range prefix (+7 and three digits)."""
    return f"{prefix}{secrets.randbelow(10_000_000):07d}"


@asynccontextmanager
async def mesh_client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    client = MeshClient(mesh)
    try:
        yield client
    finally:
        await client.close()


def log_lines_with(mesh: Mesh, service: str, text: str) -> list[dict[str, Any]]:
    """The JSON log lines `service` has written so far that contain text (an id, say)."""
    log = mesh.services[service].log_path
    return [json.loads(line) for line in log.read_text().splitlines() if text in line]
