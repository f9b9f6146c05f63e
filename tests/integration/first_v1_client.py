"""A client written against the v1 API as first published, run in a process of its own.

tests/integration/test_first_v1_clients.py generates the Python code of that version (from
protos/baseline/v1.binpb) into a folder, and runs this script with only that folder in front of
the path: it imports nothing of the project, so what it sees is what a team that built its client
on the first v1 sees (it waits with the project's tests/eventually.py, which imports no API
code). It drives a running mesh through every API, as a messenger and as an operator, and prints
what it observed as one JSON document; the test asserts on it.

    python first_v1_client.py PARAMS_JSON   (PARAMS_JSON: addresses, TLS files, numbers)
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

sys.path.append(str(Path(__file__).resolve().parents[2]))  # after the v1 code: tests.eventually
from tests.eventually import eventually

State = gateway_pb2.IdentificationState


def channel(params: dict[str, Any], service: str, role: str) -> grpc.aio.Channel:
    ca, cert, key = (Path(params["tls"][role][part]).read_bytes() for part in ("ca", "cert", "key"))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(params["addresses"][service], credentials)


def sms_code(outbox: Path, identification_id: str) -> str | None:
    """The one-time code the demo SMS sender wrote for the identification (JSON lines)."""
    if not outbox.exists():
        return None
    for line in reversed(outbox.read_text().splitlines()):
        if line.strip() and json.loads(line).get("identification_id") == identification_id:
            return str(json.loads(line)["code"])
    return None


async def main(params: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {"code_files": {"notifier_pb2": notifier_pb2.__file__}}
    user, phone, other = params["user"], params["phone"], params["other_phone"]
    gateway_ch = channel(params, "gateway", "frontend")
    admin_ch = channel(params, "gateway", "gateway_admin")
    registry_admin_ch = channel(params, "registry", "operator_admin")
    registry_ch = channel(params, "registry", "messenger")
    notifier_ch = channel(params, "notifier", "messenger")
    gateway = gateway_pb2_grpc.GatewayServiceStub(gateway_ch)
    admin = gateway_pb2_grpc.GatewayAdminServiceStub(admin_ch)
    registry_admin = registry_pb2_grpc.RegistryAdminServiceStub(registry_admin_ch)
    registry = registry_pb2_grpc.RegistryServiceStub(registry_ch)
    notifier = notifier_pb2_grpc.NotifierServiceStub(notifier_ch)
    messenger = params["messenger"]
    try:
        # The operator records two contracts; the messenger identifies a user on the first.
        for number, contract in ((phone, params["contract"]), (other, params["other_contract"])):
            await registry_admin.CreateSubscriber(
                registry_pb2.CreateSubscriberRequest(phone_number=number, contract_id=contract),
                timeout=10,
            )
        started = await gateway.StartIdentification(
            gateway_pb2.StartIdentificationRequest(user_id=user, phone_number=phone), timeout=10
        )
        ident_id = started.identification.identification_id
        outbox = Path(params["sms_outbox"])

        async def code_sent() -> str | None:
            return sms_code(outbox, ident_id)

        code = await eventually(code_sent, within=60, what="the one-time code")
        await gateway.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(identification_id=ident_id, code=code),
            timeout=30,
        )

        async def state_is(wanted: int) -> gateway_pb2.Identification | None:
            reply = await gateway.GetIdentification(
                gateway_pb2.GetIdentificationRequest(user_id=user), timeout=10
            )
            return reply.identification if reply.identification.state == wanted else None

        identified = await eventually(
            lambda: state_is(State.IDENTIFICATION_STATE_IDENTIFIED), within=60, what="IDENTIFIED"
        )
        access = await gateway.CheckAccess(gateway_pb2.CheckAccessRequest(user_id=user))
        seen["identification"] = {
            "state": State.Name(identified.state),
            "operator_id": identified.operator_id,
            "allowed": access.allowed,
        }

        subscriber = await registry_admin.GetSubscriber(
            registry_pb2.GetSubscriberRequest(phone_number=phone), timeout=10
        )
        bound = {b.messenger_id: b.identification_code for b in subscriber.subscriber.bindings}

        # The messenger watches its notices from the head; the operator ends the contract.
        status = await notifier.GetDeliveryStatus(
            notifier_pb2.GetDeliveryStatusRequest(messenger_id=messenger), timeout=10
        )
        stream = notifier.Subscribe(
            notifier_pb2.SubscribeRequest(messenger_id=messenger, after_seq=status.head_seq),
            timeout=90,
        )
        terminated = await registry_admin.TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=phone), timeout=10
        )
        kinds: list[str | None] = []
        notice: Any = None
        async for message in stream:
            kinds.append(message.WhichOneof("kind"))
            if message.HasField("notice"):
                notice = message.notice
                break
            if message.HasField("progress") and message.progress.head_seq > status.head_seq:
                break  # a mark past the event: the stream went on without its notice
        stream.cancel()
        seen["termination"] = {"notices_queued": terminated.notices_queued}
        seen["stream"] = {
            "head_before": status.head_seq,
            "kinds": kinds,
            "notice": None
            if notice is None
            else {
                "seq": notice.seq,
                "phone_number": notice.event.phone_number,
                "messenger_id": notice.event.messenger_id,
                "identification_code": notice.event.identification_code,
                "reason": notice.event.reason,
            },
        }
        revoked = await eventually(
            lambda: state_is(State.IDENTIFICATION_STATE_REVOKED), within=60, what="REVOKED"
        )
        access = await gateway.CheckAccess(gateway_pb2.CheckAccessRequest(user_id=user))
        seen["revocation"] = {
            "state": State.Name(revoked.state),
            "allowed": access.allowed,
            "identification_code": bound.get(messenger),
        }

        # VerifySubscriber under its first name for the key, then the same key again.
        key = f"v1-{user}"
        asked = [
            await registry.VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(request_id=key, phone_number=other),
                timeout=10,
            )
            for _ in range(2)
        ]
        try:  # the same key for another number
            await registry.VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(request_id=key, phone_number=phone),
                timeout=10,
            )
            reused = "OK"
        except grpc.aio.AioRpcError as exc:
            reused = exc.code().name
        audit = await registry_admin.ListAuditRecords(
            registry_pb2.ListAuditRecordsRequest(messenger_id=messenger), timeout=10
        )
        audit_reused = await registry_admin.ListAuditRecords(
            registry_pb2.ListAuditRecordsRequest(
                messenger_id=messenger, outcome="REQUEST_ID_REUSED"
            ),
            timeout=10,
        )
        seen["verify"] = {
            "results": [registry_pb2.VerificationResult.Name(a.result) for a in asked],
            "same_code": asked[0].identification_code == asked[1].identification_code,
            "reused": reused,
            "audited_request_ids": [r.request_id for r in audit.records if r.request_id == key],
            "audited_reuses": [r.request_id for r in audit_reused.records],
        }

        # The imports, as the first v1 documented them.
        yesterday = datetime.now(UTC) - timedelta(days=1)

        async def ported_rows() -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
            good = gateway_pb2.PortedNumber(
                line=2, phone_number=params["ported_phone"], recipient_operator_id="megafon"
            )
            good.ported_at.FromDatetime(yesterday)
            bad = gateway_pb2.PortedNumber(line=3, phone_number="+7903", recipient_operator_id="x")
            yield gateway_pb2.ImportPortedNumbersRequest(rows=[good, bad])  # nothing else set

        ported = await admin.ImportPortedNumbers(ported_rows(), timeout=30)
        route = await admin.ResolveOperator(
            gateway_pb2.ResolveOperatorRequest(phone_number=params["ported_phone"]), timeout=10
        )
        seen["import_ported"] = {
            "imported": ported.imported,
            "rejected": ported.rejected,
            "committed": ported.committed,
            "error_lines": [e.line for e in ported.errors],
            "route": [route.operator_id, gateway_pb2.RouteSource.Name(route.source)],
        }

        async def subscriber_rows(
            mode: registry_pb2.ImportMode,
        ) -> AsyncIterator[registry_pb2.ImportSubscribersRequest]:
            good = registry_pb2.SubscriberRow(
                line=2,
                phone_number=params["imported_phone"],
                contract_id=params["imported_contract"],
            )
            good.activated_at.FromDatetime(yesterday)
            bad = registry_pb2.SubscriberRow(line=3, phone_number="+7903", contract_id="bad")
            bad.activated_at.FromDatetime(yesterday)
            yield registry_pb2.ImportSubscribersRequest(mode=mode, rows=[good, bad])

        imports = {}
        for name, mode in (
            ("unset", registry_pb2.IMPORT_MODE_UNSPECIFIED),
            ("valid_rows", registry_pb2.IMPORT_MODE_VALID_ROWS),
        ):
            reply = await registry_admin.ImportSubscribers(subscriber_rows(mode), timeout=30)
            imports[name] = {
                "imported": reply.imported,
                "rejected": reply.rejected,
                "committed": reply.committed,
                "error_lines": [e.line for e in reply.errors],
            }
        seen["import_subscribers"] = imports
    finally:
        for ch in (gateway_ch, admin_ch, registry_admin_ch, registry_ch, notifier_ch):
            await ch.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
