import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from idmesh.common.v1 import bulk_pb2 as _bulk_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentificationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTIFICATION_STATE_UNSPECIFIED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_AWAITING_CODE: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_VERIFYING: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_IDENTIFIED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_NOT_COMPLETED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_REVOKED: _ClassVar[IdentificationState]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_NO_SUBSCRIBER: _ClassVar[Reason]
    REASON_OPERATOR_TIMEOUT: _ClassVar[Reason]
    REASON_NO_OPERATOR: _ClassVar[Reason]
    REASON_AGREEMENT_REFUSED: _ClassVar[Reason]
    REASON_CODE_EXPIRED: _ClassVar[Reason]
    REASON_TOO_MANY_ATTEMPTS: _ClassVar[Reason]
    REASON_CONTRACT_TERMINATED: _ClassVar[Reason]
    REASON_PORTED_OUT: _ClassVar[Reason]
    REASON_NOT_IDENTIFIED: _ClassVar[Reason]
    REASON_NUMBER_CHANGED: _ClassVar[Reason]

class NumberReassignment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NUMBER_REASSIGNMENT_UNSPECIFIED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_REASSIGNED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_NOT_REASSIGNED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_NO_DATA: _ClassVar[NumberReassignment]

class RouteSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_SOURCE_UNSPECIFIED: _ClassVar[RouteSource]
    ROUTE_SOURCE_PORTED_NUMBERS: _ClassVar[RouteSource]
    ROUTE_SOURCE_NUMBERING_PLAN: _ClassVar[RouteSource]
    ROUTE_SOURCE_CARRIER_DATA: _ClassVar[RouteSource]
    ROUTE_SOURCE_OPERATOR_HINT: _ClassVar[RouteSource]
IDENTIFICATION_STATE_UNSPECIFIED: IdentificationState
IDENTIFICATION_STATE_AWAITING_CODE: IdentificationState
IDENTIFICATION_STATE_VERIFYING: IdentificationState
IDENTIFICATION_STATE_IDENTIFIED: IdentificationState
IDENTIFICATION_STATE_NOT_COMPLETED: IdentificationState
IDENTIFICATION_STATE_REVOKED: IdentificationState
REASON_UNSPECIFIED: Reason
REASON_NO_SUBSCRIBER: Reason
REASON_OPERATOR_TIMEOUT: Reason
REASON_NO_OPERATOR: Reason
REASON_AGREEMENT_REFUSED: Reason
REASON_CODE_EXPIRED: Reason
REASON_TOO_MANY_ATTEMPTS: Reason
REASON_CONTRACT_TERMINATED: Reason
REASON_PORTED_OUT: Reason
REASON_NOT_IDENTIFIED: Reason
REASON_NUMBER_CHANGED: Reason
NUMBER_REASSIGNMENT_UNSPECIFIED: NumberReassignment
NUMBER_REASSIGNMENT_REASSIGNED: NumberReassignment
NUMBER_REASSIGNMENT_NOT_REASSIGNED: NumberReassignment
NUMBER_REASSIGNMENT_NO_DATA: NumberReassignment
ROUTE_SOURCE_UNSPECIFIED: RouteSource
ROUTE_SOURCE_PORTED_NUMBERS: RouteSource
ROUTE_SOURCE_NUMBERING_PLAN: RouteSource
ROUTE_SOURCE_CARRIER_DATA: RouteSource
ROUTE_SOURCE_OPERATOR_HINT: RouteSource

