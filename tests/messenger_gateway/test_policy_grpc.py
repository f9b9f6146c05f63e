"""The delivery policy over gRPC: the production wiring (open_gateway) with fake registry and
notifier servers; status codes, field names in errors, the batch and the change stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.common.storage import StoreSettings
from tests.eventually import eventually
from tests.messenger_gateway.test_grpc import Harness, running_gateway

ADMIN = Caller(Kind.MESSENGER, "alpha", Role.ADMIN)
S_PHONE, R_PHONE = "+79031234501", "+79031234502"
PB = gateway_pb2
PERSONAL = PB.MESSAGE_KIND_PERSONAL


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path) as harness:
        await harness.identify("s", S_PHONE)
        await harness.identify("r", R_PHONE)
        yield harness


@pytest.fixture
async def admin(gw: Harness) -> AsyncIterator[gateway_pb2_grpc.GatewayAdminServiceStub]:
    async with open_channel(gw.address, identity=ADMIN) as channel:
        yield gateway_pb2_grpc.GatewayAdminServiceStub(channel)


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


async def check(
    gw: Harness, sender: str, recipient: str, kind: gateway_pb2.MessageKind = PERSONAL
) -> Any:
    return await gw.stub.CheckDelivery(
        PB.CheckDeliveryRequest(sender_id=sender, recipient_id=recipient, kind=kind)
    )


async def test_a_refusal_set_by_the_front_end_refuses_the_next_message(gw: Harness) -> None:
    allowed = await check(gw, "s", "r")
    assert (allowed.allowed, allowed.reason) == (True, PB.DELIVERY_REASON_ALLOWED)
    await gw.stub.SetSenderRule(
        PB.SetSenderRuleRequest(user_id="r", sender_id="s", rule=PB.SENDER_RULE_REFUSED)
    )
    refused = await check(gw, "s", "r")
    assert (refused.allowed, refused.reason) == (False, PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER)
    assert "refused" in refused.message
    prefs = await gw.stub.ListPreferences(PB.ListPreferencesRequest(user_id="r"))
    assert [(e.sender_id, e.rule) for e in prefs.sender_rules] == [("s", PB.SENDER_RULE_REFUSED)]
    assert prefs.effective_unaccepted_policy == PB.UNACCEPTED_SENDER_POLICY_ALLOW


async def test_bad_requests_name_the_field_and_unknown_users_are_not_found(gw: Harness) -> None:
    error = await _refused(check(gw, "s", "r", PB.MESSAGE_KIND_UNSPECIFIED))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "kind" in (error.details() or "")
    error = await _refused(check(gw, "", "r"))
    assert "sender_id" in (error.details() or "")
    error = await _refused(
        gw.stub.CheckDeliveryBatch(
            PB.CheckDeliveryBatchRequest(
                pairs=[
                    PB.DeliveryPair(sender_id="s", recipient_id="r", kind=PERSONAL),
                    PB.DeliveryPair(
                        sender_id="s", recipient_id="r", kind=PB.MESSAGE_KIND_UNSPECIFIED
                    ),
                ]
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pairs[1].kind" in (error.details() or "")
    error = await _refused(
        gw.stub.SetSenderRule(PB.SetSenderRuleRequest(user_id="r", sender_id="s"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "rule" in (error.details() or "")
    error = await _refused(
        gw.stub.SetUnacceptedSenderPolicy(
            PB.SetUnacceptedSenderPolicyRequest(
                user_id="ghost", policy=PB.UNACCEPTED_SENDER_POLICY_REFUSE
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_batch_answers_each_pair_in_order(gw: Harness) -> None:
    await gw.stub.SetUnacceptedSenderPolicy(
        PB.SetUnacceptedSenderPolicyRequest(user_id="r", policy=PB.UNACCEPTED_SENDER_POLICY_REFUSE)
    )
    reply = await gw.stub.CheckDeliveryBatch(
        PB.CheckDeliveryBatchRequest(
            pairs=[
                PB.DeliveryPair(sender_id="s", recipient_id="r", kind=PERSONAL),
                PB.DeliveryPair(
                    sender_id="s", recipient_id="r", kind=PB.MESSAGE_KIND_STATE_MAILING
                ),
                PB.DeliveryPair(sender_id="x", recipient_id="r", kind=PERSONAL),
            ]
        )
    )
    assert list(reply.reasons) == [
        PB.DELIVERY_REASON_SENDER_NOT_ACCEPTED,
        PB.DELIVERY_REASON_ALLOWED,
        PB.DELIVERY_REASON_SENDER_NOT_IDENTIFIED,
    ]


async def test_a_restriction_order_through_the_admin_api(
    gw: Harness, admin: gateway_pb2_grpc.GatewayAdminServiceStub
) -> None:
    received = Timestamp()
    received.GetCurrentTime()
    request = PB.RecordRestrictionOrderRequest(
        order_id="RKN-1",
        phone_number=S_PHONE,
        scope=PB.RESTRICTION_SCOPE_ALL_MESSAGES,
        received_at=received,
    )
    recorded = await admin.RecordRestrictionOrder(request)
    assert recorded.created and recorded.order.state == PB.RESTRICTION_ORDER_STATE_IN_FORCE
    assert (await check(gw, "s", "r")).reason == PB.DELIVERY_REASON_SENDER_RESTRICTED
    again = await admin.RecordRestrictionOrder(request)
    assert not again.created
    request.scope = PB.RESTRICTION_SCOPE_AUTOMATED
    error = await _refused(admin.RecordRestrictionOrder(request))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    await admin.LiftRestrictionOrder(PB.LiftRestrictionOrderRequest(order_id="RKN-1"))
    error = await _refused(
        admin.LiftRestrictionOrder(PB.LiftRestrictionOrderRequest(order_id="RKN-1"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    error = await _refused(
        admin.EnforceRestrictionOrder(PB.EnforceRestrictionOrderRequest(order_id="RKN-404"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert (await check(gw, "s", "r")).reason == PB.DELIVERY_REASON_ALLOWED
    listed = await admin.ListRestrictionOrders(
        PB.ListRestrictionOrdersRequest(state=PB.RESTRICTION_ORDER_STATE_LIFTED)
    )
    assert [o.order_id for o in listed.orders] == ["RKN-1"]
    audit = await admin.ListRestrictionAudit(PB.ListRestrictionAuditRequest(order_id="RKN-1"))
    assert [r.action for r in audit.records] == ["RECORDED", "LIFTED"]
    assert {r.actor for r in audit.records} == {ADMIN.uri}
    assert audit.records[0].masked_target == "+7903*****01"


async def test_the_change_stream_starts_with_a_progress_mark_then_carries_changes(
    gw: Harness,
) -> None:
    head = gw.gateway.policy.index.version
    call = gw.stub.WatchPolicyChanges(PB.WatchPolicyChangesRequest(after_version=head), timeout=30)
    first = await call.read()
    assert (list(first.changes), first.head_version) == ([], head)
    await gw.stub.SetAutomatedConsent(
        PB.SetAutomatedConsentRequest(
            user_id="r", sender_id="bot", consent=PB.AUTOMATED_CONSENT_STATE_GRANTED
        )
    )
    item = await call.read()
    assert [(c.version, c.kind, c.user_id, c.sender_id, c.value) for c in item.changes] == [
        (head + 1, PB.POLICY_CHANGE_KIND_AUTOMATED_CONSENT, "r", "bot", "GRANTED")
    ]
    call.cancel()


async def test_two_gateway_replicas_on_one_database_share_the_policy(
    tmp_path: Path, postgres_url: str
) -> None:
    store = StoreSettings(database_url=postgres_url)
    async with (
        running_gateway(tmp_path / "one", store=store) as one,
        running_gateway(tmp_path / "two", store=store) as two,
    ):
        await one.identify("s", S_PHONE)
        await one.identify("r", R_PHONE)
        head = (
            await one.stub.CheckDelivery(
                PB.CheckDeliveryRequest(sender_id="s", recipient_id="r", kind=PERSONAL)
            )
        ).version
        watch = two.stub.WatchPolicyChanges(
            PB.WatchPolicyChangesRequest(after_version=head), timeout=60
        )
        await watch.read()  # the progress mark: the stream is open
        rule = await one.stub.SetSenderRule(
            PB.SetSenderRuleRequest(user_id="r", sender_id="s", rule=PB.SENDER_RULE_REFUSED)
        )
        # read-your-writes at the other replica, whatever its tailer has done yet
        refused = await two.stub.CheckDelivery(
            PB.CheckDeliveryRequest(
                sender_id="s", recipient_id="r", kind=PERSONAL, min_version=rule.version
            )
        )
        assert refused.reason == PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER
        assert refused.version >= rule.version
        changes: list[Any] = []
        while not changes:
            item = await asyncio.wait_for(watch.read(), 30)
            changes.extend(item.changes)
        assert [(c.version, c.kind, c.user_id, c.sender_id, c.value) for c in changes] == [
            (rule.version, PB.POLICY_CHANGE_KIND_SENDER_RULE, "r", "s", "REFUSED")
        ]
        watch.cancel()
        # and the other way round, through the other replica's tailer alone (no min_version)
        await two.stub.SetUnacceptedSenderPolicy(
            PB.SetUnacceptedSenderPolicyRequest(
                user_id="s", policy=PB.UNACCEPTED_SENDER_POLICY_REFUSE
            )
        )

        async def refused_at_one() -> bool:
            answer = await check(one, "r", "s")
            return bool(answer.reason == PB.DELIVERY_REASON_SENDER_NOT_ACCEPTED)

        await eventually(refused_at_one, within=15, what="the first replica's decision")


async def test_the_policy_metrics_are_served(gw: Harness) -> None:
    names = {m.name for m in await gw.gateway.policy.policy_metrics()}
    assert {
        "idmesh_gateway_restriction_orders",
        "idmesh_gateway_oldest_received_restriction_order_age_seconds",
        "idmesh_gateway_restriction_order_limit_seconds",
        "idmesh_gateway_restriction_orders_late",
        "idmesh_gateway_policy_index_version",
    } <= names
