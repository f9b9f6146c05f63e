"""Thin servicers: check the caller, call the service layer, map results to pb2.

ERRORS is the one table from the registry's domain errors to gRPC status codes (InvalidInput,
Unauthenticated and Forbidden are mapped by services.common.interceptors already).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.errors import InvalidInput, quote
from services.common.identity import Caller, Kind, Role, require_caller
from services.common.interceptors import ErrorTable
from services.common.phone import mask
from services.common.rows import checked_line
from services.common.timeutil import from_timestamp, to_timestamp
from services.operator_registry.bulk import ImportBatch, ImportMode
from services.operator_registry.domain import (
    Agreement,
    AgreementRequired,
    AgreementState,
    AuditQuery,
    ContractNotActive,
    ContractState,
    DeadlinePassed,
    MessengerNotFound,
    ParkedNotice,
    ReassignmentStatus,
    Subscriber,
    SubscriberExists,
    SubscriberNotFound,
    TerminationOutcome,
    TerminationReason,
    TerminationRowInput,
    Verification,
    VerificationResult,
)
from services.operator_registry.service import RegistryService

ERRORS = ErrorTable(
    {
        AgreementRequired: grpc.StatusCode.PERMISSION_DENIED,
        DeadlinePassed: grpc.StatusCode.DEADLINE_EXCEEDED,
        SubscriberExists: grpc.StatusCode.ALREADY_EXISTS,
        SubscriberNotFound: grpc.StatusCode.NOT_FOUND,
        MessengerNotFound: grpc.StatusCode.NOT_FOUND,
        ContractNotActive: grpc.StatusCode.FAILED_PRECONDITION,
    }
)

_RESULTS = {
    VerificationResult.IDENTIFIED: registry_pb2.VERIFICATION_RESULT_IDENTIFIED,
    VerificationResult.NO_SUBSCRIBER: registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER,
}
_CONTRACT_STATES = {
    ContractState.ACTIVE: registry_pb2.CONTRACT_STATE_ACTIVE,
    ContractState.TERMINATED: registry_pb2.CONTRACT_STATE_TERMINATED,
}
_AGREEMENT_STATES = {
    AgreementState.ACTIVE: registry_pb2.AGREEMENT_STATE_ACTIVE,
    AgreementState.SUSPENDED: registry_pb2.AGREEMENT_STATE_SUSPENDED,
}
_REASONS_TO_PB = {
    TerminationReason.CONTRACT_ENDED: events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
    TerminationReason.PORTED_OUT: events_pb2.TERMINATION_REASON_PORTED_OUT,
}
_REASONS_FROM_PB = {pb: reason for reason, pb in _REASONS_TO_PB.items()}
_REASSIGNMENT = {
    ReassignmentStatus.REASSIGNED: registry_pb2.REASSIGNMENT_STATUS_REASSIGNED,
    ReassignmentStatus.NOT_REASSIGNED: registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED,
    ReassignmentStatus.NO_DATA: registry_pb2.REASSIGNMENT_STATUS_NO_DATA,
}

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Asked by messengers: the messenger is the caller's identity."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    async def VerifySubscriber(
        self, request: registry_pb2.VerifySubscriberRequest, context: Context
    ) -> registry_pb2.VerifySubscriberResponse:
        caller = require_caller(Kind.MESSENGER)
        answer = await self._service.verify_subscriber(
            caller.id,
            request.request_id,
            request.phone_number,
            time_remaining=context.time_remaining(),
            key_alias=request.idempotency_key,
        )
        return verification_to_pb(answer, self._service.operator_id)

    async def CheckNumberReassigned(
        self, request: registry_pb2.CheckNumberReassignedRequest, context: Context
    ) -> registry_pb2.CheckNumberReassignedResponse:
        caller = require_caller(Kind.MESSENGER)
        since = from_timestamp(request.since, field="since") if request.HasField("since") else None
        answer = await self._service.check_number_reassigned(caller.id, request.phone_number, since)
        return registry_pb2.CheckNumberReassignedResponse(
            status=_REASSIGNMENT[answer.status],
            records_begin_at=to_timestamp(answer.records_begin_at),
        )


class RegistryAdminServicer(registry_pb2_grpc.RegistryAdminServiceServicer):
    """For the operator's own systems: the caller must be this operator's admin identity."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    def _require_admin(self) -> Caller:
        return require_caller(Kind.OPERATOR, Role.ADMIN, id=self._service.operator_id)

    async def CreateSubscriber(
        self, request: registry_pb2.CreateSubscriberRequest, context: Context
    ) -> registry_pb2.CreateSubscriberResponse:
        self._require_admin()
        activated_at = (
            from_timestamp(request.activated_at, field="activated_at")
            if request.HasField("activated_at")
            else None
        )
        subscriber = await self._service.create_subscriber(
            request.phone_number, request.contract_id, activated_at
        )
        return registry_pb2.CreateSubscriberResponse(subscriber=subscriber_to_pb(subscriber))

    async def GetSubscriber(
        self, request: registry_pb2.GetSubscriberRequest, context: Context
    ) -> registry_pb2.GetSubscriberResponse:
        self._require_admin()
        subscriber = await self._service.get_subscriber(request.phone_number)
        return registry_pb2.GetSubscriberResponse(subscriber=subscriber_to_pb(subscriber))

    async def TerminateContract(
        self, request: registry_pb2.TerminateContractRequest, context: Context
    ) -> registry_pb2.TerminateContractResponse:
        self._require_admin()
        if request.reason == events_pb2.TERMINATION_REASON_UNSPECIFIED:
            reason = TerminationReason.CONTRACT_ENDED
        elif request.reason in _REASONS_FROM_PB:
            reason = _REASONS_FROM_PB[request.reason]
        else:
            raise InvalidInput(
                f"reason {request.reason} is not a known TerminationReason: use "
                "TERMINATION_REASON_CONTRACT_ENDED or TERMINATION_REASON_PORTED_OUT"
            )
        termination = await self._service.terminate_contract(request.phone_number, reason)
        return registry_pb2.TerminateContractResponse(
            subscriber=subscriber_to_pb(termination.subscriber),
            notices_queued=termination.notices_queued,
        )

    async def PortOut(
        self, request: registry_pb2.PortOutRequest, context: Context
    ) -> registry_pb2.PortOutResponse:
        self._require_admin()
        termination = await self._service.port_out(
            request.phone_number, request.recipient_operator_id
        )
        return registry_pb2.PortOutResponse(
            subscriber=subscriber_to_pb(termination.subscriber),
            notices_queued=termination.notices_queued,
        )

    async def RegisterMessenger(
        self, request: registry_pb2.RegisterMessengerRequest, context: Context
    ) -> registry_pb2.RegisterMessengerResponse:
        self._require_admin()
        agreement = await self._service.register_messenger(
            request.messenger_id, request.display_name
        )
        return registry_pb2.RegisterMessengerResponse(agreement=agreement_to_pb(agreement))

    async def SuspendMessenger(
        self, request: registry_pb2.SuspendMessengerRequest, context: Context
    ) -> registry_pb2.SuspendMessengerResponse:
        self._require_admin()
        agreement = await self._service.suspend_messenger(request.messenger_id)
        return registry_pb2.SuspendMessengerResponse(agreement=agreement_to_pb(agreement))

    async def ListMessengers(
        self, request: registry_pb2.ListMessengersRequest, context: Context
    ) -> registry_pb2.ListMessengersResponse:
        self._require_admin()
        agreements = await self._service.list_messengers()
        return registry_pb2.ListMessengersResponse(
            agreements=[agreement_to_pb(a) for a in agreements]
        )

    async def ListAuditRecords(
        self, request: registry_pb2.ListAuditRecordsRequest, context: Context
    ) -> registry_pb2.ListAuditRecordsResponse:
        self._require_admin()
        before_id = _audit_page(request.page_token)
        since = from_timestamp(request.since, field="since") if request.HasField("since") else None
        until = from_timestamp(request.until, field="until") if request.HasField("until") else None
        records, next_id = await self._service.list_audit(
            AuditQuery(
                messenger_id=request.messenger_id,
                outcome=request.outcome,
                since=since,
                until=until,
                page_size=request.page_size or 100,
                before_id=before_id,
            )
        )
        return registry_pb2.ListAuditRecordsResponse(
            records=[
                registry_pb2.AuditRecord(
                    recorded_at=to_timestamp(r.recorded_at),
                    messenger_id=r.messenger_id,
                    masked_phone_number=r.masked_phone_number,
                    request_id=r.idempotency_key,
                    outcome=r.outcome,
                    idempotency_key=r.idempotency_key,
                )
                for r in records
            ],
            next_page_token="" if next_id is None else str(next_id),
        )

    async def ListParkedNotices(
        self, request: registry_pb2.ListParkedNoticesRequest, context: Context
    ) -> registry_pb2.ListParkedNoticesResponse:
        self._require_admin()
        parked, next_token = await self._service.list_parked_notices(
            request.page_size or 100, request.page_token
        )
        return registry_pb2.ListParkedNoticesResponse(
            notices=[parked_to_pb(p) for p in parked], next_page_token=next_token
        )

    async def RetryParkedNotices(
        self, request: registry_pb2.RetryParkedNoticesRequest, context: Context
    ) -> registry_pb2.RetryParkedNoticesResponse:
        self._require_admin()
        requeued = await self._service.retry_parked_notices(list(request.event_ids))
        return registry_pb2.RetryParkedNoticesResponse(requeued=requeued)

    async def ImportSubscribers(
        self,
        request_iterator: AsyncIterator[registry_pb2.ImportSubscribersRequest],
        context: Context,
    ) -> registry_pb2.ImportSubscribersResponse:
        self._require_admin()
        outcome = await self._service.import_subscribers(_import_batches(request_iterator))
        return registry_pb2.ImportSubscribersResponse(
            imported=outcome.imported,
            rejected=outcome.rejected,
            errors=[registry_pb2.RowError(line=e.line, message=e.message) for e in outcome.errors],
            committed=outcome.committed,
        )

    async def TerminateContracts(
        self,
        request_iterator: AsyncIterator[registry_pb2.TerminateContractsRequest],
        context: Context,
    ) -> registry_pb2.TerminateContractsResponse:
        self._require_admin()
        report = await self._service.terminate_contracts(_termination_batches(request_iterator))
        return registry_pb2.TerminateContractsResponse(
            rows=report.rows,
            ended=report.ended,
            refused=report.refused,
            notices_queued=report.notices_queued,
            refusals=[
                registry_pb2.TerminationRefusal(
                    line=r.line, outcome=_OUTCOMES_TO_PB[r.outcome], message=r.message
                )
                for r in report.refusals
            ],
        )


