from idmesh.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecideShardPartsRequest(_message.Message):
    __slots__ = ("shard_count", "min_version", "sender_ids", "sender_kinds", "recipient_ids", "recipient_senders", "recipient_kinds")
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_IDS_FIELD_NUMBER: _ClassVar[int]
    SENDER_KINDS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_SENDERS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KINDS_FIELD_NUMBER: _ClassVar[int]
    shard_count: int
    min_version: int
    sender_ids: _containers.RepeatedScalarFieldContainer[str]
    sender_kinds: _containers.RepeatedScalarFieldContainer[_gateway_pb2.MessageKind]
    recipient_ids: _containers.RepeatedScalarFieldContainer[str]
    recipient_senders: _containers.RepeatedScalarFieldContainer[str]
    recipient_kinds: _containers.RepeatedScalarFieldContainer[_gateway_pb2.MessageKind]
    def __init__(self, shard_count: _Optional[int] = ..., min_version: _Optional[int] = ..., sender_ids: _Optional[_Iterable[str]] = ..., sender_kinds: _Optional[_Iterable[_Union[_gateway_pb2.MessageKind, str]]] = ..., recipient_ids: _Optional[_Iterable[str]] = ..., recipient_senders: _Optional[_Iterable[str]] = ..., recipient_kinds: _Optional[_Iterable[_Union[_gateway_pb2.MessageKind, str]]] = ...) -> None: ...

class DecideShardPartsResponse(_message.Message):
    __slots__ = ("sender_reasons", "recipient_reasons", "version")
    SENDER_REASONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_REASONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    sender_reasons: _containers.RepeatedScalarFieldContainer[_gateway_pb2.DeliveryReason]
    recipient_reasons: _containers.RepeatedScalarFieldContainer[_gateway_pb2.DeliveryReason]
    version: int
    def __init__(self, sender_reasons: _Optional[_Iterable[_Union[_gateway_pb2.DeliveryReason, str]]] = ..., recipient_reasons: _Optional[_Iterable[_Union[_gateway_pb2.DeliveryReason, str]]] = ..., version: _Optional[int] = ...) -> None: ...
