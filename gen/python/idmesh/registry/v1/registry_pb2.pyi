import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from idmesh.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerificationResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERIFICATION_RESULT_UNSPECIFIED: _ClassVar[VerificationResult]
    VERIFICATION_RESULT_IDENTIFIED: _ClassVar[VerificationResult]
    VERIFICATION_RESULT_NO_SUBSCRIBER: _ClassVar[VerificationResult]

class ReassignmentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASSIGNMENT_STATUS_UNSPECIFIED: _ClassVar[ReassignmentStatus]
    REASSIGNMENT_STATUS_REASSIGNED: _ClassVar[ReassignmentStatus]
    REASSIGNMENT_STATUS_NOT_REASSIGNED: _ClassVar[ReassignmentStatus]
    REASSIGNMENT_STATUS_NO_DATA: _ClassVar[ReassignmentStatus]

class ImportMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORT_MODE_UNSPECIFIED: _ClassVar[ImportMode]
    IMPORT_MODE_ALL_OR_NOTHING: _ClassVar[ImportMode]
    IMPORT_MODE_VALID_ROWS: _ClassVar[ImportMode]

class ContractState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTRACT_STATE_UNSPECIFIED: _ClassVar[ContractState]
    CONTRACT_STATE_ACTIVE: _ClassVar[ContractState]
    CONTRACT_STATE_TERMINATED: _ClassVar[ContractState]

class AgreementState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGREEMENT_STATE_UNSPECIFIED: _ClassVar[AgreementState]
    AGREEMENT_STATE_ACTIVE: _ClassVar[AgreementState]
    AGREEMENT_STATE_SUSPENDED: _ClassVar[AgreementState]

class TerminationOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINATION_OUTCOME_UNSPECIFIED: _ClassVar[TerminationOutcome]
    TERMINATION_OUTCOME_ENDED: _ClassVar[TerminationOutcome]
    TERMINATION_OUTCOME_NOT_FOUND: _ClassVar[TerminationOutcome]
    TERMINATION_OUTCOME_NOT_ACTIVE: _ClassVar[TerminationOutcome]
    TERMINATION_OUTCOME_INVALID: _ClassVar[TerminationOutcome]
VERIFICATION_RESULT_UNSPECIFIED: VerificationResult
VERIFICATION_RESULT_IDENTIFIED: VerificationResult
VERIFICATION_RESULT_NO_SUBSCRIBER: VerificationResult
REASSIGNMENT_STATUS_UNSPECIFIED: ReassignmentStatus
REASSIGNMENT_STATUS_REASSIGNED: ReassignmentStatus
REASSIGNMENT_STATUS_NOT_REASSIGNED: ReassignmentStatus
REASSIGNMENT_STATUS_NO_DATA: ReassignmentStatus
IMPORT_MODE_UNSPECIFIED: ImportMode
IMPORT_MODE_ALL_OR_NOTHING: ImportMode
IMPORT_MODE_VALID_ROWS: ImportMode
CONTRACT_STATE_UNSPECIFIED: ContractState
CONTRACT_STATE_ACTIVE: ContractState
CONTRACT_STATE_TERMINATED: ContractState
AGREEMENT_STATE_UNSPECIFIED: AgreementState
AGREEMENT_STATE_ACTIVE: AgreementState
AGREEMENT_STATE_SUSPENDED: AgreementState
TERMINATION_OUTCOME_UNSPECIFIED: TerminationOutcome
TERMINATION_OUTCOME_ENDED: TerminationOutcome
TERMINATION_OUTCOME_NOT_FOUND: TerminationOutcome
TERMINATION_OUTCOME_NOT_ACTIVE: TerminationOutcome
TERMINATION_OUTCOME_INVALID: TerminationOutcome