_MAX_ID = 2**63 - 1  # SQLite's INTEGER


def _audit_page(page_token: str) -> int | None:
    """The audit record id a next_page_token names (its decimal digits), None for the first page.
    Anything else is refused: int() would also read " 1", "1_0", non-ASCII digits, and values
    beyond SQLite's INTEGER."""
    if not page_token:
        return None
    if not (page_token.isascii() and page_token.isdigit() and int(page_token) <= _MAX_ID):
        raise InvalidInput(
            f"page_token {quote(page_token)} is not one this registry gave: "
            "pass next_page_token from the previous page"
        )
    return int(page_token)


_OUTCOMES_TO_PB = {
    TerminationOutcome.ENDED: registry_pb2.TERMINATION_OUTCOME_ENDED,
    TerminationOutcome.NOT_FOUND: registry_pb2.TERMINATION_OUTCOME_NOT_FOUND,
    TerminationOutcome.NOT_ACTIVE: registry_pb2.TERMINATION_OUTCOME_NOT_ACTIVE,
    TerminationOutcome.INVALID: registry_pb2.TERMINATION_OUTCOME_INVALID,
}


async def _termination_batches(
    requests: AsyncIterator[registry_pb2.TerminateContractsRequest],
) -> AsyncIterator[list[TerminationRowInput]]:
    async for request in requests:
        yield [
            TerminationRowInput(
                line=checked_line(row.line, field=f"rows[{index}].line"),
                phone_number=row.phone_number,
                reason=(
                    TerminationReason.CONTRACT_ENDED
                    if row.reason == events_pb2.TERMINATION_REASON_UNSPECIFIED
                    else _REASONS_FROM_PB.get(row.reason)
                ),
                recipient_operator_id=row.recipient_operator_id,
            )
            for index, row in enumerate(request.rows)
        ]


