from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_PHONE_NUMBER: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_CALLER_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_UNIMPLEMENTED: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_OVERLOADED: _ClassVar[ErrorReason]
    ERROR_REASON_IDENTIFICATION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_STATE: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_CODE: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_ATTEMPTS: _ClassVar[ErrorReason]
    ERROR_REASON_CODE_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_SAME_NUMBER: _ClassVar[ErrorReason]
    ERROR_REASON_SMS_NOT_SENT: _ClassVar[ErrorReason]
    ERROR_REASON_NEVER_IDENTIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_AGREEMENT_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_OPERATOR_UNREACHABLE: _ClassVar[ErrorReason]
    ERROR_REASON_IDEMPOTENCY_KEY_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_NUMBER_NOT_SERVED: _ClassVar[ErrorReason]
    ERROR_REASON_COUNTRY_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_DEADLINE_PASSED: _ClassVar[ErrorReason]
    ERROR_REASON_SUBSCRIBER_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_SUBSCRIBER_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_MESSENGER_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_CONTRACT_NOT_ACTIVE: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_EVENT: _ClassVar[ErrorReason]
    ERROR_REASON_OPERATOR_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_MESSENGER_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_EVENT_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_CURSOR_OUT_OF_RANGE: _ClassVar[ErrorReason]
    ERROR_REASON_ACK_BEYOND_HEAD: _ClassVar[ErrorReason]
    ERROR_REASON_CONSUMER_TOO_SLOW: _ClassVar[ErrorReason]
    ERROR_REASON_SHUTTING_DOWN: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_FIELD: ErrorReason
ERROR_REASON_FIELD_TOO_LONG: ErrorReason
ERROR_REASON_INVALID_PHONE_NUMBER: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_CALLER_NOT_ALLOWED: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
ERROR_REASON_UNIMPLEMENTED: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_OVERLOADED: ErrorReason
ERROR_REASON_IDENTIFICATION_NOT_FOUND: ErrorReason
ERROR_REASON_WRONG_STATE: ErrorReason
ERROR_REASON_WRONG_CODE: ErrorReason
ERROR_REASON_TOO_MANY_ATTEMPTS: ErrorReason
ERROR_REASON_CODE_EXPIRED: ErrorReason
ERROR_REASON_SAME_NUMBER: ErrorReason
ERROR_REASON_SMS_NOT_SENT: ErrorReason
ERROR_REASON_NEVER_IDENTIFIED: ErrorReason
ERROR_REASON_AGREEMENT_MISSING: ErrorReason
ERROR_REASON_OPERATOR_UNREACHABLE: ErrorReason
ERROR_REASON_IDEMPOTENCY_KEY_REUSED: ErrorReason
ERROR_REASON_NUMBER_NOT_SERVED: ErrorReason
ERROR_REASON_COUNTRY_NOT_ALLOWED: ErrorReason
ERROR_REASON_REQUEST_ID_REUSED: ErrorReason
ERROR_REASON_DEADLINE_PASSED: ErrorReason
ERROR_REASON_SUBSCRIBER_EXISTS: ErrorReason
ERROR_REASON_SUBSCRIBER_NOT_FOUND: ErrorReason
ERROR_REASON_MESSENGER_NOT_FOUND: ErrorReason
ERROR_REASON_CONTRACT_NOT_ACTIVE: ErrorReason
ERROR_REASON_INVALID_EVENT: ErrorReason
ERROR_REASON_OPERATOR_MISMATCH: ErrorReason
ERROR_REASON_MESSENGER_MISMATCH: ErrorReason
ERROR_REASON_EVENT_ID_CONFLICT: ErrorReason
ERROR_REASON_CURSOR_OUT_OF_RANGE: ErrorReason
ERROR_REASON_ACK_BEYOND_HEAD: ErrorReason
ERROR_REASON_CONSUMER_TOO_SLOW: ErrorReason
ERROR_REASON_SHUTTING_DOWN: ErrorReason

class RowError(_message.Message):
    __slots__ = ("line", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    message: str
    def __init__(self, line: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
