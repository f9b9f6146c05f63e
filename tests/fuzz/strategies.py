"""Hypothesis strategies for any protobuf message, derived from its descriptor.

`message_strategy(descriptor, hints)` walks every field, recursively: each field is left unset
or given a value of its wire type, biased towards the values that break code (the extremes of
every integer type, unknown enum numbers, empty, huge (up to ~100 KB) and odd Unicode strings,
Timestamps and Durations out of their documented range) and towards `hints`, values that exist
in the stores (by field name), so that requests also get past the first check of an RPC.

Only what the wire can carry is generated: strings are valid UTF-8 (no lone surrogates), and
integers stay within their field's type, as a client's protobuf library would enforce.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from services.common.timeutil import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS

MAX_DEPTH = 4  # nested messages deeper than this are left unset
MAX_REPEATED = 3  # elements of a repeated field
HUGE_BYTES = 100_000  # the largest string, in UTF-8 bytes

_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Interesting points of every integer type (each kept where it fits the field's range).
_INT_EDGES = (
    0,
    1,
    -1,
    2,
    10,
    100,
    1_000,
    10**6,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32 - 1,
    2**40,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
)
_ODD_STRINGS = (
    " ",
    "\x00",
    "\u202e",  # right-to-left override
    "e\u0301",  # a combining accent
    "\ufeff+79031234567",  # a byte-order mark before a valid number
    "\uff0b\uff17\uff19\uff10\uff13\uff11\uff12\uff13\uff14\uff15\uff16\uff17",  # full width
    "\u0660\u0661\u0662",  # Arabic-Indic digits
    "\U0001f600",
    "null",
    "' OR 1=1 --",
    "%s%n",
    "../../etc/passwd",
    "-1",
    "99999999999999999999",
    "1e309",
    "NaN",
)
# Timestamps: inside, at and beyond the edges of their range, and bad nanos.
_TIMESTAMP_SECONDS = (
    0,
    -1,
    MIN_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS - 1,
    MAX_TIMESTAMP_SECONDS,
    MAX_TIMESTAMP_SECONDS + 1,
    2**40,
    -(2**40),
    2**63 - 1,
    -(2**63),
    1_700_000_000,  # 2023
    4_102_444_800,  # 2100
)
_NANOS = (0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))


_DIGITS = st.integers(0, 10**22)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [n for n in _INT_EDGES if low <= n <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _huge_strings() -> st.SearchStrategy[str]:
    def build(unit: str, size: int) -> str:
        return unit * max(1, size // len(unit.encode()))

    return st.builds(
        build,
        st.sampled_from(["9", "a", "+7", "\u044f", "\U0001f600", "\x00", "- "]),
        st.integers(1_000, HUGE_BYTES),
    )


def strings(known: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Any UTF-8 string, biased to `known` values and their near misses."""
    text = st.text(max_size=24)  # any code point but lone surrogates (not UTF-8)
    fuzz = st.one_of(
        st.just(""),
        st.sampled_from(_ODD_STRINGS),
        text,
        st.builds(lambda sign, n: f"{sign}{n}", st.sampled_from(["", "+", "-"]), _DIGITS),
        _huge_strings(),
    )
    if not known:
        return fuzz
    values = st.sampled_from(list(known))
    near_misses = st.one_of(
        st.builds(lambda v, extra: v + extra, values, st.sampled_from(_ODD_STRINGS) | text),
        st.builds(lambda v, cut: v[:cut], values, st.integers(0, 12)),
        values.map(str.upper),
    )
    return st.one_of(values, values, near_misses, fuzz)


def timestamps() -> st.SearchStrategy[Timestamp]:
    return st.builds(
        Timestamp,
        seconds=st.one_of(
            st.sampled_from(_TIMESTAMP_SECONDS),
            st.integers(MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS),
            st.integers(-(2**63), 2**63 - 1),
        ),
        nanos=st.one_of(st.sampled_from(_NANOS), st.integers(-(2**31), 2**31 - 1)),
    )


def durations() -> st.SearchStrategy[Duration]:
    return st.builds(
        Duration,
        seconds=_integers(-(2**63), 2**63 - 1),
        nanos=st.one_of(st.sampled_from(_NANOS), st.integers(-(2**31), 2**31 - 1)),
    )


_WELL_KNOWN: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    Timestamp.DESCRIPTOR.full_name: timestamps,
    Duration.DESCRIPTOR.full_name: durations,
}


def _enum_numbers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    assert field.enum_type is not None
    known = [value.number for value in field.enum_type.values]
    unknown = [n for n in (-1, max(known) + 1, 99, 2**31 - 1, -(2**31)) if n not in known]
    return st.one_of(st.sampled_from(known), st.sampled_from(unknown))


def _scalar(
    field: FieldDescriptor, hints: Mapping[str, Sequence[str]], depth: int
) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return message_strategy(field.message_type, hints, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return strings(hints.get(field.name, ()))
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_numbers(field)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    low, high = _INT_RANGES[kind]
    return _integers(low, high)


def message_strategy(
    descriptor: Descriptor, hints: Mapping[str, Sequence[str]], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Messages of this type: any subset of the fields set, each to a fuzzed value."""
    well_known = _WELL_KNOWN.get(descriptor.full_name)
    if well_known is not None:
        return well_known()
    cls = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _scalar(field, hints, depth)
        optional[field.name] = (
            st.lists(value, max_size=MAX_REPEATED) if field.is_repeated else value
        )
    return st.fixed_dictionaries({}, optional=optional).map(_builder(cls))


def _builder(cls: type[Message]) -> Callable[[dict[str, Any]], Message]:
    """cls(**fields), named after the message type (hypothesis prints a failing example as
    `VerifySubscriberRequest({'phone_number': ...})`)."""

    def build(fields: dict[str, Any]) -> Message:
        return cls(**fields)

    build.__name__ = build.__qualname__ = cls.DESCRIPTOR.name
    return build
