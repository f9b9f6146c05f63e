"""Which replica serves which shard of the delivery policy: one lease per shard.

Every replica with IDMESH_POLICY_SHARDS runs a ShardOwnership. Every third of the lease term it
- renews its member lease (`policy-member:<messenger>:<replica>`): the live replicas are the
  holders of unexpired member leases, and a fair share is ceil(shards / live replicas); a
  replica takes nothing in its first round, so that replicas started together see each other
  and take their shares at once, instead of one loading every shard and giving half up;
- renews the leases of the shards it holds (`policy-shard:<messenger>:<n>`), and stops serving
  one it could not renew (taken by another, or not renewed by its expiry: it fences itself);
- gives up, above its share, the highest-numbered shards it holds (stops serving, then releases:
  a replica that joined takes them), and takes, below its share, the lowest-numbered free or
  expired ones, which it loads (PolicyService.add_shards: served only once loaded and caught
  up);
- reads every shard's lease: the owners' addresses, which the replicas forward decisions to.

A lease's holder is `<replica id>@<advertised address>`, so the lease row says where its owner
listens. A replica that dies leaves its leases to expire: within the term (plus a third) the
survivors see fewer members, a larger share, and take the free shards. One lease per shard
keeps a takeover to the shards of the dead replica and a rebalance to the shards moved, each
one row; 64 to 256 rows renewed every few seconds are nothing to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from services.common.availability import log_failure
from services.common.lease import RELEASED_AT, Lease, LeaseTable
from services.common.logging import get_logger
from services.common.timeutil import Clock, SystemClock

log = get_logger("idmesh.gateway.policy.ownership")

# A forwarding replica reads the leases again at most this often when an owner fails it.
REFRESH_MIN_INTERVAL = 0.1


class ShardHost(Protocol):
    """What ownership drives: the policy service's shards (PolicyService)."""

    async def add_shards(self, shards: Sequence[int]) -> None: ...

    def drop_shards(self, shards: Sequence[int]) -> None: ...

    def served_shards(self) -> frozenset[int]: ...


@dataclass(frozen=True, slots=True)
class Owner:
    replica: str
    address: str


def holder_name(replica: str, address: str) -> str:
    return f"{replica}@{address}"


def parse_holder(holder: str) -> Owner:
    replica, _, address = holder.rpartition("@")
    return Owner(replica, address)


def shard_lease_prefix(messenger_id: str) -> str:
    return f"policy-shard:{messenger_id}:"


def member_lease_prefix(messenger_id: str) -> str:
    return f"policy-member:{messenger_id}:"


