"""The delivery policy over the real mesh, with two gateway processes of messenger alpha sharing
one store: a revoked identification, a restriction order and a refusal each stop the next
message, on the process that took the change at once and on the other within its poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.localmesh import Mesh, MeshClient, MeshSpec, MessengerSpec, demo_spec, mesh_client
from tests.eventually import eventually
from tests.integration.test_identification import new_subscriber, user

pytestmark = pytest.mark.mesh

PB = gateway_pb2
REPLICAS = ("", "-2")
PERSONAL = PB.MESSAGE_KIND_PERSONAL


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            type(o)(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        messengers=(MessengerSpec("alpha", verification_window_seconds=30, replicas=2),),
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("policy-mesh"))
    the_mesh.start()
    yield the_mesh
    the_mesh.stop()


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh_client(mesh) as c:
        yield c


async def identified_pair(client: MeshClient) -> tuple[str, str, str]:
    """(sender, its phone, recipient), both IDENTIFIED at alpha."""
    users = []
    for _ in range(2):
        phone, u = await new_subscriber(client, "beeline", "+7903"), user()
        done = await client.identify("alpha", u, phone)
        assert done.state == PB.IDENTIFICATION_STATE_IDENTIFIED, done
        users.append((u, phone))
    return users[0][0], users[0][1], users[1][0]


async def reason(
    client: MeshClient,
    replica: str,
    sender: str,
    recipient: str,
    kind: gateway_pb2.MessageKind = PERSONAL,
) -> int:
    reply = await client.gateway("alpha", replica).CheckDelivery(
        PB.CheckDeliveryRequest(sender_id=sender, recipient_id=recipient, kind=kind), timeout=5
    )
    return int(reply.reason)


async def until_reason(
    client: MeshClient, replica: str, sender: str, recipient: str, expected: int, timeout: float
) -> None:
    async def reached() -> bool:
        return await reason(client, replica, sender, recipient) == expected

    await eventually(
        reached,
        within=timeout,
        what=f"gateway-alpha{replica} to answer {PB.DeliveryReason.Name(expected)}",
    )


async def test_a_revoked_identification_stops_the_next_message(client: MeshClient) -> None:
    sender, phone, recipient = await identified_pair(client)
    for replica in REPLICAS:  # the second process learns of the identifications by its poll
        await until_reason(client, replica, sender, recipient, PB.DELIVERY_REASON_ALLOWED, 10)
    await client.registry_admin("beeline").TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=phone), timeout=5
    )
    for replica in REPLICAS:  # the notice travels registry -> notifier -> a gateway
        await until_reason(
            client, replica, sender, recipient, PB.DELIVERY_REASON_SENDER_NOT_IDENTIFIED, 20
        )
        revoked = await client.gateway("alpha", replica).GetIdentification(
            PB.GetIdentificationRequest(user_id=sender), timeout=5
        )
        assert revoked.identification.state == PB.IDENTIFICATION_STATE_REVOKED


async def test_a_restriction_order_stops_the_next_message_on_every_replica(
    client: MeshClient,
) -> None:
    sender, phone, recipient = await identified_pair(client)
    await until_reason(client, "-2", sender, recipient, PB.DELIVERY_REASON_ALLOWED, 10)
    admin = client.gateway_admin("alpha")  # the first process
    received = Timestamp()
    received.GetCurrentTime()
    recorded = await admin.RecordRestrictionOrder(
        PB.RecordRestrictionOrderRequest(
            order_id=f"RKN-{sender}",
            phone_number=phone,
            scope=PB.RESTRICTION_SCOPE_ALL_MESSAGES,
            received_at=received,
        ),
        timeout=5,
    )
    assert recorded.order.state == PB.RESTRICTION_ORDER_STATE_IN_FORCE
    assert await reason(client, "", sender, recipient) == PB.DELIVERY_REASON_SENDER_RESTRICTED
    await until_reason(client, "-2", sender, recipient, PB.DELIVERY_REASON_SENDER_RESTRICTED, 10)

    await admin.LiftRestrictionOrder(
        PB.LiftRestrictionOrderRequest(order_id=f"RKN-{sender}", reason="test"), timeout=5
    )
    assert await reason(client, "", sender, recipient) == PB.DELIVERY_REASON_ALLOWED
    await until_reason(client, "-2", sender, recipient, PB.DELIVERY_REASON_ALLOWED, 10)
    audit = await admin.ListRestrictionAudit(
        PB.ListRestrictionAuditRequest(order_id=f"RKN-{sender}"), timeout=5
    )
    assert [r.action for r in audit.records] == ["RECORDED", "LIFTED"]


async def test_a_refusal_stops_the_next_message_and_reaches_the_other_replicas_stream(
    client: MeshClient,
) -> None:
    sender, _, recipient = await identified_pair(client)
    first = client.gateway("alpha", "")
    head = (await first.CheckDelivery(
        PB.CheckDeliveryRequest(sender_id=sender, recipient_id=recipient, kind=PERSONAL),
        timeout=5,
    )).version  # fmt: skip
    stream = first.WatchPolicyChanges(PB.WatchPolicyChangesRequest(after_version=head))
    try:
        mark = await asyncio.wait_for(stream.read(), 10)
        assert not mark.changes
        written = await client.gateway("alpha", "-2").SetSenderRule(
            PB.SetSenderRuleRequest(
                user_id=recipient, sender_id=sender, rule=PB.SENDER_RULE_REFUSED
            ),
            timeout=5,
        )
        assert (
            await reason(client, "-2", sender, recipient)
            == PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER
        )
        # the other process, asked at the write's version, reads it at once (no poll needed)
        decided = await first.CheckDelivery(
            PB.CheckDeliveryRequest(
                sender_id=sender,
                recipient_id=recipient,
                kind=PERSONAL,
                min_version=written.version,
            ),
            timeout=5,
        )
        assert decided.reason == PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER
        assert decided.version >= written.version
        seen: list[PB.PolicyChange] = []
        while not any(c.kind == PB.POLICY_CHANGE_KIND_SENDER_RULE for c in seen):
            item = await asyncio.wait_for(stream.read(), 20)
            seen.extend(item.changes)
        rule = next(c for c in seen if c.kind == PB.POLICY_CHANGE_KIND_SENDER_RULE)
        assert (rule.user_id, rule.sender_id, rule.value) == (recipient, sender, "REFUSED")
    finally:
        stream.cancel()
    batch = await client.gateway("alpha", "-2").CheckDeliveryBatch(
        PB.CheckDeliveryBatchRequest(
            pairs=[
                PB.DeliveryPair(sender_id=sender, recipient_id=recipient, kind=PERSONAL),
                PB.DeliveryPair(
                    sender_id=sender, recipient_id=recipient, kind=PB.MESSAGE_KIND_STATE_MAILING
                ),
            ]
        ),
        timeout=5,
    )
    assert list(batch.reasons) == [
        PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER,
        PB.DELIVERY_REASON_ALLOWED,
    ]