class Identification(_message.Message):
    __slots__ = ("identification_id", "user_id", "phone_number", "state", "reason", "operator_id", "started_at", "code_expires_at", "verification_deadline", "completed_at", "attempts_left")
    IDENTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_LEFT_FIELD_NUMBER: _ClassVar[int]
    identification_id: str
    user_id: str
    phone_number: str
    state: IdentificationState
    reason: Reason
    operator_id: str
    started_at: _timestamp_pb2.Timestamp
    code_expires_at: _timestamp_pb2.Timestamp
    verification_deadline: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    attempts_left: int
    def __init__(self, identification_id: _Optional[str] = ..., user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., state: _Optional[_Union[IdentificationState, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., operator_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verification_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts_left: _Optional[int] = ...) -> None: ...

class StartIdentificationRequest(_message.Message):
    __slots__ = ("user_id", "phone_number", "idempotency_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    phone_number: str
    idempotency_key: str
    def __init__(self, user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartIdentificationResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class ConfirmPossessionRequest(_message.Message):
    __slots__ = ("identification_id", "code", "max_wait")
    IDENTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    identification_id: str
    code: str
    max_wait: _duration_pb2.Duration
    def __init__(self, identification_id: _Optional[str] = ..., code: _Optional[str] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ConfirmPossessionResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class GetIdentificationRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetIdentificationResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("allowed", "reason", "message", "state")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: Reason
    message: str
    state: IdentificationState
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[_Union[Reason, str]] = ..., message: _Optional[str] = ..., state: _Optional[_Union[IdentificationState, str]] = ...) -> None: ...

class ChangePhoneNumberRequest(_message.Message):
    __slots__ = ("user_id", "phone_number")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    phone_number: str
    def __init__(self, user_id: _Optional[str] = ..., phone_number: _Optional[str] = ...) -> None: ...

class ChangePhoneNumberResponse(_message.Message):
    __slots__ = ("identification", "previous")
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    previous: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ..., previous: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class CheckNumberReassignedRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CheckNumberReassignedResponse(_message.Message):
    __slots__ = ("reassignment", "since", "operator_id", "phone_number")
    REASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    reassignment: NumberReassignment
    since: _timestamp_pb2.Timestamp
    operator_id: str
    phone_number: str
    def __init__(self, reassignment: _Optional[_Union[NumberReassignment, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator_id: _Optional[str] = ..., phone_number: _Optional[str] = ...) -> None: ...

class PortedNumber(_message.Message):
    __slots__ = ("line", "phone_number", "recipient_operator_id", "ported_at")
    LINE_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PORTED_AT_FIELD_NUMBER: _ClassVar[int]
    line: int
    phone_number: str
    recipient_operator_id: str
    ported_at: _timestamp_pb2.Timestamp
    def __init__(self, line: _Optional[int] = ..., phone_number: _Optional[str] = ..., recipient_operator_id: _Optional[str] = ..., ported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportPortedNumbersRequest(_message.Message):
    __slots__ = ("mode", "rows")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    mode: _bulk_pb2.ImportMode
    rows: _containers.RepeatedCompositeFieldContainer[PortedNumber]
    def __init__(self, mode: _Optional[_Union[_bulk_pb2.ImportMode, str]] = ..., rows: _Optional[_Iterable[_Union[PortedNumber, _Mapping]]] = ...) -> None: ...

class ImportPortedNumbersResponse(_message.Message):
    __slots__ = ("imported", "rejected", "errors", "committed", "unchanged")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    imported: int
    rejected: int
    errors: _containers.RepeatedCompositeFieldContainer[_bulk_pb2.RowError]
    committed: bool
    unchanged: int
    def __init__(self, imported: _Optional[int] = ..., rejected: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[_bulk_pb2.RowError, _Mapping]]] = ..., committed: _Optional[bool] = ..., unchanged: _Optional[int] = ...) -> None: ...

class ResolveOperatorRequest(_message.Message):
    __slots__ = ("phone_number",)
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    def __init__(self, phone_number: _Optional[str] = ...) -> None: ...

class ResolveOperatorResponse(_message.Message):
    __slots__ = ("phone_number", "operator_id", "source", "configured")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    operator_id: str
    source: RouteSource
    configured: bool
    def __init__(self, phone_number: _Optional[str] = ..., operator_id: _Optional[str] = ..., source: _Optional[_Union[RouteSource, str]] = ..., configured: _Optional[bool] = ...) -> None: ...
