"""Who serves which policy shard: one lease per shard over the gateway's store (each engine).
A lone replica takes every shard; one that joins gets half (the first gives the rest up); a
replica that stops renewing loses its shards to the other once the leases expire; a lease row
names its owner's address. tick() is driven by hand, the clock moved instead of waited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.common.lease import LeaseTable
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.policy.ownership import ShardOwnership, parse_holder
from tests.messenger_gateway.fakes import FakeClock

SHARDS = 8
TTL = 3.0


class FakeHost:
    """Serves what it is given at once."""

    def __init__(self) -> None:
        self.served: set[int] = set()

    async def add_shards(self, shards: Sequence[int]) -> None:
        self.served.update(shards)

    def drop_shards(self, shards: Sequence[int]) -> None:
        self.served.difference_update(shards)

    def served_shards(self) -> frozenset[int]:
        return frozenset(self.served)


def replica(store: LeaseTable, name: str, clock: FakeClock) -> tuple[ShardOwnership, FakeHost]:
    host = FakeHost()
    ownership = ShardOwnership(
        store,
        host,
        messenger_id="alpha",
        replica_id=name,
        address=f"{name}.local:50070",
        count=SHARDS,
        ttl=TTL,
        clock=clock,
    )
    return ownership, host


async def settle(*replicas: ShardOwnership) -> None:
    """Two rounds of ticks, and the loads they started."""
    for _ in range(2):
        for r in replicas:
            await r.tick()
            if r._loading is not None:
                await r._loading


async def test_shards_are_shared_taken_over_and_their_owners_addressed(
    store: GatewayStore,
) -> None:
    clock = FakeClock()
    one, one_host = replica(store, "one", clock)
    await settle(one)
    assert one_host.served == set(range(SHARDS))
    assert {o.replica for o in one.owners.values()} == {"one"}

    two, two_host = replica(store, "two", clock)
    await settle(two, one, two)
    assert len(one_host.served) == len(two_host.served) == SHARDS // 2
    assert one_host.served.isdisjoint(two_host.served)
    for r in (one, two):
        await r.refresh()
    owners = {s: one.owner_address(s) for s in range(SHARDS)}
    assert owners == {s: two.owner_address(s) for s in range(SHARDS)}
    assert {a for s, a in owners.items() if s in two_host.served} == {"two.local:50070"}
    lease = await store.lease_of(f"policy-shard:alpha:{min(two_host.served)}")
    assert lease is not None and parse_holder(lease.holder).address == "two.local:50070"

    # "two" dies (stops renewing): once its leases expire "one" takes its shards back
    clock.advance(TTL + 0.1)
    await settle(one)
    assert one_host.served == set(range(SHARDS))


async def test_a_replica_that_stops_gives_its_shards_up_at_once(store: GatewayStore) -> None:
    clock = FakeClock()
    one, one_host = replica(store, "one", clock)
    two, two_host = replica(store, "two", clock)
    await settle(one, two, one, two)
    assert len(two_host.served) == SHARDS // 2
    running = asyncio.create_task(two.run())
    await asyncio.sleep(0)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert not two_host.served
    await settle(one)  # no wait for an expiry: the leases were released
    assert one_host.served == set(range(SHARDS))
