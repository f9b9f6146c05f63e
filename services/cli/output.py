"""What the CLI prints: a reply as indented `key: value` lines or, with --json, as one JSON
document on stdout; a refused call as one `error: ...` line on stderr.

Every field is printed, zero values included (a count of 0, `allowed: False`, an enum's
UNSPECIFIED value), so that a reader never has to guess whether a missing key means zero."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.common.status import error_details


def as_dict(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data: proto field names, every field with its default."""
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def emit(args: argparse.Namespace, data: Any) -> None:
    """Print data: one JSON document with --json, else indented `key: value` lines."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False), flush=True)
    else:
        print_human(data)


def print_message(args: argparse.Namespace, message: Message) -> None:
    emit(args, as_dict(message))


def print_human(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                print(f"{pad}{key}:")
                print_human(value, indent + 1)
            else:
                print(f"{pad}{key}: {_scalar(value)}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                print(f"{pad}-")
                print_human(item, indent + 1)
            else:
                print(f"{pad}- {item}")
    else:
        print(f"{pad}{data}")


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"  # an empty message or list
    return str(value)


def in_cli_words(text: str, commands: Mapping[str, str]) -> str:
    """text with every API method it names (a service's message speaks to API clients) replaced
    by the CLI command that calls it, quoted: "start one with StartIdentification" becomes
    "start one with `idmesh identify start`"."""
    if not commands:
        return text
    names = re.compile(r"\b(" + "|".join(map(re.escape, commands)) + r")\b")
    return names.sub(lambda m: f"`{commands[m.group(1)]}`", text)


def rpc_error_line(exc: grpc.aio.AioRpcError, commands: Mapping[str, str] | None = None) -> str:
    """The one line a refused call prints (after `error: `): CODE (REASON): message, the
    message in the CLI's words (commands: API method -> CLI command)."""
    hint = ""
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        # A mutual-TLS refusal happens in the handshake, before any status message: the
        # server's log says which (no certificate, unknown CA, expired).
        hint = (
            " (the service is down, or refused the connection in the TLS handshake: "
            "check --insecure against a TLS mesh, or the certificate's CA and validity)"
        )
    elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        hint = " (the service did not answer in time)"
    reason = error_details(exc).reason  # the stable reason of the refusal's ErrorInfo
    code = f"{exc.code().name} ({reason})" if reason else exc.code().name
    return f"{code}: {in_cli_words(exc.details() or '', commands or {})}{hint}"
