from idmesh.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SenderCheck(_message.Message):
    __slots__ = ("sender_id", "kind")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    kind: _gateway_pb2.MessageKind
    def __init__(self, sender_id: _Optional[str] = ..., kind: _Optional[_Union[_gateway_pb2.MessageKind, str]] = ...) -> None: ...

class DecideShardPartsRequest(_message.Message):
    __slots__ = ("shard_count", "min_version", "senders", "recipients")
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDERS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    shard_count: int
    min_version: int
    senders: _containers.RepeatedCompositeFieldContainer[SenderCheck]
    recipients: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.DeliveryPair]
    def __init__(self, shard_count: _Optional[int] = ..., min_version: _Optional[int] = ..., senders: _Optional[_Iterable[_Union[SenderCheck, _Mapping]]] = ..., recipients: _Optional[_Iterable[_Union[_gateway_pb2.DeliveryPair, _Mapping]]] = ...) -> None: ...

class DecideShardPartsResponse(_message.Message):
    __slots__ = ("sender_reasons", "recipient_reasons", "version")
    SENDER_REASONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_REASONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    sender_reasons: _containers.RepeatedScalarFieldContainer[_gateway_pb2.DeliveryReason]
    recipient_reasons: _containers.RepeatedScalarFieldContainer[_gateway_pb2.DeliveryReason]
    version: int
    def __init__(self, sender_reasons: _Optional[_Iterable[_Union[_gateway_pb2.DeliveryReason, str]]] = ..., recipient_reasons: _Optional[_Iterable[_Union[_gateway_pb2.DeliveryReason, str]]] = ..., version: _Optional[int] = ...) -> None: ...
