"""GatewayPeerService: the sides of decisions that this replica's shards hold, for the other
replicas of the same messenger's gateway (policy/forwarding.py). Errors go through the
gateway's error table (api/gateway.py's ERRORS)."""

from __future__ import annotations

from typing import Any

from idmesh.gateway.v1 import peer_pb2, peer_pb2_grpc

from services.common.errors import InvalidInput
from services.common.identity import Kind, Role, require_caller
from services.messenger_gateway.api.policy import (
    KIND_FROM_PB,
    REASON_TO_PB,
    message_kind,
    wait_budget,
)
from services.messenger_gateway.policy.model import MAX_BATCH_PAIRS, MessageKind, validate_pair_user
from services.messenger_gateway.policy.service import PolicyService


class GatewayPeerServicer(peer_pb2_grpc.GatewayPeerServiceServicer):
    def __init__(self, messenger_id: str, policy: PolicyService) -> None:
        if policy.sharded is None:
            raise ValueError("GatewayPeerServicer needs a PolicyService with shards")
        self._messenger_id = messenger_id
        self._policy = policy
        self._sharded = policy.sharded

    async def DecideShardParts(
        self, request: peer_pb2.DecideShardPartsRequest, context: Any
    ) -> peer_pb2.DecideShardPartsResponse:
        require_caller(Kind.MESSENGER, Role.SERVICE, id=self._messenger_id)
        sharded = self._sharded
        if request.shard_count != sharded.count:
            raise InvalidInput(
                f"shard_count is {request.shard_count}, this replica has {sharded.count} shards: "
                "every replica of a gateway must have the same IDMESH_POLICY_SHARDS",
                field="shard_count",
            )
        if len(request.senders) > MAX_BATCH_PAIRS or len(request.recipients) > MAX_BATCH_PAIRS:
            raise InvalidInput(f"send at most {MAX_BATCH_PAIRS} senders and recipients per call")
        senders: list[tuple[str, MessageKind]] = []
        for i, check in enumerate(request.senders):
            validate_pair_user(check.sender_id, f"senders[{i}].sender_id")
            kind = KIND_FROM_PB.get(check.kind) or message_kind(check.kind, f"senders[{i}].kind")
            senders.append((check.sender_id, kind))
        recipients: list[tuple[str, str, MessageKind]] = []
        for i, pair in enumerate(request.recipients):
            validate_pair_user(pair.sender_id, f"recipients[{i}].sender_id")
            validate_pair_user(pair.recipient_id, f"recipients[{i}].recipient_id")
            kind = KIND_FROM_PB.get(pair.kind) or message_kind(pair.kind, f"recipients[{i}].kind")
            recipients.append((pair.sender_id, pair.recipient_id, kind))
        await self._policy.reach(request.min_version)
        shards = {sharded.shard(s) for s, _ in senders}
        shards |= {sharded.shard(r) for _, r, _ in recipients}
        await self._policy.wait_served(shards, timeout=wait_budget(context.time_remaining()))
        sender_parts, recipient_parts, version = self._policy.decide_parts(senders, recipients)
        return peer_pb2.DecideShardPartsResponse(
            sender_reasons=[REASON_TO_PB[d.reason] for d in sender_parts],  # type: ignore[misc]
            recipient_reasons=[REASON_TO_PB[d.reason] for d in recipient_parts],  # type: ignore[misc]
            version=version,
        )
