"""Fields that used to be answered INTERNAL (issue 10): a Timestamp out of range, and a row's
line number beyond a signed 64-bit integer (in every stream of rows). Each is refused at the edge,
INVALID_ARGUMENT naming the field, and nothing is stored; over the fuzz tests' in-process mesh
(tests/fuzz/harness.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.timeutil import to_timestamp, utcnow
from tests.fuzz.harness import (
    MESSENGER,
    NUMBER,
    OPERATOR,
    Mesh,
    method_id,
    methods,
    right_identity,
    server_of,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

BAD_TIMESTAMPS = {
    "nanos -1": Timestamp(seconds=0, nanos=-1),
    "nanos 1e9": Timestamp(seconds=0, nanos=1_000_000_000),
    "seconds 2^40": Timestamp(seconds=2**40),
    "year 10000": Timestamp(seconds=253_402_300_800),
    "year 0": Timestamp(seconds=-62_135_596_801),
    "seconds -2^63": Timestamp(seconds=-(2**63)),
}
NEW_NUMBER = "+79037654321"  # Beeline, no contract in the seed


def _event(occurred_at: Timestamp) -> events_pb2.ContractTerminated:
    return events_pb2.ContractTerminated(
        event_id="bad-time",
        operator_id=OPERATOR,
        messenger_id=MESSENGER,
        phone_number=NUMBER,
        identification_code="code-bad-time",
        reason=events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
        occurred_at=occurred_at,
    )


def _ported(line: int, ported_at: Timestamp | None = None) -> gateway_pb2.PortedNumber:
    return gateway_pb2.PortedNumber(
        line=line,
        phone_number=NEW_NUMBER,
        recipient_operator_id="megafon",
        ported_at=ported_at or to_timestamp(utcnow()),
    )


def _row(line: int) -> registry_pb2.SubscriberRow:
    return registry_pb2.SubscriberRow(
        line=line,
        phone_number=NEW_NUMBER,
        contract_id="BEE-77",
        activated_at=to_timestamp(utcnow()),
    )


# (RPC, the field's name in the refusal, the request(s) with the bad value `ts`)
TIMESTAMP_CASES = [
    (
        "RegistryAdminService.CreateSubscriber",
        "activated_at",
        lambda ts: [
            registry_pb2.CreateSubscriberRequest(
                phone_number=NEW_NUMBER, contract_id="BEE-77", activated_at=ts
            )
        ],
    ),
    (
        "RegistryService.CheckNumberReassigned",
        "since",
        lambda ts: [registry_pb2.CheckNumberReassignedRequest(phone_number=NUMBER, since=ts)],
    ),
    (
        "RegistryAdminService.ListAuditRecords",
        "since",
        lambda ts: [registry_pb2.ListAuditRecordsRequest(since=ts)],
    ),
    (
        "RegistryAdminService.ListAuditRecords",
        "until",
        lambda ts: [registry_pb2.ListAuditRecordsRequest(until=ts)],
    ),
    (
        "GatewayAdminService.ImportPortedNumbers",
        "rows[1].ported_at",
        lambda ts: [gateway_pb2.ImportPortedNumbersRequest(rows=[_ported(2), _ported(3, ts)])],
    ),
    (
        "NotifierService.Publish",
        "events[0].occurred_at",
        lambda ts: [notifier_pb2.PublishRequest(events=[_event(ts)])],
    ),
]

LINE_CASES = [
    (
        "RegistryAdminService.ImportSubscribers",
        "rows[0].line",
        lambda line: [registry_pb2.ImportSubscribersRequest(rows=[_row(line)])],
    ),
    (
        "RegistryAdminService.TerminateContracts",
        "rows[1].line",
        lambda line: [
            registry_pb2.TerminateContractsRequest(
                rows=[
                    registry_pb2.TerminationRow(line=2, phone_number=NUMBER),
                    registry_pb2.TerminationRow(line=line, phone_number=NUMBER),
                ]
            )
        ],
    ),
    (
        "GatewayAdminService.ImportPortedNumbers",
        "rows[1].line",
        lambda line: [gateway_pb2.ImportPortedNumbersRequest(rows=[_ported(2), _ported(line)])],
    ),
]


async def _refused_naming(mesh: Mesh, name: str, requests: list[Message], field: str) -> None:
    method = {method_id(m): m for m in methods()}[name]
    before = mesh.snapshot(server_of(method))
    outcome = await mesh.call(method, requests, right_identity(method))
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.details.startswith(field), outcome.details
    assert mesh.snapshot(server_of(method)) == before


@pytest.mark.parametrize("bad", list(BAD_TIMESTAMPS.values()), ids=list(BAD_TIMESTAMPS))
@pytest.mark.parametrize(
    ("name", "field", "build"), TIMESTAMP_CASES, ids=[f"{c[0]}.{c[1]}" for c in TIMESTAMP_CASES]
)
async def test_a_timestamp_out_of_range_is_invalid_argument_naming_the_field(
    mesh: Mesh, name: str, field: str, build: object, bad: Timestamp
) -> None:
    assert callable(build)
    await _refused_naming(mesh, name, build(bad), field)


@pytest.mark.parametrize("line", [2**63, 2**64 - 1])
@pytest.mark.parametrize(("name", "field", "build"), LINE_CASES, ids=[c[0] for c in LINE_CASES])
async def test_a_line_number_beyond_int64_is_invalid_argument_naming_the_field(
    mesh: Mesh, name: str, field: str, build: object, line: int
) -> None:
    assert callable(build)
    await _refused_naming(mesh, name, build(line), field)


async def test_the_largest_line_number_is_accepted(mesh: Mesh) -> None:
    method = {method_id(m): m for m in methods()}["GatewayAdminService.ImportPortedNumbers"]
    outcome = await mesh.call(
        method,
        [gateway_pb2.ImportPortedNumbersRequest(rows=[_ported(2**63 - 1)])],
        right_identity(method),
    )
    assert outcome.code is grpc.StatusCode.OK, outcome
    assert isinstance(outcome.response, gateway_pb2.ImportPortedNumbersResponse)
    assert outcome.response.imported == 1


async def test_an_import_row_with_a_bad_activation_time_is_a_row_error(mesh: Mesh) -> None:
    """The registry's import checks each row's activated_at itself (a row error by line)."""
    method = {method_id(m): m for m in methods()}["RegistryAdminService.ImportSubscribers"]
    row = _row(7)
    row.activated_at.CopyFrom(BAD_TIMESTAMPS["nanos -1"])
    outcome = await mesh.call(
        method, [registry_pb2.ImportSubscribersRequest(rows=[row])], right_identity(method)
    )
    assert outcome.code is grpc.StatusCode.OK, outcome
    assert isinstance(outcome.response, registry_pb2.ImportSubscribersResponse)
    assert outcome.response.imported == 0
    assert [e.line for e in outcome.response.errors] == [7]


@pytest.mark.parametrize("token", ["99999999999999999999", " 1", "1_0", "\u0661\u0662", "-1", "x"])
async def test_a_page_token_the_registry_did_not_give_is_invalid_argument(
    mesh: Mesh, token: str
) -> None:
    await _refused_naming(
        mesh,
        "RegistryAdminService.ListAuditRecords",
        [registry_pb2.ListAuditRecordsRequest(page_token=token)],
        "page_token",
    )
