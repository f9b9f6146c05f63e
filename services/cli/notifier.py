"""The notifier, as a messenger: `idmesh notifier ...` (status: delivery against the 24-hour
limit; watch: the messenger's events, read-only)."""

from __future__ import annotations

import argparse
from typing import Any

from idmesh.notifier.v1 import notifier_pb2

from services.cli import follow
from services.cli.command import (
    CALL_TIMEOUT,
    UINT64_MAX,
    Subparsers,
    bounded_int,
    messenger_option,
    unary,
)
from services.cli.connection import NOTIFIER, connect
from services.cli.output import as_dict


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print the messenger's events after --after as they come (read-only: it does not ack).
    Stops after --limit items, or after --timeout seconds without one; says on stderr when it
    waits for events that do not exist yet. --json prints one JSON array when it stops."""
    async with connect(args, NOTIFIER) as stub:
        status = await stub.GetDeliveryStatus(
            notifier_pb2.GetDeliveryStatusRequest(messenger_id=args.messenger),
            timeout=CALL_TIMEOUT,
        )
        first = max(args.after, status.floor_seq - 1)
        follow.say_waiting(
            args,
            existing=max(0, status.head_seq - first),
            what="event(s)",
            position=f"seq {args.after}",
            head=f"head_seq {status.head_seq}",
        )
        call = stub.Subscribe(
            notifier_pb2.SubscribeRequest(
                messenger_id=args.messenger, after_seq=args.after, max_batch_size=1000
            )
        )
        try:
            return await follow.follow(args, aiter(call), lambda item: _entries(args, item))
        finally:
            call.cancel()


def _entries(
    args: argparse.Namespace, item: notifier_pb2.SubscribeResponse
) -> list[dict[str, Any]]:
    """One shown item per notice (a batch carries several, `notice` one) or progress mark."""
    if item.HasField("progress"):
        return [{"progress": as_dict(item.progress)}] if args.progress else []
    notices = [item.notice] if item.HasField("notice") else item.notices
    return [{"notice": as_dict(notice)} for notice in notices]


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    notif = sub.add_parser("notifier", help="a messenger's notices").add_subparsers(
        dest="action", required=True
    )
    p = notif.add_parser(
        "status",
        parents=[common],
        help="delivery status: acknowledged, waiting, against the delivery_limit (24 hours)",
    )
    messenger_option(p)
    p.set_defaults(
        func=unary(
            NOTIFIER,
            "GetDeliveryStatus",
            lambda a: notifier_pb2.GetDeliveryStatusRequest(messenger_id=a.messenger),
        )
    )
    p = notif.add_parser(
        "watch",
        parents=[common],
        help="print the messenger's events (waits for new ones: --limit, --timeout bound it)",
    )
    messenger_option(p)
    p.add_argument(
        "--after",
        type=bounded_int(0, UINT64_MAX),
        default=0,
        help="cursor: show events after this seq (default 0: from the oldest kept)",
    )
    follow.add_options(
        p, counted="items: notices (and progress marks)", limit_type=bounded_int(0, UINT64_MAX)
    )
    p.set_defaults(func=cmd_watch)
