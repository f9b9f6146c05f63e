"""The gateway's servicers: check the caller, call the service layer, map to pb2.

GatewayService is for this messenger's own front end only (Kind.MESSENGER, Role.FRONTEND, and
the caller's messenger id must be the configured one); GatewayAdminService for its operations
staff only (Kind.MESSENGER, Role.ADMIN, the configured messenger id).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

import grpc
from idmesh.common.v1 import bulk_pb2
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.errors import InvalidInput
from services.common.identity import Kind, Role, require_caller
from services.common.interceptors import ErrorTable
from services.common.rows import checked_line
from services.common.timeutil import from_timestamp, to_timestamp
from services.messenger_gateway.api.policy import (
    OwnMessenger,
    PolicyAdminRpcs,
    PolicyRpcs,
    wait_budget,
)
from services.messenger_gateway.identification.model import (
    Access,
    Identification,
    IdentificationNotFound,
    OperatorUnreachable,
    PreconditionFailed,
    Reason,
    Reassignment,
    ReassignmentCheck,
    SmsNotSent,
    State,
    validate_max_wait,
)
from services.messenger_gateway.policy.forwarding import ShardedDecisions
from services.messenger_gateway.policy.model import (
    ChangesPruned,
    OrderConflict,
    OrderNotFound,
    OrderWrongState,
    UserUnknown,
    VersionAhead,
)
from services.messenger_gateway.policy.service import PolicyService
from services.messenger_gateway.policy.shards import ShardNotServed
from services.messenger_gateway.routing.model import ImportOutcome
from services.messenger_gateway.routing.ported import PortedRowInput
from services.messenger_gateway.routing.router import (
    ROUTE_OPERATOR_HINT,
    ROUTE_PORTED_NUMBERS,
    CarrierData,
    NumberingPlan,
)
from services.messenger_gateway.routing.service import PortedBatch, ResolvedRoute

ERRORS = ErrorTable(
    {
        IdentificationNotFound: grpc.StatusCode.NOT_FOUND,
        UserUnknown: grpc.StatusCode.NOT_FOUND,
        OrderNotFound: grpc.StatusCode.NOT_FOUND,
        OrderConflict: grpc.StatusCode.ALREADY_EXISTS,
        OrderWrongState: grpc.StatusCode.FAILED_PRECONDITION,
        ChangesPruned: grpc.StatusCode.OUT_OF_RANGE,
        VersionAhead: grpc.StatusCode.OUT_OF_RANGE,
        PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
        SmsNotSent: grpc.StatusCode.UNAVAILABLE,
        OperatorUnreachable: grpc.StatusCode.UNAVAILABLE,
        ShardNotServed: grpc.StatusCode.UNAVAILABLE,
    }
)

STATE_PB: dict[State, gateway_pb2.IdentificationState] = {
    State.AWAITING_CODE: gateway_pb2.IDENTIFICATION_STATE_AWAITING_CODE,
    State.VERIFYING: gateway_pb2.IDENTIFICATION_STATE_VERIFYING,
    State.IDENTIFIED: gateway_pb2.IDENTIFICATION_STATE_IDENTIFIED,
    State.NOT_COMPLETED: gateway_pb2.IDENTIFICATION_STATE_NOT_COMPLETED,
    State.REVOKED: gateway_pb2.IDENTIFICATION_STATE_REVOKED,
}

REASON_PB: dict[Reason, gateway_pb2.Reason] = {
    Reason.UNSPECIFIED: gateway_pb2.REASON_UNSPECIFIED,
    Reason.NO_SUBSCRIBER: gateway_pb2.REASON_NO_SUBSCRIBER,
    Reason.OPERATOR_TIMEOUT: gateway_pb2.REASON_OPERATOR_TIMEOUT,
    Reason.NO_OPERATOR: gateway_pb2.REASON_NO_OPERATOR,
    Reason.AGREEMENT_REFUSED: gateway_pb2.REASON_AGREEMENT_REFUSED,
    Reason.CODE_EXPIRED: gateway_pb2.REASON_CODE_EXPIRED,
    Reason.TOO_MANY_ATTEMPTS: gateway_pb2.REASON_TOO_MANY_ATTEMPTS,
    Reason.CONTRACT_TERMINATED: gateway_pb2.REASON_CONTRACT_TERMINATED,
    Reason.PORTED_OUT: gateway_pb2.REASON_PORTED_OUT,
    Reason.NOT_IDENTIFIED: gateway_pb2.REASON_NOT_IDENTIFIED,
    Reason.NUMBER_CHANGED: gateway_pb2.REASON_NUMBER_CHANGED,
}


REASSIGNMENT_PB: dict[Reassignment, gateway_pb2.NumberReassignment] = {
    Reassignment.REASSIGNED: gateway_pb2.NUMBER_REASSIGNMENT_REASSIGNED,
    Reassignment.NOT_REASSIGNED: gateway_pb2.NUMBER_REASSIGNMENT_NOT_REASSIGNED,
    Reassignment.NO_DATA: gateway_pb2.NUMBER_REASSIGNMENT_NO_DATA,
}

ROUTE_SOURCE_PB: dict[str, gateway_pb2.RouteSource] = {
    ROUTE_PORTED_NUMBERS: gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS,
    ROUTE_OPERATOR_HINT: gateway_pb2.ROUTE_SOURCE_OPERATOR_HINT,
    NumberingPlan.name: gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN,
    CarrierData.name: gateway_pb2.ROUTE_SOURCE_CARRIER_DATA,
}

# CheckNumberReassigned asks the operator within the caller's deadline less a margin, or this.
REASSIGNED_TIME_LIMIT = 10.0


def identification_pb(ident: Identification) -> gateway_pb2.Identification:
    return gateway_pb2.Identification(
        identification_id=ident.identification_id,
        user_id=ident.user_id,
        phone_number=ident.phone_number,
        state=STATE_PB[ident.state],
        reason=REASON_PB[ident.reason],
        operator_id=ident.operator_id,
        started_at=to_timestamp(ident.started_at),
        code_expires_at=to_timestamp(ident.code_expires_at),
        verification_deadline=to_timestamp(ident.verification_deadline),
        completed_at=to_timestamp(ident.completed_at),
        attempts_left=ident.attempts_left,
    )


class IdentificationUseCases(OwnMessenger, Protocol):
    """What the identification and routing RPCs call (service.GatewayService provides it)."""

    async def start_identification(
        self, user_id: str, phone_number: str, *, idempotency_key: str = ""
    ) -> Identification: ...

    async def confirm_possession(
        self, identification_id: str, code: str, *, wait: float
    ) -> Identification: ...

    async def change_phone_number(
        self, user_id: str, phone_number: str
    ) -> tuple[Identification, Identification]: ...

    async def get_identification(self, user_id: str) -> Identification: ...

    async def check_access(self, user_id: str) -> Access: ...

    async def check_number_reassigned(
        self, user_id: str, *, time_limit: float = ...
    ) -> ReassignmentCheck: ...

    async def resolve_operator(self, phone_number: str) -> ResolvedRoute: ...

    async def import_ported_numbers(self, batches: AsyncIterable[PortedBatch]) -> ImportOutcome: ...


class GatewayServicer(PolicyRpcs, gateway_pb2_grpc.GatewayServiceServicer):
    _service: IdentificationUseCases

    def __init__(
        self,
        service: IdentificationUseCases,
        policy: PolicyService,
        sharded: ShardedDecisions | None = None,
    ) -> None:
        self._service = service
        self._policy = policy
        self._sharded = sharded

    def _authorize(self) -> None:
        require_caller(Kind.MESSENGER, Role.FRONTEND, id=self._service.messenger_id)

    async def StartIdentification(
        self, request: gateway_pb2.StartIdentificationRequest, context: Any
    ) -> gateway_pb2.StartIdentificationResponse:
        self._authorize()
        ident = await self._service.start_identification(
            request.user_id, request.phone_number, idempotency_key=request.idempotency_key
        )
        return gateway_pb2.StartIdentificationResponse(identification=identification_pb(ident))

    async def ConfirmPossession(
        self, request: gateway_pb2.ConfirmPossessionRequest, context: Any
    ) -> gateway_pb2.ConfirmPossessionResponse:
        self._authorize()
        wait = wait_budget(context.time_remaining())
        if request.HasField("max_wait"):
            asked = request.max_wait.seconds + request.max_wait.nanos / 1e9
            wait = min(wait, validate_max_wait(asked))
        ident = await self._service.confirm_possession(
            request.identification_id, request.code, wait=wait
        )
        return gateway_pb2.ConfirmPossessionResponse(identification=identification_pb(ident))

    async def GetIdentification(
        self, request: gateway_pb2.GetIdentificationRequest, context: Any
    ) -> gateway_pb2.GetIdentificationResponse:
        self._authorize()
        ident = await self._service.get_identification(request.user_id)
        return gateway_pb2.GetIdentificationResponse(identification=identification_pb(ident))

    async def CheckAccess(
        self, request: gateway_pb2.CheckAccessRequest, context: Any
    ) -> gateway_pb2.CheckAccessResponse:
        self._authorize()
        access = await self._service.check_access(request.user_id)
        return gateway_pb2.CheckAccessResponse(
            allowed=access.allowed,
            reason=REASON_PB[access.reason],
            message=access.message,
            state=(
                gateway_pb2.IDENTIFICATION_STATE_UNSPECIFIED
                if access.state is None
                else STATE_PB[access.state]
            ),
        )

    async def ChangePhoneNumber(
        self, request: gateway_pb2.ChangePhoneNumberRequest, context: Any
    ) -> gateway_pb2.ChangePhoneNumberResponse:
        self._authorize()
        new, previous = await self._service.change_phone_number(
            request.user_id, request.phone_number
        )
        return gateway_pb2.ChangePhoneNumberResponse(
            identification=identification_pb(new), previous=identification_pb(previous)
        )

    async def CheckNumberReassigned(
        self, request: gateway_pb2.CheckNumberReassignedRequest, context: Any
    ) -> gateway_pb2.CheckNumberReassignedResponse:
        self._authorize()
        remaining = context.time_remaining()
        limit = REASSIGNED_TIME_LIMIT if remaining is None else wait_budget(remaining)
        check = await self._service.check_number_reassigned(
            request.user_id, time_limit=max(0.1, min(limit, REASSIGNED_TIME_LIMIT))
        )
        return gateway_pb2.CheckNumberReassignedResponse(
            reassignment=REASSIGNMENT_PB[check.reassignment],
            since=to_timestamp(check.since),
            operator_id=check.operator_id,
            phone_number=check.phone_number,
        )


class GatewayAdminServicer(PolicyAdminRpcs, gateway_pb2_grpc.GatewayAdminServiceServicer):
    """For the messenger's operations staff: the ported-numbers table, routing, and the
    regulator's restriction orders."""

    _service: IdentificationUseCases

    def __init__(self, service: IdentificationUseCases, policy: PolicyService) -> None:
        self._service = service
        self._policy = policy

    def _authorize(self) -> None:
        require_caller(Kind.MESSENGER, Role.ADMIN, id=self._service.messenger_id)

    async def ImportPortedNumbers(
        self, request_iterator: AsyncIterator[gateway_pb2.ImportPortedNumbersRequest], context: Any
    ) -> gateway_pb2.ImportPortedNumbersResponse:
        self._authorize()
        outcome = await self._service.import_ported_numbers(_batches(request_iterator))
        return gateway_pb2.ImportPortedNumbersResponse(
            imported=outcome.imported,
            rejected=outcome.rejected,
            errors=[gateway_pb2.RowError(line=e.line, message=e.message) for e in outcome.errors],
            committed=outcome.committed,
            unchanged=outcome.unchanged,
        )

    async def ResolveOperator(
        self, request: gateway_pb2.ResolveOperatorRequest, context: Any
    ) -> gateway_pb2.ResolveOperatorResponse:
        self._authorize()
        resolved = await self._service.resolve_operator(request.phone_number)
        route = resolved.route
        return gateway_pb2.ResolveOperatorResponse(
            phone_number=resolved.phone_number,
            operator_id=route.operator_id or "",
            source=ROUTE_SOURCE_PB.get(route.source or "", gateway_pb2.ROUTE_SOURCE_UNSPECIFIED),
            configured=resolved.configured,
        )


