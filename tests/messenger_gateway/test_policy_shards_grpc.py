"""The policy in shards over gRPC, one gateway (production wiring, SQLite) owning every shard:
decisions as without shards, and GatewayPeerService for the gateway's own replicas only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2, peer_pb2, peer_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.common.status import error_details
from tests.eventually import eventually
from tests.messenger_gateway.test_grpc import Harness, running_gateway

PB = gateway_pb2
SHARDS = 8
S_PHONE, R_PHONE = "+79031234501", "+79031234502"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, shards=SHARDS) as harness:
        await harness.identify("s", S_PHONE)
        await harness.identify("r", R_PHONE)
        policy = harness.gateway.policy
        await eventually(
            lambda: len(policy.served_shards()) == SHARDS, within=20, what="every shard served"
        )
        yield harness


async def test_a_lone_sharded_gateway_decides_as_without_shards(gw: Harness) -> None:
    pair = PB.DeliveryPair(sender_id="s", recipient_id="r", kind=PB.MESSAGE_KIND_PERSONAL)
    reply = await gw.stub.CheckDelivery(
        PB.CheckDeliveryRequest(sender_id="s", recipient_id="r", kind=PB.MESSAGE_KIND_PERSONAL)
    )
    assert reply.reason == PB.DELIVERY_REASON_ALLOWED
    written = await gw.stub.SetSenderRule(
        PB.SetSenderRuleRequest(user_id="r", sender_id="s", rule=PB.SENDER_RULE_REFUSED)
    )
    batch = await gw.stub.CheckDeliveryBatch(
        PB.CheckDeliveryBatchRequest(
            pairs=[
                pair,
                PB.DeliveryPair(
                    sender_id="r", recipient_id="nobody", kind=PB.MESSAGE_KIND_PERSONAL
                ),
            ],
            min_version=written.version,
        )
    )
    assert list(batch.reasons) == [
        PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER,
        PB.DELIVERY_REASON_RECIPIENT_UNKNOWN,
    ]
    assert batch.version >= written.version
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await gw.stub.CheckDelivery(
            PB.CheckDeliveryRequest(sender_id="", recipient_id="r", kind=PB.MESSAGE_KIND_PERSONAL)
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sender_id" in (bad.value.details() or "")


async def test_the_peer_service_answers_the_gateways_own_replicas_only(gw: Harness) -> None:
    automated = PB.MESSAGE_KIND_AUTOMATED
    request = peer_pb2.DecideShardPartsRequest(
        shard_count=SHARDS,
        sender_ids=["s"],
        sender_kinds=[automated],
        recipient_ids=["r"],
        recipient_senders=["s"],
        recipient_kinds=[automated],
    )
    replica = Caller(Kind.MESSENGER, "alpha")
    async with open_channel(gw.address, identity=replica) as channel:
        reply = await peer_pb2_grpc.GatewayPeerServiceStub(channel).DecideShardParts(request)
        assert list(reply.sender_reasons) == [PB.DELIVERY_REASON_ALLOWED]
        assert list(reply.recipient_reasons) == [PB.DELIVERY_REASON_NO_AUTOMATED_CONSENT]
        stub = peer_pb2_grpc.GatewayPeerServiceStub(channel)
        for field, bad in (
            ("shard_count", {"shard_count": SHARDS * 2}),
            ("sender_kinds", {"sender_kinds": []}),
            ("sender_ids[0]", {"sender_ids": [" "]}),
            ("recipient_kinds[0]", {"recipient_kinds": [0]}),
        ):
            wrong = peer_pb2.DecideShardPartsRequest()
            wrong.CopyFrom(request)
            for name, value in bad.items():
                if isinstance(value, list):
                    wrong.ClearField(name)
                    getattr(wrong, name).extend(value)
                else:
                    setattr(wrong, name, value)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DecideShardParts(wrong)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert error_details(refused.value).field_violations[0][0] == field
    for caller in (Caller(Kind.MESSENGER, "alpha", Role.FRONTEND), Caller(Kind.MESSENGER, "beta")):
        async with open_channel(gw.address, identity=caller) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await peer_pb2_grpc.GatewayPeerServiceStub(channel).DecideShardParts(request)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
