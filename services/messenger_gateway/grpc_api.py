"""The GatewayService servicer: checks the caller, calls the service layer, maps to pb2.

Every RPC is for this messenger's own front end only (Kind.MESSENGER, Role.FRONTEND, and the
caller's messenger id must be the configured one).
"""

from __future__ import annotations

from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.errors import Forbidden
from services.common.identity import Kind, Role, require_caller
from services.common.interceptors import ErrorTable
from services.common.timeutil import to_timestamp
from services.messenger_gateway.domain import (
    Identification,
    IdentificationNotFound,
    PreconditionFailed,
    Reason,
    SmsNotSent,
    State,
)
from services.messenger_gateway.service import GatewayService

ERRORS = ErrorTable(
    {
        IdentificationNotFound: grpc.StatusCode.NOT_FOUND,
        PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
        SmsNotSent: grpc.StatusCode.UNAVAILABLE,
    }
)

# ConfirmPossession waits for the operator's answer until the caller's deadline less a margin
# (so that the reply still arrives in time), or WAIT_CAP seconds when the caller set none.
WAIT_MARGIN = 0.5
WAIT_CAP = 30.0

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


def wait_budget(time_remaining: float | None) -> float:
    if time_remaining is None:
        return WAIT_CAP
    return max(0.0, time_remaining - min(WAIT_MARGIN, time_remaining / 2))


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, service: GatewayService) -> None:
        self._service = service

    def _authorize(self) -> None:
        caller = require_caller(Kind.MESSENGER, Role.FRONTEND)
        if caller.id != self._service.messenger_id:
            raise Forbidden(
                f"{caller.uri} is a front end of messenger {caller.id!r}; this gateway serves "
                f"messenger {self._service.messenger_id!r} only: call your own gateway"
            )

    async def StartIdentification(
        self, request: gateway_pb2.StartIdentificationRequest, context: Any
    ) -> gateway_pb2.StartIdentificationResponse:
        self._authorize()
        ident = await self._service.start_identification(request.user_id, request.phone_number)
        return gateway_pb2.StartIdentificationResponse(identification=identification_pb(ident))

    async def ConfirmPossession(
        self, request: gateway_pb2.ConfirmPossessionRequest, context: Any
    ) -> gateway_pb2.ConfirmPossessionResponse:
        self._authorize()
        ident = await self._service.confirm_possession(
            request.identification_id, request.code, wait=wait_budget(context.time_remaining())
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
