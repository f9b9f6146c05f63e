"""The notifier, as a messenger: `idmesh notifier ...` (status: delivery against the 24-hour
limit; watch: the messenger's events, read-only)."""

from __future__ import annotations

import argparse

from idmesh.notifier.v1 import notifier_pb2

from services.cli.command import Subparsers, messenger_option, unary
from services.cli.connection import NOTIFIER, connect
from services.cli.output import print_message


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print the messenger's events as they come (read-only: it does not ack)."""
    async with connect(args, NOTIFIER) as stub:
        call = stub.Subscribe(
            notifier_pb2.SubscribeRequest(messenger_id=args.messenger, after_seq=args.after)
        )
        count = 0
        async for item in call:
            if item.HasField("progress") and not args.progress:
                continue
            print_message(args, item)
            if not args.json:
                print("---", flush=True)
            count += 1
            if args.limit and count >= args.limit:
                call.cancel()
                break
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    notif = sub.add_parser("notifier", help="a messenger's notices").add_subparsers(
        dest="action", required=True
    )
    p = notif.add_parser("status", parents=[common], help="delivery status (24-hour limit)")
    messenger_option(p)
    p.set_defaults(
        func=unary(
            NOTIFIER,
            "GetDeliveryStatus",
            lambda a: notifier_pb2.GetDeliveryStatusRequest(messenger_id=a.messenger),
        )
    )
    p = notif.add_parser("watch", parents=[common], help="print the messenger's events")
    messenger_option(p)
    p.add_argument("--after", type=int, default=0, help="cursor: show events after this seq")
    p.add_argument("--limit", type=int, default=0, help="stop after this many items")
    p.add_argument("--progress", action="store_true", help="also print progress marks")
    p.set_defaults(func=cmd_watch)
