import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from idmesh.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.ContractTerminated]
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.ContractTerminated, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("messenger_id", "after_seq", "max_batch_size")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    after_seq: int
    max_batch_size: int
    def __init__(self, messenger_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("seq", "event", "published_at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    event: _events_pb2.ContractTerminated
    published_at: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., event: _Optional[_Union[_events_pb2.ContractTerminated, _Mapping]] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProgressMark(_message.Message):
    __slots__ = ("head_seq",)
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    head_seq: int
    def __init__(self, head_seq: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("notice", "progress", "notices")
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    notice: Notice
    progress: ProgressMark
    notices: _containers.RepeatedCompositeFieldContainer[Notice]
    def __init__(self, notice: _Optional[_Union[Notice, _Mapping]] = ..., progress: _Optional[_Union[ProgressMark, _Mapping]] = ..., notices: _Optional[_Iterable[_Union[Notice, _Mapping]]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("messenger_id", "up_to_seq")
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    up_to_seq: int
    def __init__(self, messenger_id: _Optional[str] = ..., up_to_seq: _Optional[int] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("acked_seq",)
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    acked_seq: int
    def __init__(self, acked_seq: _Optional[int] = ...) -> None: ...

class GetDeliveryStatusRequest(_message.Message):
    __slots__ = ("messenger_id",)
    MESSENGER_ID_FIELD_NUMBER: _ClassVar[int]
    messenger_id: str
    def __init__(self, messenger_id: _Optional[str] = ...) -> None: ...

class GetDeliveryStatusResponse(_message.Message):
    __slots__ = ("head_seq", "acked_seq", "floor_seq", "unacked_count", "oldest_unacked_age", "late_deliveries", "oldest_unacked_published_at", "delivery_limit")
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    UNACKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_UNACKED_AGE_FIELD_NUMBER: _ClassVar[int]
    LATE_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_UNACKED_PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    head_seq: int
    acked_seq: int
    floor_seq: int
    unacked_count: int
    oldest_unacked_age: _duration_pb2.Duration
    late_deliveries: int
    oldest_unacked_published_at: _timestamp_pb2.Timestamp
    delivery_limit: _duration_pb2.Duration
    def __init__(self, head_seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., floor_seq: _Optional[int] = ..., unacked_count: _Optional[int] = ..., oldest_unacked_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., late_deliveries: _Optional[int] = ..., oldest_unacked_published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivery_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
