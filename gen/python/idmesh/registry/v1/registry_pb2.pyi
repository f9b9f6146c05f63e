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
VERIFICATION_RESULT_UNSPECIFIED: VerificationResult
VERIFICATION_RESULT_IDENTIFIED: VerificationResult
VERIFICATION_RESULT_NO_SUBSCRIBER: VerificationResult
CONTRACT_STATE_UNSPECIFIED: ContractState
CONTRACT_STATE_ACTIVE: ContractState
CONTRACT_STATE_TERMINATED: ContractState
AGREEMENT_STATE_UNSPECIFIED: AgreementState
AGREEMENT_STATE_ACTIVE: AgreementState
AGREEMENT_STATE_SUSPENDED: AgreementState

class VerifySubscriberRequest(_message.Message):
    __slots__ = ("request_id", "phone_number")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    phone_number: str
    def __init__(self, request_id: _Optional[str] = ..., phone_number: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("phone_number", "contract_id", "state", "activated_at", "terminated_at", "termination_reason", "bindings")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    contract_id: str
    state: ContractState
    activated_at: _timestamp_pb2.Timestamp
    terminated_at: _timestamp_pb2.Timestamp
    termination_reason: _events_pb2.TerminationReason
    bindings: _containers.RepeatedCompositeFieldContainer[MessengerBinding]
    def __init__(self, phone_number: _Optional[str] = ..., contract_id: _Optional[str] = ..., state: _Optional[_Union[ContractState, str]] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., terminated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., termination_reason: _Optional[_Union[_events_pb2.TerminationReason, str]] = ..., bindings: _Optional[_Iterable[_Union[MessengerBinding, _Mapping]]] = ...) -> None: ...

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
