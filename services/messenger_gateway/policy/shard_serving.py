"""PolicyService's shards (with PolicySettings.shards): adding and dropping the shards this
replica serves, waiting for one being loaded, and the sides of decisions its shards hold.

A shard is served only once its index is loaded from a snapshot taken after this replica took
the shard's lease and caught up to the version of the shards already served (the tail is held
off meanwhile), so no decision is read from a shard half loaded or behind the others.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common.failpoints import async_failpoint
from services.common.logging import get_logger
from services.messenger_gateway.policy.model import ChangesPruned, Decision, MessageKind
from services.messenger_gateway.policy.ports import PolicyStore
from services.messenger_gateway.policy.shards import (
    LoadedShard,
    ShardedIndex,
    ShardNotServed,
    apply_to,
    recipient_part,
    sender_part,
)

log = get_logger("idmesh.gateway.policy")

GAP_PAGE = 5_000


class ShardServing:
    """The shard half of PolicyService (a mixin: it uses the service's store, lock and tail)."""

    sharded: ShardedIndex | None
    _store: PolicyStore
    _lock: asyncio.Lock
    _loading: set[int]  # shards owned here, their index not yet served
    _installed: asyncio.Event  # replaced each time shards are installed

    async def _catch_up(self) -> None:
        raise NotImplementedError

    async def add_shards(self, shards: Sequence[int]) -> None:
        """Serve these shards (their leases are this replica's): load their index from one
        snapshot, catch it up to the version of the served shards, and only then serve it.
        Until then a decision that needs one of them waits (wait_served)."""
        sharded = self.sharded
        if sharded is None:
            raise RuntimeError("add_shards needs settings.shards")
        wanted = [s for s in shards if not sharded.serves(s)]
        if not wanted:
            return
        self._loading.update(wanted)
        began = time.monotonic()
        try:
            loaded = await self._store.read_snapshot(lambda snap: sharded.load(snap, wanted))
            await async_failpoint("gateway.policy.shard_load")
            async with self._lock:
                await self._catch_up()  # the served shards to at least the snapshot's version
                version = await self._gap(loaded, sharded.version)
                sharded.install(loaded, version)
            # the shards' dictionaries hold millions of entries for as long as they are served:
            # keep the collector's full passes from walking them (as main.py does at start)
            gc.freeze()
        finally:
            self._loading.difference_update(wanted)
            installed, self._installed = self._installed, asyncio.Event()
            installed.set()
        log.info(
            "policy.shards_served",
            shards=sorted(loaded),
            version=sharded.version,
            users=sum(s.load.users for s in loaded.values()),
            entries=sum(s.load.entries for s in loaded.values()),
            seconds=round(time.monotonic() - began, 3),
        )

    async def _gap(self, loaded: dict[int, LoadedShard], target: int) -> int:
        """Apply to the new shards the log between their snapshot and target (the version of
        the served ones, which the tail has reached under the lock); target when done."""
        sharded = self.sharded
        assert sharded is not None
        indexes = {shard: part.index for shard, part in loaded.items()}
        version = min(part.load.version for part in loaded.values())
        while version < target:
            changes = await self._store.changes_after(version, GAP_PAGE)
            if not changes or changes[0].version != version + 1:
                raise ChangesPruned(
                    f"the policy change log no longer holds version {version + 1}: the shards "
                    "are loaded again from a new snapshot"
                )
            for change in changes:
                if change.version > target:
                    break
                apply_to(indexes, change, sharded.count)
                version = change.version
        return target

    def drop_shards(self, shards: Sequence[int]) -> None:
        """Stop serving these shards (their leases are given up or lost)."""
        if self.sharded is not None:
            self.sharded.drop(shards)
            log.info("policy.shards_dropped", shards=sorted(shards))

    def loading_shards(self) -> frozenset[int]:
        return frozenset(self._loading)

    def served_shards(self) -> frozenset[int]:
        return frozenset(self.sharded.shards) if self.sharded is not None else frozenset()

    async def wait_served(self, shards: set[int], timeout: float) -> None:
        """Until every shard of `shards` is served here: ShardNotServed at once for one neither
        served nor being loaded, or when `timeout` passes first."""
        sharded = self.sharded
        assert sharded is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            missing = {s for s in shards if not sharded.serves(s)}
            if not missing:
                return
            idle = missing - self._loading
            if idle:
                raise ShardNotServed.of(min(idle), loading=False)
            installed = self._installed
            left = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await installed.wait()
            except TimeoutError:
                raise ShardNotServed.of(min(missing), loading=True) from None

    def decide_parts(
        self,
        senders: Sequence[tuple[str, MessageKind]],
        recipients: Sequence[tuple[str, str, MessageKind]],
    ) -> tuple[list[Decision], list[Decision], int]:
        """The sender's side of each (sender, kind) and the recipient's side of each (sender,
        recipient, kind), from the served shards (wait_served first), at one version."""
        sharded = self.sharded
        assert sharded is not None
        sender_parts: list[Decision] = []
        for sender, kind in senders:
            index = sharded.index_of(sender)
            if index is None:
                raise ShardNotServed.of(sharded.shard(sender), loading=False)
            sender_parts.append(sender_part(index, sender, kind))
        recipient_parts: list[Decision] = []
        for sender, recipient, kind in recipients:
            index = sharded.index_of(recipient)
            if index is None:
                raise ShardNotServed.of(sharded.shard(recipient), loading=False)
            recipient_parts.append(recipient_part(index, sender, recipient, kind))
        return sender_parts, recipient_parts, sharded.version

    def _shard_metrics(self) -> list[Metric]:
        sharded = self.sharded
        if sharded is None:
            return []
        return [
            GaugeMetricFamily(
                "idmesh_gateway_policy_shards_served",
                "Shards of the delivery policy this replica serves (loaded and caught up).",
                value=len(sharded.shards),
            ),
            GaugeMetricFamily(
                "idmesh_gateway_policy_shards_loading",
                "Shards this replica owns whose index is being loaded (not yet served).",
                value=len(self._loading),
            ),
            GaugeMetricFamily(
                "idmesh_gateway_policy_index_entries",
                "Entries loaded into the served shards' indexes (users, sender rules, "
                "unaccepted-sender policies, consents).",
                value=sharded.entries,
            ),
        ]
