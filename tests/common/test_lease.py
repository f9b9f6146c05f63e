"""LeaseKeeper against a store whose answers the test controls: the cancellation races."""

from __future__ import annotations

import asyncio
from datetime import datetime

from services.common.lease import Fence, Lease, LeaseKeeper
from tests.eventually import eventually


class GatedStore:
    """A lease store whose acquire_lease answers only when the test opens the gate."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.gate: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.released: list[str] = []

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        self.asked.set()
        return await self.gate

    async def release_lease(self, name: str, holder: str) -> None:
        self.released.append(holder)

    async def lease_of(self, name: str) -> Lease | None:
        return None


async def test_a_shutdown_that_arrives_as_the_lease_is_granted_still_stops_the_keeper() -> None:
    # The flake this pins: a gateway's teardown cancelled the keeper in the very step in which
    # the store granted the lease; asyncio.wait_for (3.11) returned the grant and dropped the
    # cancellation, so the keeper started the consumer after shutdown and ran on for ever.
    store = GatedStore()
    started: list[bool] = []

    async def work(fence: Fence) -> None:
        started.append(True)
        await asyncio.Event().wait()

    keeper = LeaseKeeper(store, "notices:alpha", holder="a", work=work, ttl=3.0)
    task = asyncio.create_task(keeper.run())
    await asyncio.wait_for(store.asked.wait(), 5)
    store.gate.set_result(1)  # the grant and the shutdown in the same turn of the loop
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task}, "the keeper ran on after it was cancelled"
    assert task.cancelled()
    assert not keeper.active
    assert started == []
    # the grant may have been written: the shutdown gives it back, so a standby need not wait
    assert store.released == ["a"]


class TakenStore(GatedStore):
    """Grants the lease once, then answers that another replica holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.grants = 1

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        self.asked.set()
        granted = self.grants > 0
        self.grants -= 1
        return 1 if granted else None


async def test_a_lost_lease_reads_inactive_only_once_the_work_has_stopped() -> None:
    """A replica reports it no longer holds the lease only when its work (cleanup included)
    has stopped, so that whoever reads `active` never sees two holders acting at once."""
    store = TakenStore()
    cleaning = asyncio.Event()
    cleaned = asyncio.Event()

    async def work(fence: Fence) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await asyncio.sleep(0.05)  # cleanup that takes a few turns of the loop
            cleaned.set()

    keeper = LeaseKeeper(store, "notices:alpha", holder="a", work=work, ttl=0.3)
    task = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: keeper.active, what="the lease held")
        await asyncio.wait_for(cleaning.wait(), 10)  # taken away: the work is being cancelled
        await eventually(lambda: not keeper.active, what="the keeper to stand by")
        assert cleaned.is_set(), "active went False while the work was still cleaning up"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class RetakenStore(GatedStore):
    """Grants the lease under the tokens given, one per renewal (the last one for ever)."""

    def __init__(self, tokens: list[int]) -> None:
        super().__init__()
        self.tokens = tokens

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        self.asked.set()
        return self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]


async def test_the_work_runs_with_the_lease_fence_and_again_under_a_new_token() -> None:
    """A renewal keeps the token and the work goes on; a lease taken again under a new token
    (it had expired meanwhile) stops the work, whose writes would be refused, and starts it
    again with the new fence."""
    store = RetakenStore([1, 1, 2])
    fences: list[Fence] = []
    running: list[Fence] = []

    async def work(fence: Fence) -> None:
        fences.append(fence)
        running.append(fence)
        try:
            await asyncio.Event().wait()
        finally:
            running.remove(fence)

    keeper = LeaseKeeper(store, "notices:alpha", holder="a", work=work, ttl=0.3)
    task = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: len(fences) == 2, what="the work started again")
        assert fences == [Fence("notices:alpha", "a", 1), Fence("notices:alpha", "a", 2)]
        assert running == [Fence("notices:alpha", "a", 2)]
        assert keeper.fence == Fence("notices:alpha", "a", 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert keeper.fence is None