_IMPORT_MODES = {
    registry_pb2.IMPORT_MODE_UNSPECIFIED: None,
    registry_pb2.IMPORT_MODE_ALL_OR_NOTHING: ImportMode.ALL_OR_NOTHING,
    registry_pb2.IMPORT_MODE_VALID_ROWS: ImportMode.VALID_ROWS,
}


async def _import_batches(
    requests: AsyncIterator[registry_pb2.ImportSubscribersRequest],
) -> AsyncIterator[ImportBatch]:
    async for request in requests:
        if request.mode not in _IMPORT_MODES:
            raise InvalidInput(
                f"mode {request.mode} is not a known ImportMode: use "
                "IMPORT_MODE_ALL_OR_NOTHING or IMPORT_MODE_VALID_ROWS"
            )
        yield ImportBatch(
            mode=_IMPORT_MODES[request.mode],
            rows=[
                (
                    checked_line(row.line, field=f"rows[{index}].line"),
                    row.phone_number,
                    row.contract_id,
                    row.activated_at.seconds if row.HasField("activated_at") else None,
                    row.activated_at.nanos,
                )
                for index, row in enumerate(request.rows)
            ],
        )


def verification_to_pb(
    answer: Verification, operator_id: str
) -> registry_pb2.VerifySubscriberResponse:
    return registry_pb2.VerifySubscriberResponse(
        result=_RESULTS[answer.result],
        identification_code=answer.identification_code or "",
        operator_id=operator_id,
        identified_at=to_timestamp(answer.identified_at),
        recipient_operator_id=answer.recipient_operator_id or "",
    )