def _all_or_nothing(request: gateway_pb2.ImportPortedNumbersRequest) -> bool:
    """The import's mode: all_or_nothing, or mode when set (unset both: the valid rows commit)."""
    if request.mode == bulk_pb2.IMPORT_MODE_UNSPECIFIED:
        return request.all_or_nothing
    if request.mode == bulk_pb2.IMPORT_MODE_ALL_OR_NOTHING:
        return True
    if request.mode == bulk_pb2.IMPORT_MODE_VALID_ROWS:
        if request.all_or_nothing:
            raise InvalidInput(
                "all_or_nothing is set and mode is IMPORT_MODE_VALID_ROWS: set one of them"
            )
        return False
    raise InvalidInput(
        f"mode {request.mode} is not a known ImportMode: use "
        "IMPORT_MODE_ALL_OR_NOTHING or IMPORT_MODE_VALID_ROWS"
    )


async def _batches(
    requests: AsyncIterator[gateway_pb2.ImportPortedNumbersRequest],
) -> AsyncIterator[PortedBatch]:
    async for request in requests:
        yield PortedBatch(
            all_or_nothing=_all_or_nothing(request),
            rows=[
                PortedRowInput(
                    line=checked_line(row.line, field=f"rows[{index}].line"),
                    phone_number=row.phone_number,
                    recipient_operator_id=row.recipient_operator_id,
                    ported_at=(
                        from_timestamp(row.ported_at, field=f"rows[{index}].ported_at")
                        if row.HasField("ported_at")
                        else None
                    ),
                )
                for index, row in enumerate(request.rows)
            ],
        )
