"""A messenger's users: `idmesh identify ...` (start, confirm, show, change-number,
reassigned), `idmesh access` (may this user send?) and `idmesh sms` (the development SMS
outbox), all through the messenger's gateway as its front end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idmesh.gateway.v1 import gateway_pb2

from services.cli.command import Subparsers, messenger_option, unary
from services.cli.connection import GATEWAY, CliError, layout
from services.localmesh import sms


def sms_outbox(args: argparse.Namespace) -> Path:
    """--sms-outbox, else the development SMS outbox of the messenger's gateway in the mesh."""
    if args.sms_outbox:
        return Path(args.sms_outbox)
    for info in layout(args).values():
        if info["kind"] == "messenger_gateway" and info.get("messenger_id") == args.messenger:
            return Path(info["sms_outbox"])
    raise CliError(f"the mesh has no gateway for messenger {args.messenger}")


def _confirm_request(args: argparse.Namespace) -> gateway_pb2.ConfirmPossessionRequest:
    code = args.code
    if code is None:
        outbox = sms_outbox(args)
        code = sms.latest_code(outbox, identification_id=args.identification_id)
        if code is None:
            raise CliError(
                f"no one-time code for {args.identification_id} in {outbox}; pass --code"
            )
    return gateway_pb2.ConfirmPossessionRequest(identification_id=args.identification_id, code=code)


async def cmd_sms(args: argparse.Namespace) -> int:
    messages = sms.read_outbox(sms_outbox(args))
    if args.phone:
        messages = [m for m in messages if m.get("phone_number") == args.phone]
    messages = messages[-args.last :]
    if args.json:
        print(json.dumps(messages, ensure_ascii=False))
    else:
        for m in messages:
            print(
                f"{m['sent_at']}  to {m['phone_number']}  id {m['identification_id']}: {m['text']}"
            )
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    ident = sub.add_parser("identify", help="identify a messenger user").add_subparsers(
        dest="action", required=True
    )
    p = ident.add_parser("start", parents=[common], help="send a one-time code to the number")
    messenger_option(p)
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY,
            "StartIdentification",
            lambda a: gateway_pb2.StartIdentificationRequest(user_id=a.user, phone_number=a.phone),
        )
    )

    p = ident.add_parser(
        "confirm", parents=[common], help="confirm the one-time code, then the operator is asked"
    )
    messenger_option(p)
    p.add_argument("identification_id")
    p.add_argument("--code", help="the one-time code (default: read from the dev SMS outbox)")
    p.add_argument("--sms-outbox", help="the dev SMS outbox file (default: from the mesh)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the outcome")
    p.set_defaults(
        func=unary(GATEWAY, "ConfirmPossession", _confirm_request, timeout=lambda a: a.wait)
    )

    p = ident.add_parser("show", parents=[common], help="the user's current identification")
    messenger_option(p)
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY,
            "GetIdentification",
            lambda a: gateway_pb2.GetIdentificationRequest(user_id=a.user),
        )
    )

    p = ident.add_parser("change-number", parents=[common], help="the user changed number")
    messenger_option(p)
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY,
            "ChangePhoneNumber",
            lambda a: gateway_pb2.ChangePhoneNumberRequest(user_id=a.user, phone_number=a.phone),
        )
    )

    p = ident.add_parser(
        "reassigned",
        parents=[common],
        help="has the user's number changed hands since the identification?",
    )
    messenger_option(p)
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY,
            "CheckNumberReassigned",
            lambda a: gateway_pb2.CheckNumberReassignedRequest(user_id=a.user),
            timeout=lambda _: 30.0,
        )
    )

    p = sub.add_parser("access", parents=[common], help="may this user send messages?")
    messenger_option(p)
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY,
            "CheckAccess",
            lambda a: gateway_pb2.CheckAccessRequest(user_id=a.user),
            exit_code=lambda reply: 0 if reply.allowed else 3,
        )
    )

    p = sub.add_parser("sms", parents=[common], help="read the development SMS outbox")
    messenger_option(p)
    p.add_argument("--phone", "-p")
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--sms-outbox")
    p.set_defaults(func=cmd_sms)