def subscriber_to_pb(subscriber: Subscriber) -> registry_pb2.Subscriber:
    contract = subscriber.contract
    return registry_pb2.Subscriber(
        phone_number=contract.phone_number,
        contract_id=contract.contract_id,
        state=_CONTRACT_STATES[contract.state],
        activated_at=to_timestamp(contract.activated_at),
        terminated_at=to_timestamp(contract.terminated_at),
        termination_reason=(
            _REASONS_TO_PB[contract.termination_reason]
            if contract.termination_reason
            else events_pb2.TERMINATION_REASON_UNSPECIFIED
        ),
        bindings=[
            registry_pb2.MessengerBinding(
                messenger_id=b.messenger_id,
                identification_code=b.identification_code,
                bound_at=to_timestamp(b.bound_at),
            )
            for b in subscriber.bindings
        ],
        recipient_operator_id=contract.recipient_operator_id or "",
    )


def parked_to_pb(parked: ParkedNotice) -> registry_pb2.ParkedNotice:
    notice = parked.notice
    return registry_pb2.ParkedNotice(
        event_id=notice.event_id,
        messenger_id=notice.messenger_id,
        masked_phone_number=mask(notice.phone_number),
        reason=_REASONS_TO_PB[notice.reason],
        occurred_at=to_timestamp(notice.occurred_at),
        parked_at=to_timestamp(parked.parked_at),
        status=parked.status,
        message=parked.message,
        trace_id=notice.trace_id,
    )


def agreement_to_pb(agreement: Agreement) -> registry_pb2.Agreement:
    return registry_pb2.Agreement(
        messenger_id=agreement.messenger_id,
        display_name=agreement.display_name,
        state=_AGREEMENT_STATES[agreement.state],
        updated_at=to_timestamp(agreement.updated_at),
    )
