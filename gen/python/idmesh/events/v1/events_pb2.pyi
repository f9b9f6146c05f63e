import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerminationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINATION_REASON_UNSPECIFIED: _ClassVar[TerminationReason]
    TERMINATION_REASON_CONTRACT_ENDED: _ClassVar[TerminationReason]
    TERMINATION_REASON_PORTED_OUT: _ClassVar[TerminationReason]
TERMINATION_REASON_UNSPECIFIED: TerminationReason
TERMINATION_REASON_CONTRACT_ENDED: TerminationReason
TERMINATION_REASON_PORTED_OUT: TerminationReason

class ContractTerminated(_message.Message):
    __slots__ = ("event_id", "operator_id", "messenger_id", "phone_number", "identification_code", "reason", "occurred_at", "recipient_operator_id", "trace_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IDENTIFICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    operator_id: str
    messenger_id: str
    phone_number: str
    identification_code: str
    reason: TerminationReason
    occurred_at: _timestamp_pb2.Timestamp
    recipient_operator_id: str
    trace_id: str
    def __init__(self, event_id: _Optional[str] = ..., operator_id: _Optional[str] = ..., messenger_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., identification_code: _Optional[str] = ..., reason: _Optional[_Union[TerminationReason, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recipient_operator_id: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...
