"""Leases in the gateway's store, on both engines: named leases (the notice consumer's) and the
leases of pending verifications; and LeaseKeeper, which runs work only while it holds one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta

from prometheus_client import REGISTRY

from services.common.lease import RELEASED_AT, Fence, Lease, LeaseKeeper
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.model import State
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually

from .fakes import (
    BEELINE_PHONE,
    MEGAFON_PHONE,
    FakeClock,
    FakeOperators,
    RecordingSms,
    hang,
    make_service,
)

TERM = timedelta(seconds=6)


# --- named leases ----------------------------------------------------------------------------


async def test_a_live_lease_is_refused_to_others_until_it_expires_or_is_released(
    store: GatewayStore,
) -> None:
    now = FakeClock().now()

    async def take(holder: str, at: datetime, name: str = "notices:alpha") -> int | None:
        return await store.acquire_lease(name, Lease(holder, at + TERM), now=at)

    assert await take("a", now) == 1
    assert await take("b", now) is None
    # the holder renews, under the same token; the other still cannot take it
    later = now + timedelta(seconds=4)
    assert await take("a", later) == 1
    assert await take("b", later) is None
    assert await store.lease_of("notices:alpha") == Lease("a", later + TERM, 1)
    # a lease of another name is another lease
    assert await take("b", now, "notices:beta") == 1

    # unrenewed, it expires: the other takes it under a new token, and the old holder's
    # renewal is refused
    expired = later + TERM
    assert await take("b", expired) == 2
    assert await take("a", expired) is None
    assert await store.lease_of("notices:alpha") == Lease("b", expired + TERM, 2)

    # released by a non-holder: nothing; by its holder: free at once, its token kept
    await store.release_lease("notices:alpha", "a")
    assert await take("a", expired) is None
    await store.release_lease("notices:alpha", "b")
    assert await store.lease_of("notices:alpha") == Lease("b", RELEASED_AT, 2)
    assert await take("a", expired) == 3

    # the holder's own lease, expired and taken again: a new term, a new token
    assert await take("a", expired + TERM) == 4


# --- pending verifications -------------------------------------------------------------------


async def _verifying(store: GatewayStore, user_id: str, phone: str, holder: str) -> str:
    """An identification VERIFYING for 60 s, held by holder for TERM; its id."""
    clock = FakeClock()
    ident = await make_service(store, clock=clock).start_identification(user_id, phone)
    now = clock.now()
    assert await transactions.begin_verification(
        store,
        ident.identification_id,
        verify_key=f"key-{user_id}",
        deadline=now + timedelta(seconds=60),
        now=now,
        lease=Lease(holder, now + TERM),
    )
    return ident.identification_id


async def test_a_held_verification_is_claimed_by_another_only_once_its_lease_expired(
    store: GatewayStore,
) -> None:
    held = await _verifying(store, "u1", BEELINE_PHONE, holder="a")
    now = FakeClock().now()
    assert await store.claim_verifications(Lease("b", now + TERM), now=now) == []
    assert await store.renew_verifications(Lease("a", now + TERM), [held]) == []

    later = now + TERM + timedelta(seconds=1)  # a stopped renewing (it died)
    [taken] = await store.claim_verifications(Lease("b", later + TERM), now=later)
    assert (taken.identification_id, taken.state, taken.verify_key) == (
        held,
        State.VERIFYING,
        "key-u1",
    )
    # nobody else gets it now, and a renewal tells a that b has it
    assert await store.claim_verifications(Lease("c", later + TERM), now=later) == []
    assert await store.renew_verifications(Lease("a", later + TERM), [held]) == [held]
    assert await store.renew_verifications(Lease("b", later + TERM), [held]) == []


async def test_only_the_verifications_a_replica_runs_keep_their_leases(
    store: GatewayStore,
) -> None:
    running = await _verifying(store, "u1", BEELINE_PHONE, holder="a")
    orphan = await _verifying(store, "u2", MEGAFON_PHONE, holder="a")  # a runs no task for it
    renewed_at = FakeClock().now() + timedelta(seconds=5)
    assert await store.renew_verifications(Lease("a", renewed_at + TERM), [running]) == []

    later = renewed_at + timedelta(seconds=2)  # past the first term, inside the renewed one
    claimed = await store.claim_verifications(Lease("b", later + TERM), now=later)
    assert [i.identification_id for i in claimed] == [orphan]


async def test_released_verifications_are_claimed_at_once_and_overdue_ones_never(
    store: GatewayStore,
) -> None:
    first = await _verifying(store, "u1", BEELINE_PHONE, holder="a")
    second = await _verifying(store, "u2", MEGAFON_PHONE, holder="a")
    now = FakeClock().now()
    assert await store.release_verifications("a") == 2
    assert await store.release_verifications("a") == 0
    claimed = await store.claim_verifications(Lease("b", now + TERM), now=now)
    assert [i.identification_id for i in claimed] == [first, second]  # oldest first

    await store.release_verifications("b")
    past_window = now + timedelta(seconds=61)
    assert await store.claim_verifications(Lease("c", past_window + TERM), now=past_window) == []
    assert sorted(await transactions.expire_overdue(store, past_window)) == sorted([first, second])


async def _pending(
    store: GatewayStore, clock: FakeClock, replica_id: str
) -> tuple[GatewayService, FakeOperators, str]:
    """A service of replica_id whose operator never answers, with one verification pending."""
    sms, operators = RecordingSms(), FakeOperators(answers={BEELINE_PHONE: hang})
    service = make_service(
        store, sms=sms, operators=operators, clock=clock, window=60, replica_id=replica_id
    )
    ident = await service.start_identification("user-1", BEELINE_PHONE)
    await service.confirm_possession(
        ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
    )
    await eventually(lambda: len(operators.calls) == 1, what="the operator asked")
    return service, operators, ident.identification_id


async def test_a_shutdown_releases_its_verifications_to_another_replica_at_once(
    store: GatewayStore,
) -> None:
    clock = FakeClock()
    first, _, pending = await _pending(store, clock, "a")
    other = make_service(store, operators=FakeOperators(), clock=clock, replica_id="b")
    assert await other.keep_verifications() == (0, 0)  # a holds it
    await first.close()
    assert await other.keep_verifications() == (1, 0)  # no waiting for the lease to expire
    await eventually(lambda: other.verifier._tasks == {}, what="b finished it")
    done = await store.get(pending)
    assert done is not None and done.state is State.IDENTIFIED
    await other.close()


async def test_a_replica_restarted_with_its_id_resumes_its_verifications_at_once(
    store: GatewayStore,
) -> None:
    """A crash (nothing released), then a restart under the same replica id (SQLite's one
    replica, a pod restarted in place): it does not wait for its own leases to expire."""
    clock = FakeClock()
    crashed, first_ops, pending = await _pending(store, clock, "a")
    for task in crashed.verifier._tasks.values():
        task.cancel()
    await eventually(lambda: crashed.verifier._tasks == {}, what="the crashed tasks gone")
    stranger = make_service(store, operators=FakeOperators(), clock=clock, replica_id="b")
    assert await stranger.resume_pending() == (0, 0)  # a's lease is live

    second_ops = FakeOperators()
    restarted = make_service(store, operators=second_ops, clock=clock, replica_id="a")
    assert await restarted.resume_pending() == (1, 0)
    await eventually(
        lambda: restarted.verifier._tasks == {}, what="the resumed verification finished"
    )
    assert second_ops.calls == first_ops.calls  # the same idempotency key
    assert stranger.verifier._tasks == {}
    done = await store.get(pending)
    assert done is not None and done.state is State.IDENTIFIED
    await restarted.close()


# --- LeaseKeeper -----------------------------------------------------------------------------


async def test_one_keeper_of_two_runs_the_work_and_the_other_takes_over_when_it_stops(
    store: GatewayStore,
) -> None:
    running: set[str] = set()
    starts: list[str] = []

    def work(name: str) -> Callable[[Fence], Coroutine[object, object, None]]:
        async def run(fence: Fence) -> None:
            running.add(name)
            starts.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.discard(name)

        return run

    keepers = {
        name: LeaseKeeper(store, "notices:alpha", holder=name, work=work(name), ttl=3.0)
        for name in ("a", "b")
    }
    tasks = {name: asyncio.create_task(k.run()) for name, k in keepers.items()}
    try:
        await eventually(lambda: len(running) == 1, what="one keeper running the work")
        [active] = running
        standby = "b" if active == "a" else "a"
        assert keepers[active].active and not keepers[standby].active
        assert _held(active) == 1 and _held(standby) == 0

        # a polite stop releases the lease: the standby takes over within a renewal
        tasks.pop(active).cancel()
        await eventually(lambda: running == {standby}, what="the standby took over")
        assert starts == [active, standby]
        assert _held(active) == 0 and _held(standby) == 1
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


def _held(replica: str) -> float | None:
    return REGISTRY.get_sample_value(
        "idmesh_lease_held", {"lease": "notices:alpha", "replica": replica}
    )


async def test_a_keeper_that_cannot_renew_stops_the_work_by_the_lease_expiry(
    store: GatewayStore,
) -> None:
    running = asyncio.Event()
    stopped = asyncio.Event()

    async def run(fence: Fence) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    class Failing:
        """The store, until the database goes away."""

        broken = False

        async def acquire_lease(self, name: str, lease: Lease, *, now: datetime) -> int | None:
            if self.broken:
                raise ConnectionError("the database went away")
            return await store.acquire_lease(name, lease, now=now)

        async def release_lease(self, name: str, holder: str) -> None:
            raise ConnectionError("the database went away")

        async def lease_of(self, name: str) -> Lease | None:
            return await store.lease_of(name)

    failing = Failing()
    keeper = LeaseKeeper(failing, "notices:alpha", holder="a", work=run, ttl=1.5)
    task = asyncio.create_task(keeper.run())
    try:
        await asyncio.wait_for(running.wait(), 10)
        failing.broken = True
        await asyncio.wait_for(stopped.wait(), 10)  # fenced: no renewal by the expiry
        assert not keeper.active
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