class ShardOwnership:
    def __init__(
        self,
        store: LeaseTable,
        host: ShardHost,
        *,
        messenger_id: str,
        replica_id: str,
        address: str,
        count: int,
        ttl: float,
        clock: Clock | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.address = address
        self.count = count
        self._store = store
        self._host = host
        self._holder = holder_name(replica_id, address)
        self._shard_prefix = shard_lease_prefix(messenger_id)
        self._member_prefix = member_lease_prefix(messenger_id)
        self._member = self._member_prefix + replica_id
        self._ttl = timedelta(seconds=ttl)
        self._interval = ttl / 3
        self._clock = clock or SystemClock()
        self.held: dict[int, datetime] = {}  # shard -> the expiry this replica last wrote
        self.owners: dict[int, Owner] = {}  # every shard with a live lease, from the last read
        self.members = 0
        self._rounds = 0
        self._to_load: set[int] = set()
        self._loading: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()

    # --- routing -----------------------------------------------------------------------------

    def owner_address(self, shard: int) -> str | None:
        """Where the shard's owner listens, as last read; None when no replica holds it."""
        owner = self.owners.get(shard)
        return None if owner is None else owner.address

    async def refresh(self) -> None:
        """Read the shards' owners again (a forward failed), at most every
        REFRESH_MIN_INTERVAL whoever asks."""
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._refreshed_at < REFRESH_MIN_INTERVAL:
                return
            self._refreshed_at = loop.time()
            with contextlib.suppress(Exception):
                await self._read_owners(self._clock.now())

    async def _read_owners(self, now: datetime) -> dict[str, Lease]:
        shards = await self._store.leases(self._shard_prefix)
        owners: dict[int, Owner] = {}
        for name, lease in shards.items():
            suffix = name[len(self._shard_prefix) :]
            if lease.expires_at > now and suffix.isdigit() and int(suffix) < self.count:
                owners[int(suffix)] = parse_holder(lease.holder)
        self.owners = owners
        return shards

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Hold a fair share of the shards until cancelled; then give them all up."""
        try:
            while True:
                try:
                    await self.tick()
                except Exception as exc:
                    log_failure(log, "policy.ownership_failed", exc)
                await asyncio.sleep(self._interval)
        finally:
            await self._give_up_all()

    async def tick(self) -> None:
        now = self._clock.now()
        until = now + self._ttl
        try:
            async with asyncio.timeout(self._interval):
                await self._store.acquire_lease(self._member, Lease(self._holder, until), now=now)
                lost = []
                for shard in sorted(self.held):
                    lease = Lease(self._holder, until)
                    if await self._store.acquire_lease(self._name(shard), lease, now=now):
                        self.held[shard] = until
                    else:
                        lost.append(shard)
                members = await self._store.leases(self._member_prefix)
                await self._read_owners(now)
        except Exception as exc:
            log.warning("policy.shard_leases_not_renewed", error=repr(exc))
            expired = [s for s, at in self.held.items() if self._clock.now() >= at]
            if expired:
                self._lose(expired, "not renewed before it expired")
            return
        if lost:
            self._lose(lost, "taken by another replica")
        live = [m for m in members.values() if m.expires_at > now]
        self.members = max(1, len(live))
        for name, member in members.items():  # rows of replicas gone long ago, not released
            if member.expires_at != RELEASED_AT and member.expires_at + self._ttl < now:
                with contextlib.suppress(Exception):
                    await self._store.release_lease(name, member.holder)
        share = math.ceil(self.count / self.members)
        self._rounds += 1
        if self._rounds == 1:
            return  # announced: replicas started together see each other before taking shares
        if len(self.held) > share:
            await self._give_up(sorted(self.held)[share:])
        elif len(self.held) < share:
            await self._take(share - len(self.held), now, until)
        missing = set(self.held) - self._host.served_shards() - self._to_load
        if self._loading is None or self._loading.done():
            self._to_load |= missing
            if self._to_load:
                shards = sorted(self._to_load)
                self._to_load.clear()
                self._loading = asyncio.create_task(self._load(shards), name="policy-shard-load")

    async def _take(self, wanted: int, now: datetime, until: datetime) -> None:
        taken: list[int] = []
        for shard in range(self.count):
            if len(taken) >= wanted:
                break
            if shard in self.owners or shard in self.held:
                continue
            if await self._store.acquire_lease(
                self._name(shard), Lease(self._holder, until), now=now
            ):
                self.held[shard] = until
                self.owners[shard] = parse_holder(self._holder)
                taken.append(shard)
        if taken:
            log.info("policy.shards_taken", shards=taken, members=self.members)

    async def _load(self, shards: list[int]) -> None:
        try:
            await self._host.add_shards(shards)
        except Exception:
            log.exception("policy.shard_load_failed", shards=shards)
            return  # the next tick finds them held and not served, and loads them again
        # lost or given up while loading: not served after all
        gone = [s for s in shards if s not in self.held]
        if gone:
            self._host.drop_shards(gone)

    def _lose(self, shards: list[int], why: str) -> None:
        log.warning("policy.shards_lost", shards=shards, why=why)
        for shard in shards:
            self.held.pop(shard, None)
        self._host.drop_shards(shards)

    async def _give_up(self, shards: list[int]) -> None:
        """Stop serving, then release: a forwarded decision finds the shard refused here and
        asks its next owner."""
        for shard in shards:
            self.held.pop(shard, None)
            self.owners.pop(shard, None)
        self._host.drop_shards(shards)
        for shard in shards:
            await self._store.release_lease(self._name(shard), self._holder)
        log.info("policy.shards_given_up", shards=shards, members=self.members)

    async def _give_up_all(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        shards = sorted(self.held)
        self.held.clear()
        self._host.drop_shards(shards)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._interval):
                for shard in shards:
                    await asyncio.shield(self._store.release_lease(self._name(shard), self._holder))
                await asyncio.shield(self._store.release_lease(self._member, self._holder))
        if shards:
            log.info("policy.shards_released", shards=shards)

    def _name(self, shard: int) -> str:
        return f"{self._shard_prefix}{shard}"
