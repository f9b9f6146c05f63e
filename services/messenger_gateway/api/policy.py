"""The delivery policy's RPCs, as mixins of the gateway's two servicers (api/gateway.py): check the
caller, map pb2 to the domain, call PolicyService, map back. Errors go through the gateway's one
error table (api/gateway.py's ERRORS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from idmesh.gateway.v1 import gateway_pb2

from services.common.errors import InvalidInput
from services.common.identity import Caller, Kind, Role, require_caller
from services.common.timeutil import from_timestamp, to_timestamp
from services.messenger_gateway.policy.forwarding import ShardedDecisions
from services.messenger_gateway.policy.model import (
    DELIVERY_TEXT,
    AutomatedConsent,
    ChangeKind,
    Consent,
    DeliveryReason,
    MessageKind,
    OrderAuditRecord,
    OrderScope,
    OrderState,
    OrderTarget,
    PolicyChange,
    RestrictionOrder,
    SenderRule,
    UnacceptedPolicy,
)
from services.messenger_gateway.policy.service import PolicyService

# ConfirmPossession waits for the operator's answer until the caller's deadline less a margin
# (so that the reply still arrives in time), or WAIT_CAP seconds when the caller set none.
WAIT_MARGIN = 0.5
WAIT_CAP = 30.0


def wait_budget(time_remaining: float | None) -> float:
    if time_remaining is None:
        return WAIT_CAP
    return max(0.0, time_remaining - min(WAIT_MARGIN, time_remaining / 2))


KIND_FROM_PB: dict[int, MessageKind] = {
    gateway_pb2.MESSAGE_KIND_PERSONAL: MessageKind.PERSONAL,
    gateway_pb2.MESSAGE_KIND_AUTOMATED: MessageKind.AUTOMATED,
    gateway_pb2.MESSAGE_KIND_STATE_MAILING: MessageKind.STATE_MAILING,
}
KIND_TO_PB: dict[MessageKind, int] = {v: k for k, v in KIND_FROM_PB.items()}
REASON_TO_PB: dict[DeliveryReason, int] = {
    r: gateway_pb2.DeliveryReason.Value(f"DELIVERY_REASON_{r.value}") for r in DeliveryReason
}
REASON_FROM_PB: dict[int, DeliveryReason] = {v: k for k, v in REASON_TO_PB.items()}
RULE_FROM_PB: dict[int, SenderRule] = {
    gateway_pb2.SENDER_RULE_ACCEPTED: SenderRule.ACCEPTED,
    gateway_pb2.SENDER_RULE_REFUSED: SenderRule.REFUSED,
    gateway_pb2.SENDER_RULE_NONE: SenderRule.NONE,
}
RULE_TO_PB = {v: k for k, v in RULE_FROM_PB.items()}
POLICY_FROM_PB: dict[int, UnacceptedPolicy] = {
    gateway_pb2.UNACCEPTED_SENDER_POLICY_ALLOW: UnacceptedPolicy.ALLOW,
    gateway_pb2.UNACCEPTED_SENDER_POLICY_REFUSE: UnacceptedPolicy.REFUSE,
    gateway_pb2.UNACCEPTED_SENDER_POLICY_DEFAULT: UnacceptedPolicy.DEFAULT,
}
POLICY_TO_PB = {v: k for k, v in POLICY_FROM_PB.items()}
CONSENT_FROM_PB: dict[int, Consent] = {
    gateway_pb2.AUTOMATED_CONSENT_STATE_GRANTED: Consent.GRANTED,
    gateway_pb2.AUTOMATED_CONSENT_STATE_REVOKED: Consent.REVOKED,
}
CONSENT_TO_PB = {v: k for k, v in CONSENT_FROM_PB.items()}
SCOPE_FROM_PB: dict[int, OrderScope] = {
    gateway_pb2.RESTRICTION_SCOPE_ALL_MESSAGES: OrderScope.ALL_MESSAGES,
    gateway_pb2.RESTRICTION_SCOPE_AUTOMATED: OrderScope.AUTOMATED,
}
SCOPE_TO_PB = {v: k for k, v in SCOPE_FROM_PB.items()}
ORDER_STATE_FROM_PB: dict[int, OrderState] = {
    gateway_pb2.RESTRICTION_ORDER_STATE_RECEIVED: OrderState.RECEIVED,
    gateway_pb2.RESTRICTION_ORDER_STATE_IN_FORCE: OrderState.IN_FORCE,
    gateway_pb2.RESTRICTION_ORDER_STATE_LIFTED: OrderState.LIFTED,
}
ORDER_STATE_TO_PB = {v: k for k, v in ORDER_STATE_FROM_PB.items()}
CHANGE_KIND_TO_PB: dict[ChangeKind, int] = {
    k: gateway_pb2.PolicyChangeKind.Value(f"POLICY_CHANGE_KIND_{k.value}") for k in ChangeKind
}


def _enum(table: dict[int, Any], value: int, field: str, choices: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise InvalidInput(f"{field} must be one of {choices}, got {value}") from None


def message_kind(value: int, field: str = "kind") -> MessageKind:
    kind = KIND_FROM_PB.get(value)
    if kind is None:
        raise InvalidInput(
            f"{field} must be MESSAGE_KIND_PERSONAL, _AUTOMATED or _STATE_MAILING, got {value}"
        )
    return kind


def consent_pb(consent: AutomatedConsent) -> gateway_pb2.AutomatedConsent:
    return gateway_pb2.AutomatedConsent(
        sender_id=consent.sender_id,
        consent=CONSENT_TO_PB[consent.consent],  # type: ignore[arg-type]
        granted_at=to_timestamp(consent.granted_at),
        revoked_at=to_timestamp(consent.revoked_at),
    )


def order_pb(order: RestrictionOrder) -> gateway_pb2.RestrictionOrder:
    phone = order.target is OrderTarget.PHONE
    return gateway_pb2.RestrictionOrder(
        order_id=order.order_id,
        user_id="" if phone else order.target_value,
        phone_number=order.target_value if phone else "",
        scope=SCOPE_TO_PB[order.scope],  # type: ignore[arg-type]
        state=ORDER_STATE_TO_PB[order.state],  # type: ignore[arg-type]
        received_at=to_timestamp(order.received_at),
        recorded_at=to_timestamp(order.recorded_at),
        in_force_at=to_timestamp(order.in_force_at),
        lifted_at=to_timestamp(order.lifted_at),
        lift_reason=order.lift_reason,
    )


def audit_pb(record: OrderAuditRecord) -> gateway_pb2.RestrictionAuditRecord:
    return gateway_pb2.RestrictionAuditRecord(
        seq=record.seq,
        at=to_timestamp(record.at),
        order_id=record.order_id,
        action=record.action,
        actor=record.actor,
        masked_target=record.masked_target,
        scope=SCOPE_TO_PB[record.scope],  # type: ignore[arg-type]
        state=ORDER_STATE_TO_PB[record.state],  # type: ignore[arg-type]
        note=record.note,
    )


def change_pb(change: PolicyChange) -> gateway_pb2.PolicyChange:
    return gateway_pb2.PolicyChange(
        version=change.version,
        changed_at=to_timestamp(change.changed_at),
        kind=CHANGE_KIND_TO_PB[change.kind],  # type: ignore[arg-type]
        user_id=change.user_id,
        sender_id=change.sender_id,
        phone_number=change.phone_number,
        value=change.value,
        order_id=change.order_id,
        scope=change.scope,
    )


class OwnMessenger(Protocol):
    """Whose gateway this is: the one messenger whose callers the policy RPCs serve."""

    @property
    def messenger_id(self) -> str: ...


class PolicyRpcs:
    """GatewayService's policy RPCs: the messenger's front end only. With shards, decisions go
    through ShardedDecisions (policy/forwarding.py)."""

    _service: OwnMessenger
    _policy: PolicyService
    _sharded: ShardedDecisions | None

    def _frontend(self) -> Caller:
        return require_caller(Kind.MESSENGER, Role.FRONTEND, id=self._service.messenger_id)

    async def SetSenderRule(
        self, request: gateway_pb2.SetSenderRuleRequest, context: Any
    ) -> gateway_pb2.SetSenderRuleResponse:
        self._frontend()
        rule = _enum(RULE_FROM_PB, request.rule, "rule", "ACCEPTED, REFUSED or NONE")
        version = await self._policy.set_sender_rule(request.user_id, request.sender_id, rule)
        return gateway_pb2.SetSenderRuleResponse(version=version)

    async def SetUnacceptedSenderPolicy(
        self, request: gateway_pb2.SetUnacceptedSenderPolicyRequest, context: Any
    ) -> gateway_pb2.SetUnacceptedSenderPolicyResponse:
        self._frontend()
        policy = _enum(POLICY_FROM_PB, request.policy, "policy", "ALLOW, REFUSE or DEFAULT")
        version = await self._policy.set_unaccepted_policy(request.user_id, policy)
        return gateway_pb2.SetUnacceptedSenderPolicyResponse(version=version)

    async def SetAutomatedConsent(
        self, request: gateway_pb2.SetAutomatedConsentRequest, context: Any
    ) -> gateway_pb2.SetAutomatedConsentResponse:
        self._frontend()
        consent = _enum(CONSENT_FROM_PB, request.consent, "consent", "GRANTED or REVOKED")
        stored, version = await self._policy.set_automated_consent(
            request.user_id, request.sender_id, consent
        )
        return gateway_pb2.SetAutomatedConsentResponse(consent=consent_pb(stored), version=version)

    async def ListPreferences(
        self, request: gateway_pb2.ListPreferencesRequest, context: Any
    ) -> gateway_pb2.ListPreferencesResponse:
        self._frontend()
        prefs = await self._policy.preferences(request.user_id)
        return gateway_pb2.ListPreferencesResponse(
            user_id=prefs.user_id,
            unaccepted_policy=POLICY_TO_PB[prefs.unaccepted_policy],  # type: ignore[arg-type]
            effective_unaccepted_policy=POLICY_TO_PB[prefs.effective_unaccepted_policy],  # type: ignore[arg-type]
            sender_rules=[
                gateway_pb2.SenderRuleEntry(
                    sender_id=r.sender_id,
                    rule=RULE_TO_PB[r.rule],  # type: ignore[arg-type]
                    updated_at=to_timestamp(r.updated_at),
                )
                for r in prefs.sender_rules
            ],
            automated_consents=[consent_pb(c) for c in prefs.automated_consents],
        )

    async def CheckDelivery(
        self, request: gateway_pb2.CheckDeliveryRequest, context: Any
    ) -> gateway_pb2.CheckDeliveryResponse:
        self._frontend()
        kind = message_kind(request.kind)
        if self._sharded is not None:
            decisions, version = await self._sharded.decide(
                [(request.sender_id, request.recipient_id, kind)],
                request.min_version,
                timeout=wait_budget(context.time_remaining()),
            )
            decision = decisions[0]
        else:
            await self._policy.reach(request.min_version)
            decision, version = self._policy.check_delivery(
                request.sender_id, request.recipient_id, kind
            )
        return gateway_pb2.CheckDeliveryResponse(
            allowed=decision.allowed,
            reason=REASON_TO_PB[decision.reason],  # type: ignore[arg-type]
            message=DELIVERY_TEXT[decision.reason],
            version=version,
        )

    async def CheckDeliveryBatch(
        self, request: gateway_pb2.CheckDeliveryBatchRequest, context: Any
    ) -> gateway_pb2.CheckDeliveryBatchResponse:
        self._frontend()
        kinds = KIND_FROM_PB
        pairs = []
        for i, pair in enumerate(request.pairs):
            kind = kinds.get(pair.kind)
            if kind is None:
                kind = message_kind(pair.kind, f"pairs[{i}].kind")
            pairs.append((pair.sender_id, pair.recipient_id, kind))
        if self._sharded is not None:
            decisions, version = await self._sharded.decide(
                pairs, request.min_version, timeout=wait_budget(context.time_remaining())
            )
        else:
            await self._policy.reach(request.min_version)
            decisions, version = self._policy.check_delivery_batch(pairs)
        to_pb = REASON_TO_PB
        return gateway_pb2.CheckDeliveryBatchResponse(
            reasons=[to_pb[d.reason] for d in decisions],  # type: ignore[misc]
            version=version,
        )

    async def WatchPolicyChanges(
        self, request: gateway_pb2.WatchPolicyChangesRequest, context: Any
    ) -> AsyncIterator[gateway_pb2.WatchPolicyChangesResponse]:
        self._frontend()
        async for item in self._policy.watch(request.after_version):
            yield gateway_pb2.WatchPolicyChangesResponse(
                changes=[change_pb(c) for c in item.changes], head_version=item.head_version
            )


class PolicyAdminRpcs:
    """GatewayAdminService's restriction-order RPCs: the messenger's admin only."""

    _service: OwnMessenger
    _policy: PolicyService

    def _admin(self) -> Caller:
        return require_caller(Kind.MESSENGER, Role.ADMIN, id=self._service.messenger_id)

    async def RecordRestrictionOrder(
        self, request: gateway_pb2.RecordRestrictionOrderRequest, context: Any
    ) -> gateway_pb2.RecordRestrictionOrderResponse:
        caller = self._admin()
        scope = _enum(SCOPE_FROM_PB, request.scope, "scope", "ALL_MESSAGES or AUTOMATED")
        order, created = await self._policy.record_order(
            order_id=request.order_id,
            user_id=request.user_id,
            phone_number=request.phone_number,
            scope=scope,
            received_at=(
                from_timestamp(request.received_at) if request.HasField("received_at") else None
            ),
            hold=request.hold,
            actor=caller.uri,
        )
        return gateway_pb2.RecordRestrictionOrderResponse(order=order_pb(order), created=created)

    async def EnforceRestrictionOrder(
        self, request: gateway_pb2.EnforceRestrictionOrderRequest, context: Any
    ) -> gateway_pb2.EnforceRestrictionOrderResponse:
        caller = self._admin()
        order = await self._policy.enforce_order(request.order_id, actor=caller.uri)
        return gateway_pb2.EnforceRestrictionOrderResponse(order=order_pb(order))

    async def LiftRestrictionOrder(
        self, request: gateway_pb2.LiftRestrictionOrderRequest, context: Any
    ) -> gateway_pb2.LiftRestrictionOrderResponse:
        caller = self._admin()
        order = await self._policy.lift_order(request.order_id, request.reason, actor=caller.uri)
        return gateway_pb2.LiftRestrictionOrderResponse(order=order_pb(order))

    async def ListRestrictionOrders(
        self, request: gateway_pb2.ListRestrictionOrdersRequest, context: Any
    ) -> gateway_pb2.ListRestrictionOrdersResponse:
        self._admin()
        state = None
        if request.state != gateway_pb2.RESTRICTION_ORDER_STATE_UNSPECIFIED:
            state = _enum(ORDER_STATE_FROM_PB, request.state, "state", "a RestrictionOrderState")
        orders = await self._policy.list_orders(state, request.limit)
        return gateway_pb2.ListRestrictionOrdersResponse(orders=[order_pb(o) for o in orders])

    async def ListRestrictionAudit(
        self, request: gateway_pb2.ListRestrictionAuditRequest, context: Any
    ) -> gateway_pb2.ListRestrictionAuditResponse:
        self._admin()
        records = await self._policy.order_audit(request.order_id, request.limit)
        return gateway_pb2.ListRestrictionAuditResponse(records=[audit_pb(r) for r in records])
