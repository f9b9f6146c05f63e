"""Several registry replicas over one PostgreSQL store: verifications racing at two replicas make
one binding with one code; a termination racing verifications leaves no binding without its
notice; the outbox relays of two replicas share the notices out, and a dead relay's claim
expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from services.common.pg import PgDatabase
from services.operator_registry.service import RegistryService
from services.operator_registry.store_pg import PG_MIGRATIONS, SERVICE, PgRegistryStore
from tests.eventually import eventually

from .conftest import NUMBER, OPERATOR, FakeClock

LEASE = 0.5  # seconds: a dead relay's claim on outbox rows


@pytest.fixture
async def replicas(postgres_url: str, clock: FakeClock) -> AsyncIterator[list[RegistryService]]:
    """Two registry replicas (each its own pool) over one PostgreSQL store; alpha and beta
    hold agreements, NUMBER has an active contract."""
    async with AsyncExitStack() as stack:
        services = []
        for _ in range(2):
            db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
            stack.push_async_callback(db.close)
            store = PgRegistryStore(db, relay_lease_seconds=LEASE)
            services.append(RegistryService(store, operator_id=OPERATOR, clock=clock))
        await services[0].register_messenger("alpha")
        await services[1].register_messenger("beta")
        await services[0].create_subscriber(NUMBER, "BEE-1")
        yield services


async def verify(service: RegistryService, request_id: str, messenger: str = "alpha") -> Any:
    return await service.verify_subscriber(messenger, request_id, NUMBER, time_remaining=None)


async def test_concurrent_verifications_at_two_replicas_make_one_binding_with_one_code(
    replicas: list[RegistryService],
) -> None:
    answers = await asyncio.gather(
        *(verify(replicas[n % 2], f"r{n}") for n in range(20)),
        *(verify(replicas[n % 2], f"b{n}", "beta") for n in range(6)),
    )

    alpha = {a.identification_code for a in answers if a.messenger_id == "alpha"}
    beta = {a.identification_code for a in answers if a.messenger_id == "beta"}
    assert len(alpha) == 1 and len(beta) == 1 and alpha != beta
    subscriber = await replicas[1].get_subscriber(NUMBER)
    assert {(b.messenger_id, b.identification_code) for b in subscriber.bindings} == {
        ("alpha", *alpha),
        ("beta", *beta),
    }


async def test_the_same_request_at_two_replicas_at_once_gets_one_answer(
    replicas: list[RegistryService],
) -> None:
    first, second = await asyncio.gather(verify(replicas[0], "same"), verify(replicas[1], "same"))
    assert first.identification_code == second.identification_code
    assert (await replicas[0].get_subscriber(NUMBER)).bindings[0].identification_code == (
        first.identification_code
    )


async def test_a_termination_racing_verifications_leaves_no_binding_without_its_notice(
    replicas: list[RegistryService],
) -> None:
    verifications = [verify(replicas[0], f"r{n}", ("alpha", "beta")[n % 2]) for n in range(10)]
    outcomes = await asyncio.gather(
        *verifications, replicas[1].terminate_contract(NUMBER), return_exceptions=True
    )

    termination = outcomes[-1]
    assert not isinstance(termination, BaseException), termination
    subscriber = await replicas[0].get_subscriber(NUMBER)
    notices = await replicas[0].pending_notices(100)
    # Every binding made before the termination got its notice; none was made after it.
    assert {b.messenger_id for b in subscriber.bindings} == {n.messenger_id for n in notices}
    assert termination.notices_queued == len(notices)


async def test_two_relays_claim_disjoint_notices_and_a_dead_relays_claim_expires(
    replicas: list[RegistryService], clock: FakeClock
) -> None:
    await verify(replicas[0], "a")
    await verify(replicas[0], "b", "beta")
    await replicas[0].terminate_contract(NUMBER)  # two notices: alpha's and beta's

    first = await replicas[0].pending_notices(1)
    second = await replicas[1].pending_notices(10)
    assert len(first) == 1 and len(second) == 1
    assert first[0].event_id != second[0].event_id
    assert await replicas[1].pending_notices(10) == second  # its own claim, for a retry

    # The first relay dies before marking its notice published: after the lease, the other
    # relay takes it; published once, it is nobody's any more.
    await replicas[1].mark_published([second[0].event_id])

    async def taken_over() -> bool:
        return [n.event_id for n in await replicas[1].pending_notices(10)] == [first[0].event_id]

    await eventually(taken_over, within=10, what="the dead relay's claim to expire")
    await replicas[1].mark_published([first[0].event_id])
    assert await replicas[0].pending_notices(10) == []
    assert await replicas[0].count_pending_notices() == 0


async def test_a_relay_that_could_not_publish_gives_its_claims_up_at_once(
    replicas: list[RegistryService],
) -> None:
    await verify(replicas[0], "a")
    await replicas[0].terminate_contract(NUMBER)
    claimed = await replicas[0].pending_notices(10)
    assert len(claimed) == 1
    assert await replicas[1].pending_notices(10) == []  # claimed by the first relay
    # another relay's release gives up nothing of the first relay's claim
    assert await replicas[1].release_notices([claimed[0].event_id]) == 0
    assert await replicas[1].pending_notices(10) == []
    # the first relay's Publish failed: its claim is given up, the other relay takes the notice
    # before the claim's term ends
    assert await replicas[0].release_notices([claimed[0].event_id]) == 1
    assert [n.event_id for n in await replicas[1].pending_notices(10)] == [claimed[0].event_id]
    await replicas[1].mark_published([claimed[0].event_id])
    assert await replicas[0].release_notices([claimed[0].event_id]) == 0  # published: nobody's
