"""Leases: work that exactly one replica of a service does at a time, handed over when it dies.

A lease is a row in the service's store: a name, its holder (a replica id), an expiry and a
fencing token. The holder renews it every third of its term; another replica takes it only once
it has expired (or was released), so after the holder dies a standby takes over within about 4/3
of the term, and a replica that cannot renew stops the work by the expiry it last wrote.
Expiries are written with the replicas' own clocks: keep them in step (NTP), well within the
term. The same rows serve SQLite, where there is one process and it always holds the lease.

Stopping by the expiry is not enough on its own: a holder paused (a stalled process, a long
garbage collection, a commit stuck on a dead connection) may wake after its lease expired and
another replica took over, with a write already on its way. So every take of a lease (by another
holder, or by anyone once it was free or expired) raises its token, renewals keep it, and the
work runs with a Fence (the lease's name, holder and token): each write made under the lease
checks in its own transaction that the lease row still has that holder and token, and changes
nothing (LeaseFenced) when it has not. Two holders never act at once, whatever the clocks say:
skewed clocks can make a lease change hands early, but a stale holder's write is refused.

    keeper = LeaseKeeper(store, "notices:alpha", holder=replica_id, work=consumer.run, ttl=6.0)
    task = asyncio.create_task(keeper.run())   # runs consumer.run(fence) only while it holds it

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
from datetime import UTC, datetime, timedelta
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


# A released lease keeps its row (and so its token), expired since the epoch: free at once.
RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on some work: who holds it, and until when unless renewed; as stored, with its
    fencing token (0 when the claim is only asked for)."""

    holder: str
    expires_at: datetime
    token: int = 0


@dataclass(frozen=True, slots=True)
class Fence:
    """What a write made under a lease checks in its own transaction: that the lease `name` is
    still held by `holder` under `token` (nobody took it since this holder did)."""

    name: str
    holder: str
    token: int

    def admits(self, holder: str | None, token: int) -> bool:
        """Whether a lease held by holder under token is still this one."""
        return holder == self.holder and token == self.token


class LeaseFenced(Exception):
    """A write made under a lease that another holder has taken since: refused, nothing
    changed. The work must stop; the lease's new holder does it."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(
            f"lease {fence.name!r} is no longer held by {fence.holder!r} under token {fence.token}"
        )
        self.fence = fence


def log_fenced(fence: Fence, *, action: str, **fields: object) -> None:
    """The one line a work that was fenced logs as it stops."""
    log.warning(
        "lease.fenced",
        lease=fence.name,
        replica=fence.holder,
        lease_token=fence.token,  # not "token": the logs redact that key as a secret
        action=action,
        **fields,
    )


class LeaseStore(Protocol):
    async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
        """Take or renew the named lease for lease.holder until lease.expires_at: only if it is
        free, expired at `now`, or already the holder's. Its fencing token if the holder now
        holds it (kept by a renewal of a live lease; raised, and at least 1, by any other
        take), else None."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if holder holds it (another replica may take it at once; the
        token is kept, so the next take raises it)."""
        ...

    async def lease_of(self, name: str) -> Lease | None:
        """The lease as stored (possibly expired or released: its expiry passed), or None."""
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
    """Runs `work(fence)` while this replica holds the lease `name`, and keeps the lease while it
    does.

    Every ttl/3 it tries to take or renew the lease. Taken: work starts (again, if it ended)
    with the lease's Fence, which its writes check. Lost (another holder), not renewed by its
    expiry, or taken again under a new token (it had expired meanwhile): work is cancelled and
    the keeper stands by (or starts it again with the new fence). Work that ends by itself (a
    fenced write among the reasons) is started again while the lease is held. Cancelled
    (shutdown): work is cancelled and the lease released, so a standby takes over within ttl/3;
    a replica that dies without releasing leaves it to expire."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        holder: str,
        work: Callable[[Fence], Coroutine[object, object, None]],
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
        self._fence: Fence | None = None  # the lease as last taken or renewed
        self._gauge = LEASE_HELD.labels(lease=name, replica=holder)
        self._gauge.set(0)

    @property
    def fence(self) -> Fence | None:
        """The fence of the lease this replica holds (None while it stands by)."""
        return self._fence if self._held_until is not None else None

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
                token = await self._store.acquire_lease(
                    self.name, Lease(self.holder, until), now=now
                )
        except Exception as exc:
            log.warning("lease.renew_failed", lease=self.name, replica=self.holder, error=repr(exc))
            if self._held_until is not None and self._clock.now() >= self._held_until:
                await self._stop("not renewed before it expired")
            return
        if token is None:
            if self._held_until is not None:
                await self._stop("taken by another replica")
            return
        fence = Fence(self.name, self.holder, token)
        if self._fence is not None and fence != self._fence:
            # taken anew (it had expired meanwhile): writes under the old token are refused now
            await self._stop("taken again under a new token")
        self._held_until = until
        self._fence = fence
        if not self.active:
            if self._task is not None:
                # the work ended by itself: log why, then start it again
                failure = None if self._task.cancelled() else self._task.exception()
                if failure is not None and not isinstance(failure, LeaseFenced):
                    log.error("lease.work_failed", lease=self.name, exc_info=failure)
            log.info("lease.acquired", lease=self.name, replica=self.holder, lease_token=token)
            self._task = asyncio.create_task(self._work(fence), name=f"lease-{self.name}")
            self._gauge.set(1)

    async def _stop(self, why: str) -> None:
        self._held_until = None
        self._fence = None
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
