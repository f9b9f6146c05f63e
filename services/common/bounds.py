"""Input size bounds: every string and repeated field of every request has a maximum size, checked
before any work (by the server interceptor, on each request message, streamed ones included).

One table for the three APIs, by field name, with per-message overrides ("Message.field"); the
maxima are documented in the protos' field comments ("At most N characters."), and
tests/contract/test_bounds.py checks that table and comments agree and covers every field of
every request. A field missing from the table (a new one) gets DEFAULT_MAX_CHARS, so the server
stays bounded, and the test fails until it is documented.

Sizes are in characters (Unicode code points) for strings and in items for repeated fields. The
domains still validate the content (a valid user id, an E.164 number); this check only refuses
what is too big to look at, with reason FIELD_TOO_LONG, naming the field and the maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common.errors import InvalidInput

DEFAULT_MAX_CHARS = 1024

# String fields of requests: the most characters, by field name.
MAX_CHARS: Mapping[str, int] = {
    "user_id": 128,
    "phone_number": 32,
    "identification_id": 64,
    "code": 16,
    "idempotency_key": 128,
    "VerifySubscriberRequest.idempotency_key": 64,
    "VerifySubscriberRequest.request_id": 64,
    "trace_id": 64,
    "contract_id": 64,
    "messenger_id": 64,
    "operator_id": 64,
    "recipient_operator_id": 64,
    "display_name": 200,
    "page_token": 64,
    "outcome": 32,
    "event_id": 64,
    "event_ids": 64,  # each item of RetryParkedNoticesRequest.event_ids
    "identification_code": 256,
    "sender_id": 128,
    "sender_ids": 128,  # each item of DecideShardPartsRequest.sender_ids
    "recipient_ids": 128,
    "recipient_senders": 128,
    "recipient_id": 128,
    "order_id": 64,
    "LiftRestrictionOrderRequest.reason": 500,
    # Rows of a bulk import: a malformed value is reported as that row's error (with its line),
    # so a row's fields may be longer than a valid value, up to these.
    "SubscriberRow.phone_number": 256,
    "SubscriberRow.contract_id": 256,
    "PortedNumber.phone_number": 256,
    "PortedNumber.recipient_operator_id": 256,
    "TerminationRow.phone_number": 256,
    "TerminationRow.recipient_operator_id": 256,
}

# Repeated fields of requests: the most items per message.
MAX_ITEMS: Mapping[str, int] = {
    "rows": 10_000,
    "events": 1_000,
    "event_ids": 1_000,
    "pairs": 10_000,
    # DecideShardPartsRequest, between a gateway's replicas
    "sender_ids": 10_000,
    "sender_kinds": 10_000,
    "recipient_ids": 10_000,
    "recipient_senders": 10_000,
    "recipient_kinds": 10_000,
}


def max_size(message: Descriptor, field: FieldDescriptor, *, item: bool = False) -> int:
    """The maximum size of field in message (characters, or items if repeated; with item, the
    characters of each item of a repeated string)."""
    table = MAX_ITEMS if _is_repeated(field) and not item else MAX_CHARS
    for key in (f"{message.name}.{field.name}", field.name):
        if key in table:
            return table[key]
    return DEFAULT_MAX_CHARS


def check_bounds(message: Any) -> None:
    """Raise InvalidInput (FIELD_TOO_LONG) for the first field of message (or of a message in
    it) over its maximum size."""
    _check(message, "")


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@cache
def _plan(message: Descriptor) -> tuple[tuple[str, int, bool, bool, int], ...]:
    """(name, maximum, repeated, is_message, item maximum) for each string, repeated or message
    field; the item maximum bounds each item of a repeated string (0 for other fields)."""
    plan = []
    for field in message.fields:
        repeated = _is_repeated(field)
        inner = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        # Timestamp, Duration: nothing of unbounded size inside
        is_message = inner is not None and not inner.full_name.startswith("google.protobuf.")
        is_string = field.type == FieldDescriptor.TYPE_STRING
        if is_string or repeated or is_message:
            item = max_size(message, field, item=True) if repeated and is_string else 0
            plan.append((field.name, max_size(message, field), repeated, is_message, item))
    return tuple(plan)


def _check(message: Any, prefix: str) -> None:
    for name, limit, repeated, is_message, item_limit in _plan(message.DESCRIPTOR):
        value = getattr(message, name)
        if repeated:
            if len(value) > limit:
                _refuse(f"{prefix}{name} has {len(value)} items", limit, name, f"{prefix}{name}")
            if is_message:
                for index, item in enumerate(value):
                    _check(item, f"{prefix}{name}[{index}].")
            elif item_limit:  # a repeated string: each item bounded too
                for index, text in enumerate(value):
                    if len(text) > item_limit:
                        where = f"{prefix}{name}[{index}]"
                        _refuse(
                            f"{where} is {len(text)} characters long",
                            item_limit,
                            "characters",
                            where,
                        )
        elif is_message:
            if message.HasField(name):
                _check(value, f"{prefix}{name}.")
        elif len(value) > limit:
            what = f"{prefix}{name} is {len(value)} characters long"
            _refuse(what, limit, "characters", f"{prefix}{name}")


def _refuse(what: str, limit: int, unit: str, field: str) -> None:
    raise InvalidInput(
        f"{what}: at most {limit} {unit} are allowed",
        reason="FIELD_TOO_LONG",
        field=field,
        metadata={"max": limit},
    )
