"""The gateway's calls to its own replicas (GatewayPeerService): the sides of decisions held by
shards another replica owns (policy/forwarding.py). One channel per replica address, made on
first use and closed with the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2, peer_pb2, peer_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller
from services.common.tls import TlsFiles
from services.messenger_gateway.policy.model import DeliveryReason, MessageKind

# gateway_pb2.MessageKind values (typed Any: the stubs type enum fields by their own ValueType)
KIND_TO_PB: dict[MessageKind, Any] = {
    k: gateway_pb2.MessageKind.Value(f"MESSAGE_KIND_{k.value}") for k in MessageKind
}
REASON_FROM_PB = {
    gateway_pb2.DeliveryReason.Value(f"DELIVERY_REASON_{r.value}"): r for r in DeliveryReason
}
# Channels kept at most: a replica's address changes when it restarts elsewhere.
MAX_CHANNELS = 64


class PeerClients:
    def __init__(self, *, identity: Caller, tls: TlsFiles | None = None) -> None:
        self._identity = identity
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.GatewayPeerServiceStub] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _stub(self, address: str) -> peer_pb2_grpc.GatewayPeerServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            if len(self._channels) >= MAX_CHANNELS:
                oldest = next(iter(self._channels))
                self._stubs.pop(oldest)
                channel = self._channels.pop(oldest)
                # closed in the background: calls in flight on it end with CANCELLED
                closing = asyncio.create_task(channel.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            channel = open_channel(address, identity=self._identity, tls=self._tls)
            self._channels[address] = channel
            stub = self._stubs[address] = peer_pb2_grpc.GatewayPeerServiceStub(channel)
        return stub

    async def decide_parts(
        self,
        address: str,
        *,
        shard_count: int,
        min_version: int,
        senders: Sequence[tuple[str, MessageKind]],
        recipients: Sequence[tuple[str, str, MessageKind]],
        timeout: float,
    ) -> tuple[list[DeliveryReason], list[DeliveryReason], int]:
        kinds = KIND_TO_PB
        request = peer_pb2.DecideShardPartsRequest(
            shard_count=shard_count,
            min_version=min_version,
            sender_ids=[s for s, _ in senders],
            sender_kinds=[kinds[k] for _, k in senders],
            recipient_ids=[r for _, r, _ in recipients],
            recipient_senders=[s for s, _, _ in recipients],
            recipient_kinds=[kinds[k] for _, _, k in recipients],
        )
        reply = await self._stub(address).DecideShardParts(
            request,
            timeout=timeout,
        )
        sender_reasons, recipient_reasons = reply.sender_reasons, reply.recipient_reasons
        if len(sender_reasons) != len(senders) or len(recipient_reasons) != len(recipients):
            raise ValueError(f"replica {address} answered another number of sides than asked")
        reasons = REASON_FROM_PB
        return (
            [reasons[r] for r in sender_reasons],
            [reasons[r] for r in recipient_reasons],
            reply.version,
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
