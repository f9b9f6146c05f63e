"""The protos' source read for its comments (descriptors do not carry them): each message's
fields and each service's RPCs with the comment block above them, and every request message
(and the messages inside it) of the three idmesh APIs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from idmesh.gateway.v1 import gateway_pb2, peer_pb2
from idmesh.notifier.v1 import notifier_pb2
from idmesh.registry.v1 import registry_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
API_FILES = (gateway_pb2.DESCRIPTOR, notifier_pb2.DESCRIPTOR, registry_pb2.DESCRIPTOR)
# Spoken between the replicas of one service: bounded and documented as the APIs are.
PEER_FILES = (peer_pb2.DESCRIPTOR,)

_BLOCK = re.compile(r"^(message|service|enum) (\w+) \{")
_FIELD = re.compile(r"^\s+(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*\d+;")
_RPC = re.compile(r"^\s+rpc (\w+)\(")


@dataclass(frozen=True)
class Comments:
    blocks: dict[str, str]  # "package.Message" or "package.Service" -> its comment
    members: dict[str, str]  # "package.Message.field" or "package.Service.Rpc" -> its comment


@cache
def comments() -> Comments:
    blocks: dict[str, str] = {}
    members: dict[str, str] = {}
    for path in PROTOS.rglob("*.proto"):
        package = ""
        current = ""
        pending: list[str] = []
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("package "):
                package = stripped.removeprefix("package ").rstrip(";")
            if stripped.startswith("//"):
                pending.append(stripped.removeprefix("//").strip())
                continue
            block = _BLOCK.match(line)
            member = _FIELD.match(line) or _RPC.match(line)
            if block:
                current = f"{package}.{block.group(2)}"
                blocks[current] = " ".join(pending)
            elif member and current:
                members[f"{current}.{member.group(1)}"] = " ".join(pending)
            pending = []
    return Comments(blocks, members)


def services() -> Iterator[ServiceDescriptor]:
    for file in API_FILES:
        yield from file.services_by_name.values()


def request_messages() -> list[Descriptor]:
    """Every message a request of the three APIs (and of the replicas' peer services) carries,
    the request messages included."""
    seen: dict[str, Descriptor] = {}

    def visit(message: Descriptor) -> None:
        if message.full_name in seen or message.full_name.startswith("google.protobuf."):
            return
        seen[message.full_name] = message
        for field in message.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
                visit(field.message_type)

    for service in [*services(), *(s for f in PEER_FILES for s in f.services_by_name.values())]:
        for method in service.methods:
            visit(method.input_type)
    return list(seen.values())


def sized_fields(message: Descriptor) -> list[FieldDescriptor]:
    """The fields of message that have a size: strings and repeated fields."""
    return [f for f in message.fields if f.type == FieldDescriptor.TYPE_STRING or f.is_repeated]


def field_comment(message: Descriptor, field: Any) -> str:
    return comments().members[f"{message.full_name}.{field.name}"]
