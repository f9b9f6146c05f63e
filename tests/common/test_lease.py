"""LeaseKeeper against a store whose answers the test controls: the cancellation races."""

from __future__ import annotations

import asyncio
from datetime import datetime

from services.common.lease import Lease, LeaseKeeper


class GatedStore:
    """A lease store whose acquire_lease answers only when the test opens the gate."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.released: list[str] = []

    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> bool:
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

    async def work() -> None:
        started.append(True)
        await asyncio.Event().wait()

    keeper = LeaseKeeper(store, "notices:alpha", holder="a", work=work, ttl=3.0)
    task = asyncio.create_task(keeper.run())
    await asyncio.wait_for(store.asked.wait(), 5)
    store.gate.set_result(True)  # the grant and the shutdown in the same turn of the loop
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task}, "the keeper ran on after it was cancelled"
    assert task.cancelled()
    assert not keeper.active
    assert started == []
    # the grant may have been written: the shutdown gives it back, so a standby need not wait
    assert store.released == ["a"]
