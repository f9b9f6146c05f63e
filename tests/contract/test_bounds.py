"""Every string and repeated field of every request has a documented maximum size, and the size
table the servers check (services/common/bounds.py) says the same."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.bounds import DEFAULT_MAX_CHARS, MAX_CHARS, MAX_ITEMS, check_bounds, max_size
from services.common.errors import InvalidInput
from tests.contract.protos import field_comment, request_messages, sized_fields


def test_every_sized_request_field_documents_the_maximum_the_servers_check() -> None:
    checked = 0
    for message in request_messages():
        for field in sized_fields(message):
            limit = max_size(message, field)
            unit = f"{field.name} per message" if field.is_repeated else "characters"
            comment = field_comment(message, field)
            assert f"At most {limit:,} {unit}." in comment, (
                f"{message.full_name}.{field.name}: the comment should say 'At most {limit:,} "
                f"{unit}.' (services/common/bounds.py)"
            )
            checked += 1
    assert checked > 40


def test_no_request_field_falls_back_to_the_default_maximum() -> None:
    names = set(MAX_CHARS) | set(MAX_ITEMS)
    for message in request_messages():
        for field in sized_fields(message):
            assert field.name in names or f"{message.name}.{field.name}" in names, (
                f"{message.full_name}.{field.name} has no entry in services/common/bounds.py "
                f"(it gets {DEFAULT_MAX_CHARS})"
            )
            if field.is_repeated and field.type == FieldDescriptor.TYPE_STRING:
                # a repeated string has a bound per item as well as a count, both documented
                item = max_size(message, field, item=True)
                assert field.name in MAX_CHARS or f"{message.name}.{field.name}" in MAX_CHARS
                comment = field_comment(message, field)
                assert f"Each at most {item:,} characters." in comment, (
                    f"{message.full_name}.{field.name}: the comment should say 'Each at most "
                    f"{item:,} characters.'"
                )


def test_a_value_over_its_bound_names_the_field_and_the_maximum() -> None:
    request = gateway_pb2.StartIdentificationRequest(user_id="u", phone_number="9" * 33)
    with pytest.raises(InvalidInput) as e:
        check_bounds(request)
    assert (e.value.reason, e.value.field, e.value.metadata["max"]) == (
        "FIELD_TOO_LONG",
        "phone_number",
        "32",
    )


def test_each_item_of_a_repeated_string_is_bounded_with_its_path() -> None:
    request = registry_pb2.RetryParkedNoticesRequest(event_ids=["e-1", "e" * 65])
    with pytest.raises(InvalidInput) as e:
        check_bounds(request)
    assert (e.value.reason, e.value.field, e.value.metadata["max"]) == (
        "FIELD_TOO_LONG",
        "event_ids[1]",
        "64",
    )


def test_nested_rows_are_checked_with_their_path() -> None:
    request = registry_pb2.ImportSubscribersRequest(
        rows=[registry_pb2.SubscriberRow(line=2), registry_pb2.SubscriberRow(contract_id="c" * 257)]
    )
    with pytest.raises(InvalidInput) as e:
        check_bounds(request)
    assert e.value.field == "rows[1].contract_id"
    check_bounds(gateway_pb2.StartIdentificationRequest(user_id="u" * 128))  # at the bound: fine
