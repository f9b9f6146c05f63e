"""The notifier, as a messenger: `idmesh notifier ...` (status: delivery against the 24-hour
limit; watch: the messenger's events, read-only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from idmesh.notifier.v1 import notifier_pb2

from services.cli.command import UINT64_MAX, Subparsers, bounded_int, messenger_option, unary
from services.cli.connection import NOTIFIER, connect
from services.cli.output import as_dict, print_human


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print the messenger's events after --after as they come (read-only: it does not ack).
    Stops after --limit items, or after --timeout seconds without one; says on stderr when it
    waits for events that do not exist yet. --json prints one JSON array when it stops."""
    shown: list[dict[str, Any]] = []
    timed_out = False
    try:
        async with connect(args, NOTIFIER) as stub:
            status = await stub.GetDeliveryStatus(
                notifier_pb2.GetDeliveryStatusRequest(messenger_id=args.messenger)
            )
            _say_if_waiting(args, status)
            call = stub.Subscribe(
                notifier_pb2.SubscribeRequest(
                    messenger_id=args.messenger, after_seq=args.after, max_batch_size=1000
                )
            )
            items = aiter(call)
            last = time.monotonic()
            while not (args.limit and len(shown) >= args.limit):
                left = None if args.timeout is None else args.timeout - (time.monotonic() - last)
                try:
                    async with asyncio.timeout(left):
                        item = await anext(items)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    timed_out = True
                    break
                if item.HasField("progress") and not args.progress:
                    continue
                last = time.monotonic()
                for entry in _entries(item)[: args.limit - len(shown) if args.limit else None]:
                    shown.append(entry)
                    if not args.json:
                        print_human(entry)
                        print("---", flush=True)
            call.cancel()
    except asyncio.CancelledError:  # Ctrl-C: what was shown is still one complete document
        if args.json:
            print(json.dumps(shown, ensure_ascii=False), flush=True)
        raise
    if args.json:
        print(json.dumps(shown, ensure_ascii=False), flush=True)
    if timed_out:
        wanted = f" of {args.limit}" if args.limit else ""
        print(
            f"note: nothing new for {args.timeout:g}s: stopped after {len(shown)}{wanted} items",
            file=sys.stderr,
        )
        return 1 if args.limit else 0
    return 0


def _entries(item: notifier_pb2.SubscribeResponse) -> list[dict[str, Any]]:
    """One shown item per notice (a batch carries several, `notice` one) or progress mark."""
    if item.HasField("progress"):
        return [{"progress": as_dict(item.progress)}]
    notices = [item.notice] if item.HasField("notice") else item.notices
    return [{"notice": as_dict(notice)} for notice in notices]


def _say_if_waiting(args: argparse.Namespace, status: Any) -> None:
    """Tell the person (stderr) when fewer events exist than they asked for."""
    first = max(args.after, status.floor_seq - 1)
    existing = max(0, status.head_seq - first)
    if args.limit and existing >= args.limit:
        return
    bound = (
        f"for at most {args.timeout:g}s without one" if args.timeout is not None else "until Ctrl-C"
    )
    print(
        f"note: {existing} event(s) after seq {args.after} so far (head_seq {status.head_seq}); "
        f"waiting for new ones {bound}",
        file=sys.stderr,
        flush=True,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


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
    p.add_argument(
        "--limit",
        type=bounded_int(0, UINT64_MAX),
        default=0,
        help="stop after this many items: notices and progress marks (default 0: no limit)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        help="stop after this many seconds without a new item (exit 1 if --limit was not reached)",
    )
    p.add_argument("--progress", action="store_true", help="also print progress marks")
    p.set_defaults(func=cmd_watch)
