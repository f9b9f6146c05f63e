"""The delivery policy's store under replicas: two store instances on one database (two pools,
as two gateway processes have) writing at once, on each engine. The change log stays gap-free
and in commit order, so every reader that follows it sees every change exactly once, in order;
on PostgreSQL a commit at one replica wakes the other's index without waiting for the poll."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from services.common.config import Env
from services.common.storage import StoreSettings
from services.messenger_gateway.main import GatewayStores, open_stores
from services.messenger_gateway.policy.model import ChangeKind, Consent, PolicyChange, SenderRule
from services.messenger_gateway.policy.service import PolicyService, PolicySettings
from tests.eventually import eventually
from tests.messenger_gateway.fakes import FakeClock, make_service

USERS = [f"u{n}" for n in range(6)]
PHONES = {user: f"+7903123000{n}" for n, user in enumerate(USERS)}
ROUTES = dict.fromkeys(PHONES.values(), "beeline")
WRITERS_PER_REPLICA = 4
WRITES_PER_WRITER = 15


@pytest.fixture
async def replicas(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[list[GatewayStores]]:
    """Two replicas' stores on one database (each engine), the USERS known to the gateway."""
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    settings = StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "gw.db"), **environ}))
    async with AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(open_stores(settings)) for _ in range(2)]
        service = make_service(opened[0].gateway, routes=ROUTES)
        for user, phone in PHONES.items():
            await service.start_identification(user, phone)
        yield opened


def _key(change: PolicyChange) -> tuple[str, str, str, str]:
    return (change.kind, change.user_id, change.sender_id, change.value)


async def test_concurrent_writes_at_two_replicas_give_every_follower_each_change_once_in_order(
    replicas: list[GatewayStores],
) -> None:
    clock = FakeClock()
    start = (await replicas[0].policy.log_bounds())[1]
    written: list[tuple[str, str, str, str]] = []
    versions: list[int] = []
    done = asyncio.Event()

    async def writer(replica: int, n: int) -> None:
        store, gateway = replicas[replica].policy, replicas[replica].gateway
        rng = random.Random(replica * 100 + n)
        service = make_service(gateway, routes=ROUTES, clock=clock)
        for i in range(WRITES_PER_WRITER):
            user = rng.choice(USERS)
            sender = f"sender-{replica}-{n}-{i}"
            if i % 5 == 4:  # an identification change: logged by the store's triggers
                await service.start_identification(user, PHONES[user])
                continue
            if i % 2:
                _, version = await store.set_automated_consent(
                    user, sender, Consent.GRANTED, clock.now()
                )
                written.append((ChangeKind.AUTOMATED_CONSENT, user, sender, Consent.GRANTED))
            else:
                version = await store.set_sender_rule(user, sender, SenderRule.REFUSED, clock.now())
                written.append((ChangeKind.SENDER_RULE, user, sender, SenderRule.REFUSED))
            versions.append(version)

    async def follower(replica: int) -> list[PolicyChange]:
        """Reads the log after its cursor in small pages while the writers run, as an index
        catching up or a WatchPolicyChanges stream does."""
        store, cursor, seen = replicas[replica].policy, start, []
        while True:
            finished = done.is_set()  # read before the page: a page after it sees every write
            page = await store.changes_after(cursor, 7)
            for change in page:
                assert change.version == cursor + 1, f"a gap after {cursor}: {change.version}"
                cursor = change.version
                seen.append(change)
            if finished and not page:
                return seen
            if not page:
                await asyncio.sleep(0.005)  # the follower's poll interval

    followers = [asyncio.create_task(follower(r)) for r in (0, 1, 0)]
    try:
        await asyncio.gather(*(writer(r, n) for r in (0, 1) for n in range(WRITERS_PER_REPLICA)))
        done.set()
        logs = await asyncio.wait_for(asyncio.gather(*followers), 60)
    finally:
        for task in followers:
            task.cancel()
        await asyncio.wait(followers)

    head = (await replicas[1].policy.log_bounds())[1]
    identifications = WRITERS_PER_REPLICA * 2 * (WRITES_PER_WRITER // 5)
    # each start logs the replaced identification's end and the new one
    assert head - start == len(written) + 2 * identifications
    assert sorted(versions) == sorted(set(versions))  # no version given twice
    for seen in logs:
        assert [c.version for c in seen] == list(range(start + 1, head + 1))
        preferences = [_key(c) for c in seen if c.kind is not ChangeKind.IDENTIFICATION]
        assert sorted(preferences) == sorted(written)  # each exactly once
        assert {c.version for c in seen if c.kind is not ChangeKind.IDENTIFICATION} == set(versions)


async def test_a_commit_at_one_replica_wakes_the_others_index_before_its_poll(
    postgres_url: str,
) -> None:
    settings = StoreSettings(database_url=postgres_url)
    async with AsyncExitStack() as stack:
        first, second = [await stack.enter_async_context(open_stores(settings)) for _ in range(2)]
        await make_service(first.gateway, routes=ROUTES).start_identification("u0", PHONES["u0"])
        clock = FakeClock()
        # a poll far beyond the test's bound: only the notification can wake the tailer
        follower = PolicyService(PolicySettings(poll_interval=3600), store=second.policy)
        await follower.start()
        tail = asyncio.create_task(follower.run_tail())
        stack.push_async_callback(_stop, tail)
        version = await first.policy.set_sender_rule(
            "u0", "spammer", SenderRule.REFUSED, clock.now()
        )
        await eventually(
            lambda: follower.index.version >= version, within=15, what="the other replica's index"
        )
        changes = await second.policy.changes_after(version - 1, 1)
        assert [(c.kind, c.sender_id, c.value) for c in changes] == [
            (ChangeKind.SENDER_RULE, "spammer", SenderRule.REFUSED)
        ]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task})