class VerifySubscriberRequest(_message.Message):
    __slots__ = ("request_id", "phone_number", "idempotency_key")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    phone_number: str
    idempotency_key: str
    def __init__(self, request_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class VerifySubscriberResponse(_message.Message):
    __slots__ = ("result", "identification_code", "operator_id", "identified_at", "recipient_operator_id")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IDENTIFICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    result: VerificationResult
    identification_code: str
    operator_id: str
    identified_at: _timestamp_pb2.Timestamp
    recipient_operator_id: str
    def __init__(self, result: _Optional[_Union[VerificationResult, str]] = ..., identification_code: _Optional[str] = ..., operator_id: _Optional[str] = ..., identified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recipient_operator_id: _Optional[str] = ...) -> None: ...

class MessengerBinding(_message.Message):
    __slots__ = ("messenger_id", "identification_code", "bound_at")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    BOUND_AT_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    identification_code: str
    bound_at: _timestamp_pb2.Timestamp
    def __init__(self, messenger_id: _Optional[str] = ..., identification_code: _Optional[str] = ..., bound_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Subscriber(_message.Message):
    __slots__ = ("phone_number", "contract_id", "state", "activated_at", "terminated_at", "termination_reason", "bindings", "recipient_operator_id")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    contract_id: str
    state: ContractState
    activated_at: _timestamp_pb2.Timestamp
    terminated_at: _timestamp_pb2.Timestamp
    termination_reason: _events_pb2.TerminationReason
    bindings: _containers.RepeatedCompositeFieldContainer[MessengerBinding]
    recipient_operator_id: str
    def __init__(self, phone_number: _Optional[str] = ..., contract_id: _Optional[str] = ..., state: _Optional[_Union[ContractState, str]] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., terminated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., termination_reason: _Optional[_Union[_events_pb2.TerminationReason, str]] = ..., bindings: _Optional[_Iterable[_Union[MessengerBinding, _Mapping]]] = ..., recipient_operator_id: _Optional[str] = ...) -> None: ...

class Agreement(_message.Message):
    __slots__ = ("messenger_id", "display_name", "state", "updated_at")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    display_name: str
    state: AgreementState
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, messenger_id: _Optional[str] = ..., display_name: _Optional[str] = ..., state: _Optional[_Union[AgreementState, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSubscriberRequest(_message.Message):
    __slots__ = ("phone_number", "contract_id", "activated_at")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    contract_id: str
    activated_at: _timestamp_pb2.Timestamp
    def __init__(self, phone_number: _Optional[str] = ..., contract_id: _Optional[str] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSubscriberResponse(_message.Message):
    __slots__ = ("subscriber",)
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    subscriber: Subscriber
    def __init__(self, subscriber: _Optional[_Union[Subscriber, _Mapping]] = ...) -> None: ...

class GetSubscriberRequest(_message.Message):
    __slots__ = ("phone_number",)
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    def __init__(self, phone_number: _Optional[str] = ...) -> None: ...

class GetSubscriberResponse(_message.Message):
    __slots__ = ("subscriber",)
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    subscriber: Subscriber
    def __init__(self, subscriber: _Optional[_Union[Subscriber, _Mapping]] = ...) -> None: ...

class TerminateContractRequest(_message.Message):
    __slots__ = ("phone_number", "reason")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    reason: _events_pb2.TerminationReason
    def __init__(self, phone_number: _Optional[str] = ..., reason: _Optional[_Union[_events_pb2.TerminationReason, str]] = ...) -> None: ...

class TerminateContractResponse(_message.Message):
    __slots__ = ("subscriber", "notices_queued")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    NOTICES_QUEUED_FIELD_NUMBER: _ClassVar[int]
    subscriber: Subscriber
    notices_queued: int
    def __init__(self, subscriber: _Optional[_Union[Subscriber, _Mapping]] = ..., notices_queued: _Optional[int] = ...) -> None: ...

class RegisterMessengerRequest(_message.Message):
    __slots__ = ("messenger_id", "display_name")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    display_name: str
    def __init__(self, messenger_id: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class RegisterMessengerResponse(_message.Message):
    __slots__ = ("agreement",)
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    agreement: Agreement
    def __init__(self, agreement: _Optional[_Union[Agreement, _Mapping]] = ...) -> None: ...

class SuspendMessengerRequest(_message.Message):
    __slots__ = ("messenger_id",)
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    def __init__(self, messenger_id: _Optional[str] = ...) -> None: ...

class SuspendMessengerResponse(_message.Message):
    __slots__ = ("agreement",)
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    agreement: Agreement
    def __init__(self, agreement: _Optional[_Union[Agreement, _Mapping]] = ...) -> None: ...

class ListMessengersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMessengersResponse(_message.Message):
    __slots__ = ("agreements",)
    AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    agreements: _containers.RepeatedCompositeFieldContainer[Agreement]
    def __init__(self, agreements: _Optional[_Iterable[_Union[Agreement, _Mapping]]] = ...) -> None: ...

class CheckNumberReassignedRequest(_message.Message):
    __slots__ = ("phone_number", "since")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, phone_number: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckNumberReassignedResponse(_message.Message):
    __slots__ = ("status", "records_begin_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_BEGIN_AT_FIELD_NUMBER: _ClassVar[int]
    status: ReassignmentStatus
    records_begin_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[ReassignmentStatus, str]] = ..., records_begin_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PortOutRequest(_message.Message):
    __slots__ = ("phone_number", "recipient_operator_id")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    recipient_operator_id: str
    def __init__(self, phone_number: _Optional[str] = ..., recipient_operator_id: _Optional[str] = ...) -> None: ...

class PortOutResponse(_message.Message):
    __slots__ = ("subscriber", "notices_queued")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    NOTICES_QUEUED_FIELD_NUMBER: _ClassVar[int]
    subscriber: Subscriber
    notices_queued: int
    def __init__(self, subscriber: _Optional[_Union[Subscriber, _Mapping]] = ..., notices_queued: _Optional[int] = ...) -> None: ...

class SubscriberRow(_message.Message):
    __slots__ = ("line", "phone_number", "contract_id", "activated_at")
    LINE_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    line: int
    phone_number: str
    contract_id: str
    activated_at: _timestamp_pb2.Timestamp
    def __init__(self, line: _Optional[int] = ..., phone_number: _Optional[str] = ..., contract_id: _Optional[str] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportSubscribersRequest(_message.Message):
    __slots__ = ("mode", "rows")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    mode: ImportMode
    rows: _containers.RepeatedCompositeFieldContainer[SubscriberRow]
    def __init__(self, mode: _Optional[_Union[ImportMode, str]] = ..., rows: _Optional[_Iterable[_Union[SubscriberRow, _Mapping]]] = ...) -> None: ...

class RowError(_message.Message):
    __slots__ = ("line", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    message: str
    def __init__(self, line: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ImportSubscribersResponse(_message.Message):
    __slots__ = ("imported", "rejected", "errors", "committed")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    imported: int
    rejected: int
    errors: _containers.RepeatedCompositeFieldContainer[RowError]
    committed: bool
    def __init__(self, imported: _Optional[int] = ..., rejected: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[RowError, _Mapping]]] = ..., committed: _Optional[bool] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("recorded_at", "messenger_id", "masked_phone_number", "request_id", "outcome", "idempotency_key")
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    recorded_at: _timestamp_pb2.Timestamp
    messenger_id: str
    masked_phone_number: str
    request_id: str
    outcome: str
    idempotency_key: str
    def __init__(self, recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., messenger_id: _Optional[str] = ..., masked_phone_number: _Optional[str] = ..., request_id: _Optional[str] = ..., outcome: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ("messenger_id", "outcome", "since", "until", "page_size", "page_token")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    outcome: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, messenger_id: _Optional[str] = ..., outcome: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ParkedNotice(_message.Message):
    __slots__ = ("event_id", "messenger_id", "masked_phone_number", "reason", "occurred_at", "parked_at", "status", "message", "trace_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PARKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    messenger_id: str
    masked_phone_number: str
    reason: _events_pb2.TerminationReason
    occurred_at: _timestamp_pb2.Timestamp
    parked_at: _timestamp_pb2.Timestamp
    status: str
    message: str
    trace_id: str
    def __init__(self, event_id: _Optional[str] = ..., messenger_id: _Optional[str] = ..., masked_phone_number: _Optional[str] = ..., reason: _Optional[_Union[_events_pb2.TerminationReason, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ListParkedNoticesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListParkedNoticesResponse(_message.Message):
    __slots__ = ("notices", "next_page_token")
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    notices: _containers.RepeatedCompositeFieldContainer[ParkedNotice]
    next_page_token: str
    def __init__(self, notices: _Optional[_Iterable[_Union[ParkedNotice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryParkedNoticesRequest(_message.Message):
    __slots__ = ("event_ids",)
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RetryParkedNoticesResponse(_message.Message):
    __slots__ = ("requeued",)
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    requeued: int
    def __init__(self, requeued: _Optional[int] = ...) -> None: ...

class TerminationRow(_message.Message):
    __slots__ = ("line", "phone_number", "reason", "recipient_operator_id")
    LINE_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    line: int
    phone_number: str
    reason: _events_pb2.TerminationReason
    recipient_operator_id: str
    def __init__(self, line: _Optional[int] = ..., phone_number: _Optional[str] = ..., reason: _Optional[_Union[_events_pb2.TerminationReason, str]] = ..., recipient_operator_id: _Optional[str] = ...) -> None: ...

class TerminateContractsRequest(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[TerminationRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[TerminationRow, _Mapping]]] = ...) -> None: ...

class TerminationRefusal(_message.Message):
    __slots__ = ("line", "outcome", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    outcome: TerminationOutcome
    message: str
    def __init__(self, line: _Optional[int] = ..., outcome: _Optional[_Union[TerminationOutcome, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TerminateContractsResponse(_message.Message):
    __slots__ = ("rows", "ended", "refused", "notices_queued", "refusals")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    NOTICES_QUEUED_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    ended: int
    refused: int
    notices_queued: int
    refusals: _containers.RepeatedCompositeFieldContainer[TerminationRefusal]
    def __init__(self, rows: _Optional[int] = ..., ended: _Optional[int] = ..., refused: _Optional[int] = ..., notices_queued: _Optional[int] = ..., refusals: _Optional[_Iterable[_Union[TerminationRefusal, _Mapping]]] = ...) -> None: ...
