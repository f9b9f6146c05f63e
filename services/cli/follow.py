"""A stream followed on the terminal, written once for `notifier watch` and `policy watch`:
it says on stderr when it waits for what does not exist yet, stops after --limit entries or
--timeout seconds without one, and with --json prints one JSON array when it stops (Ctrl-C
included), so that the output is always one document."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.cli.output import print_human

Entries = Callable[[Any], list[dict[str, Any]]]
"""The entries one stream message shows (none for a message not shown)."""


def seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def add_options(p: argparse.ArgumentParser, *, counted: str, limit_type: Any) -> None:
    """--limit, --timeout and --progress, with the words of the stream's entries."""
    p.add_argument(
        "--limit",
        type=limit_type,
        default=0,
        help=f"stop after this many {counted} (default 0: no limit)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        help="stop after this many seconds without a new one (exit 1 if --limit was not reached)",
    )
    p.add_argument("--progress", action="store_true", help="also print progress marks")


def say_waiting(
    args: argparse.Namespace, *, existing: int, what: str, position: str, head: str
) -> None:
    """Tell the person (stderr) when fewer entries exist than they asked for: it will wait."""
    if args.limit and existing >= args.limit:
        return
    bound = (
        f"for at most {args.timeout:g}s without one" if args.timeout is not None else "until Ctrl-C"
    )
    print(
        f"note: {existing} {what} after {position} so far ({head}); waiting for new ones {bound}",
        file=sys.stderr,
        flush=True,
    )


async def follow(
    args: argparse.Namespace,
    items: AsyncIterator[Any],
    entries: Entries,
    *,
    counts: Callable[[dict[str, Any]], bool] = lambda _: True,
    first: list[Any] | None = None,
    noun: str = "items",
) -> int:
    """Print the entries of items (first: messages already read) until --limit counted
    entries, the stream's end, or --timeout seconds without a message shown. Exit status: 1
    when --timeout stopped it short of --limit, else 0."""
    shown: list[dict[str, Any]] = []
    counted = 0
    timed_out = False
    pending = list(first or ())

    def show(message: Any) -> bool:
        """Show a message's entries; True once the limit is reached."""
        nonlocal counted
        for entry in entries(message):
            shown.append(entry)
            if not args.json:
                print_human(entry)
                print("---", flush=True)
            if counts(entry):
                counted += 1
                if args.limit and counted >= args.limit:
                    return True
        return False

    try:
        last = time.monotonic()
        done = False
        while not done:
            if pending:
                message = pending.pop(0)
            else:
                left = None if args.timeout is None else args.timeout - (time.monotonic() - last)
                try:
                    async with asyncio.timeout(left):
                        message = await anext(items)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    timed_out = True
                    break
            if entries(message):
                last = time.monotonic()
            done = show(message)
    except asyncio.CancelledError:  # Ctrl-C: what was shown is still one complete document
        if args.json:
            print(json.dumps(shown, ensure_ascii=False), flush=True)
        raise
    if args.json:
        print(json.dumps(shown, ensure_ascii=False), flush=True)
    if timed_out:
        wanted = f" of {args.limit}" if args.limit else ""
        print(
            f"note: nothing new for {args.timeout:g}s: stopped after {counted}{wanted} {noun}",
            file=sys.stderr,
        )
        return 1 if args.limit else 0
    return 0
