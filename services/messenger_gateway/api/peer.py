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
from services.messenger_gateway.identification.model import USER_ID_MAX_LENGTH
from services.messenger_gateway.policy.model import validate_pair_user
from services.messenger_gateway.policy.service import PolicyService
from services.messenger_gateway.policy.shards import ShardNotServed


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
        sender_ids, recipient_ids = request.sender_ids, request.recipient_ids
        if len(request.sender_kinds) != len(sender_ids):
            raise InvalidInput(
                "sender_kinds must have one entry per sender_ids", field="sender_kinds"
            )
        if not len(request.recipient_senders) == len(request.recipient_kinds) == len(recipient_ids):
            raise InvalidInput(
                "recipient_senders and recipient_kinds must have one entry per recipient_ids",
                field="recipient_ids",
            )
        kinds = KIND_FROM_PB
        senders = list(zip(sender_ids, [kinds.get(k) for k in request.sender_kinds], strict=True))
        recipients = list(
            zip(
                request.recipient_senders,
                recipient_ids,
                [kinds.get(k) for k in request.recipient_kinds],
                strict=True,
            )
        )
        for i, (sender, kind) in enumerate(senders):
            if kind is None or not _user_id(sender):
                validate_pair_user(sender, f"sender_ids[{i}]")
                message_kind(request.sender_kinds[i], f"sender_kinds[{i}]")
        for i, (sender, recipient, kind) in enumerate(recipients):
            if kind is None or not (_user_id(sender) and _user_id(recipient)):
                validate_pair_user(sender, f"recipient_senders[{i}]")
                validate_pair_user(recipient, f"recipient_ids[{i}]")
                message_kind(request.recipient_kinds[i], f"recipient_kinds[{i}]")
        await self._policy.reach(request.min_version)
        try:
            sender_parts, recipient_parts, version = self._policy.decide_parts(
                senders,  # type: ignore[arg-type]  # every kind checked above
                recipients,  # type: ignore[arg-type]
            )
        except ShardNotServed:
            # one is loading here (or not ours): wait for the load, or refuse as it says
            shards = {sharded.shard(s) for s, _ in senders}
            shards |= {sharded.shard(r) for _, r, _ in recipients}
            await self._policy.wait_served(shards, timeout=wait_budget(context.time_remaining()))
            sender_parts, recipient_parts, version = self._policy.decide_parts(
                senders,  # type: ignore[arg-type]
                recipients,  # type: ignore[arg-type]
            )
        return peer_pb2.DecideShardPartsResponse(
            sender_reasons=[REASON_TO_PB[d.reason] for d in sender_parts],  # type: ignore[misc]
            recipient_reasons=[REASON_TO_PB[d.reason] for d in recipient_parts],  # type: ignore[misc]
            version=version,
        )


def _user_id(value: str) -> bool:
    """validate_pair_user's test, inline (it runs for every entry): 1 to 128 printable
    characters, not only spaces."""
    return 0 < len(value) <= USER_ID_MAX_LENGTH and value.isprintable() and not value.isspace()
