"""Waiting for a condition, with a bound, never a sleep as synchronisation (the local mesh's
clients, the project's tests, and any project that tests against a local mesh).

    await eventually(lambda: consumer.applied == 3, what="3 notices applied")
    state = await eventually(fetch_state_if_done, within=20, what="the verification to end")
    eventually_sync(lambda: not process_alive(pid), within=15, what="the service to exit")

check is called until it returns something truthy (async checks are awaited), which is
returned; after `within` seconds an AssertionError names `what` and the last value seen.
Bounds are generous on purpose: a 2-core CI machine under load must not flake them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

DEFAULT_WITHIN = 10.0


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = DEFAULT_WITHIN,
    what: str = "the condition",
    interval: float = 0.02,
) -> Any:
    """Wait until check() (sync or async) is truthy, at most `within` seconds; its value."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {within:g}s waiting for {what} (last: {value!r})"
            )
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], Any],
    *,
    within: float = DEFAULT_WITHIN,
    what: str = "the condition",
    interval: float = 0.05,
) -> Any:
    """eventually() for tests without an event loop (processes, files)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {within:g}s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval)
