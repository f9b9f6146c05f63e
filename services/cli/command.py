"""The shape every command shares: the options common to all, and the unary command written
once (connect, call, print the reply as text or --json; a refusal is mapped in main).

A command group is a module with `register(sub, common)` that adds its commands to the
top-level subparsers; services/cli/main.py lists the groups."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.connection import Target, connect
from services.cli.output import print_message
from services.common.status import honouring_overload
from services.common.timeutil import parse_time

Handler = Callable[[argparse.Namespace], Awaitable[int]]
"""A command: an async function of the parsed arguments, returning the exit status (a plain
function for the few that must own the main thread, such as `idmesh up`)."""
Subparsers = Any  # argparse's _SubParsersAction, private in typeshed


class Group(Protocol):
    """A module of commands."""

    def register(self, sub: Subparsers, common: argparse.ArgumentParser) -> None: ...


def common_options() -> argparse.ArgumentParser:
    """The options every command against a service takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--data-dir", help="the mesh's data folder (env IDMESH_DATA_DIR, default ./data)"
    )
    common.add_argument("--address", help="host:port of the service, instead of the mesh's")
    common.add_argument(
        "--ca", help="CA certificate (env IDMESH_TLS_CA; default: the running mesh's CA)"
    )
    common.add_argument("--cert", help="client certificate (env IDMESH_TLS_CERT)")
    common.add_argument("--key", help="client key (env IDMESH_TLS_KEY)")
    common.add_argument(
        "--insecure", action="store_true", help="plaintext, for a mesh in development mode"
    )
    return common


CALL_TIMEOUT = 30.0
"""Seconds a unary call may take unless its command says otherwise: no command waits for ever
on a service that does not answer (DEADLINE_EXCEEDED, said as such)."""


def unary(
    target: Target,
    method: str,
    request: Callable[[argparse.Namespace], Message],
    *,
    timeout: Callable[[argparse.Namespace], float | None] = lambda _: CALL_TIMEOUT,
    exit_code: Callable[[Any], int] = lambda _: 0,
    note: Callable[[Any], str | None] = lambda _: None,
) -> Handler:
    """A command that sends one request to target's method and prints the reply; note(reply),
    when there is one, goes to stderr (what the call did besides answering)."""

    async def handler(args: argparse.Namespace) -> int:
        message = request(args)
        async with connect(args, target) as stub:
            reply = await honouring_overload(
                lambda: getattr(stub, method)(message, timeout=timeout(args)),
                on_wait=_say_busy,
            )
        print_message(args, reply)
        if (text := note(reply)) is not None:
            print(f"note: {text}", file=sys.stderr, flush=True)
        return exit_code(reply)

    handler.rpc_method = method  # type: ignore[attr-defined]  # read by commands_by_method
    return handler


def commands_by_method(parser: argparse.ArgumentParser) -> dict[str, str]:
    """API method name -> the CLI command that calls it (`StartIdentification` ->
    `idmesh identify start`), for every unary command under parser: refusals are told in the
    CLI's words. A method two commands call keeps the first."""
    found: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps its subcommands there
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                method = getattr(child.get_default("func"), "rpc_method", None)
                if method is not None:
                    found.setdefault(method, child.prog)
                for name, command in commands_by_method(child).items():
                    found.setdefault(name, command)
    return found


def _say_busy(delay: float) -> None:
    print(
        f"note: the service is busy (OVERLOADED): trying again in {delay * 1000:.0f} ms",
        file=sys.stderr,
        flush=True,
    )


def messenger_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")


def operator_option(p: argparse.ArgumentParser, help: str = "operator id, e.g. beeline") -> None:
    p.add_argument("--operator", "-o", required=True, help=help)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from low to high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        return value

    return parse


UINT64_MAX = 2**64 - 1


def time_arg(text: str) -> Timestamp:
    """An argparse type: an RFC 3339 time with a UTC offset, or YYYY-MM-DD (midnight UTC)."""
    try:
        value = parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
