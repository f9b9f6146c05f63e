"""Leases: work that exactly one replica of a service does at a time, handed over when it dies.

A lease is a row in the service's store: a name, its holder (a replica id) and an expiry. The
holder renews it every third of its term; another replica takes it only once it has expired (or
was released), so after the holder dies a standby takes over within about 4/3 of the term, and
a replica that cannot renew stops the work by the expiry it last wrote (it fences itself).
Expiries are written with the replicas' own clocks: keep them in step (NTP), well within the
term. The same rows serve SQLite, where there is one process and it always holds the lease.

    keeper = LeaseKeeper(store, "notices:alpha", holder=replica_id, work=consumer.run, ttl=6.0)
    task = asyncio.create_task(keeper.run())   # runs consumer.run() only while it holds the lease

A lease row is the portable choice (PostgreSQL's session advisory locks would free at once when
a process dies, but not when its host or network does until TCP gives up, and not at all
behind a transaction-pooling proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import Gauge

from services.common.logging import get_logger
from services.common.timeutil import Clock, SystemClock

log = get_logger("idmesh.lease")

LEASE_HELD = Gauge(
    "idmesh_lease_held",
    "1 while this replica holds the named lease and does its work (one replica per lease "
    "should show 1), 0 while it stands by.",
    ["lease", "replica"],
)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on some work: who holds it, and until when unless renewed."""

    holder: str
    expires_at: datetime


class LeaseStore(Protocol):
    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> bool:
        """Take or renew the named lease for lease.holder until lease.expires_at: only if it is
        free, expired at `now`, or already the holder's. Whether the holder now holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if holder holds it (another replica may take it at once)."""
        ...

    async def lease_of(self, name: str) -> Lease | None:
        """The lease as stored (possibly expired), or None."""
        ...


class LeaseTable(LeaseStore, Protocol):
    async def leases(self, prefix: str) -> dict[str, Lease]:
        """Every lease whose name starts with prefix, as stored (possibly expired): name ->
        lease."""
        ...


def default_replica_id(*, single: bool) -> str:
    """A replica's id when IDMESH_REPLICA_ID is not set: the host's name, plus the process id
    when several replicas may share the store (two on one host must differ). With a single
    replica (SQLite) the id survives a restart, so the restarted process holds its leases at
    once instead of waiting for them to expire."""
    host = socket.gethostname() or "localhost"
    return host if single else f"{host}-{os.getpid()}"


class LeaseKeeper:
    """Runs `work` while this replica holds the lease `name`, and keeps the lease while it does.

    Every ttl/3 it tries to take or renew the lease. Taken: work starts (again, if it ended).
    Lost (another holder) or not renewed by its expiry: work is cancelled and the keeper stands
    by. Cancelled (shutdown): work is cancelled and the lease released, so a standby takes over
    within ttl/3; a replica that dies without releasing leaves it to expire."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        holder: str,
        work: Callable[[], Coroutine[object, object, None]],
        ttl: float,
        clock: Clock | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.name = name
        self.holder = holder
        self._store = store
        self._work = work
        self._ttl = timedelta(seconds=ttl)
        self._interval = ttl / 3
        self._clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None
        self._held_until: datetime | None = None
        self._gauge = LEASE_HELD.labels(lease=name, replica=holder)
        self._gauge.set(0)

    @property
    def active(self) -> bool:
        """Whether this replica holds the lease and its work runs."""
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Hold the lease and run the work while held, until cancelled."""
        try:
            while True:
                await self._tick()
                await asyncio.sleep(self._interval)
        finally:
            held = self._held_until is not None
            await self._stop("shutdown")
            # released even when not known held: a renewal cancelled by the shutdown may have
            # been granted (release only frees a lease this holder holds)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._interval):
                    await asyncio.shield(self._store.release_lease(self.name, self.holder))
                if held:
                    log.info("lease.released", lease=self.name, replica=self.holder)

    async def _tick(self) -> None:
        now = self._clock.now()
        until = now + self._ttl
        try:
            # bounded: a store that hangs must not keep the work running past the expiry.
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the call completes, and the keeper would run on after shutdown
            async with asyncio.timeout(self._interval):
                held = await self._store.acquire_lease(
                    self.name, Lease(self.holder, until), now=now
                )
        except Exception as exc:
            log.warning("lease.renew_failed", lease=self.name, replica=self.holder, error=repr(exc))
            if self._held_until is not None and self._clock.now() >= self._held_until:
                await self._stop("not renewed before it expired")
            return
        if not held:
            if self._held_until is not None:
                await self._stop("taken by another replica")
            return
        self._held_until = until
        if not self.active:
            if self._task is not None:
                # the work ended by itself: log why, then start it again
                failure = None if self._task.cancelled() else self._task.exception()
                if failure is not None:
                    log.error("lease.work_failed", lease=self.name, exc_info=failure)
            log.info("lease.acquired", lease=self.name, replica=self.holder)
            self._task = asyncio.create_task(self._work(), name=f"lease-{self.name}")
            self._gauge.set(1)

    async def _stop(self, why: str) -> None:
        self._held_until = None
        task = self._task
        self._gauge.set(0)
        if task is None:
            return
        if not task.done() and why != "shutdown":
            log.warning("lease.lost", lease=self.name, replica=self.holder, why=why)
        task.cancel()
        # active until the work has really stopped (its cleanup included), never before
        await asyncio.gather(task, return_exceptions=True)
        self._task = None
