"""Two gateway stores over one PostgreSQL database, as two replicas would have: replacing a
user's current identification is race-free, and a termination notice applied at one replica
wins over an IDENTIFIED answer recorded at the other at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from services.common.lease import Lease
from services.common.pg import PgDatabase
from services.messenger_gateway.domain import Reason, State, TerminationKind, TerminationNotice
from services.messenger_gateway.ports import GatewayStore
from services.messenger_gateway.store_pg import PG_MIGRATIONS, SERVICE, PgGatewayStore
from tests.eventually import eventually

from .fakes import BEELINE_PHONE, FakeClock, make_service


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[list[GatewayStore]]:
    async with AsyncExitStack() as stack:
        stores: list[GatewayStore] = []
        for _ in range(2):
            db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
            stack.push_async_callback(db.close)
            stores.append(PgGatewayStore(db))
        yield stores


async def test_concurrent_starts_for_one_user_at_two_replicas_leave_one_current(
    replicas: list[GatewayStore],
) -> None:
    services = [make_service(store) for store in replicas]

    started = await asyncio.gather(
        *(services[n % 2].start_identification("user-1", BEELINE_PHONE) for n in range(12))
    )

    history = await replicas[0].history("user-1")
    assert len(history) == len(started) == 12
    awaiting = [i for i in history if i.state is State.AWAITING_CODE]
    assert [i.identification_id for i in awaiting] == [history[-1].identification_id]
    assert all(
        (i.state, i.reason) == (State.NOT_COMPLETED, Reason.NUMBER_CHANGED) for i in history[:-1]
    )


class _PausingConnection:
    """A connection whose finish_verification write waits, after its inbox check, until the
    test lets it go: the moment a termination at another replica could slip in between."""

    def __init__(self, conn: Any, checked: asyncio.Event, go: asyncio.Event) -> None:
        self._conn, self._checked, self._go = conn, checked, go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, sql: str, *args: Any) -> Any:
        if "verify_key = $7 AND state = 'VERIFYING'" in sql:
            self._checked.set()
            await self._go.wait()
        return await self._conn.execute(sql, *args)


async def test_a_termination_wins_over_an_identified_answer_racing_it_at_another_replica(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
    second_db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
    try:
        first, second = PgGatewayStore(first_db), PgGatewayStore(second_db)
        clock = FakeClock()
        now = clock.now()
        ident = await make_service(first, clock=clock).start_identification("u", BEELINE_PHONE)
        assert await first.begin_verification(
            ident.identification_id,
            verify_key="r",
            deadline=now + timedelta(minutes=20),
            now=now,
            lease=Lease("replica-1", now + timedelta(seconds=6)),
        )
        checked, go = asyncio.Event(), asyncio.Event()
        transaction = first_db.transaction

        @asynccontextmanager
        async def pausing() -> AsyncIterator[Any]:
            async with transaction() as conn:
                yield _PausingConnection(conn, checked, go)

        monkeypatch.setattr(first_db, "transaction", pausing)
        answer = asyncio.create_task(
            first.finish_verification(
                ident.identification_id,
                "r",
                state=State.IDENTIFIED,
                reason=Reason.UNSPECIFIED,
                now=now,
                operator_id="beeline",
                identification_code="IC-1",
                within_window=True,
            )
        )
        await asyncio.wait_for(checked.wait(), 10)  # the answer checked the inbox: no notice
        notice = TerminationNotice(
            seq=1,
            event_id="ev-1",
            operator_id="beeline",
            messenger_id="alpha",
            identification_code="IC-1",
            kind=TerminationKind.CONTRACT_ENDED,
        )
        termination = asyncio.create_task(second.apply_notices("alpha", [(notice, True)], now=now))

        async def termination_done_or_waiting() -> bool:
            waiting = await second_db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            return termination.done() or waiting > 0

        await eventually(termination_done_or_waiting, what="the termination to run or wait")
        go.set()
        await asyncio.gather(answer, termination)

        current = await second.get(ident.identification_id)
        assert current is not None
        assert (current.state, current.reason) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    finally:
        await first_db.close()
        await second_db.close()
