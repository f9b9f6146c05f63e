"""Gateway replicas over one PostgreSQL database: replacing a user's current identification is
race-free (never two live ones); a termination notice applied at one replica wins over an
IDENTIFIED answer recorded at another at the same moment; a dead replica's pending verification
is resumed by exactly one other, with its idempotency key, once its lease expired; overdue ones
are failed once however many replicas sweep; one replica consumes the notice stream and a
standby takes over when it dies. A replica "dies" as a killed process would: its pool's
connections dropped and its tasks cancelled, nothing released."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.backoff import Backoff
from services.common.channels import open_channel
from services.common.identity import Caller, Kind
from services.common.lease import Lease, LeaseKeeper
from services.common.pg import PgDatabase
from services.messenger_gateway.adapters.schema_pg import PG_MIGRATIONS, SERVICE
from services.messenger_gateway.adapters.store_pg import PgGatewayStore
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.model import Reason, State, WrongCode
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.identification.transitions import Event
from services.messenger_gateway.notices.consumer import NoticeConsumer
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually

from .fakes import (
    BEELINE_PHONE,
    MEGAFON_PHONE,
    FakeClock,
    FakeOperators,
    RecordingSms,
    hang,
    identify,
    make_service,
    start_notifier,
)


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
        if sql.startswith("UPDATE identifications SET"):  # the answer's compare-and-set
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
        assert await transactions.begin_verification(
            first,
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
            transactions.finish_verification(
                first,
                ident.identification_id,
                "r",
                event=Event.ANSWER_IDENTIFIED,
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
        termination = asyncio.create_task(
            transactions.apply_notices(second, "alpha", [(notice, True)], now=now)
        )

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


async def test_wrong_codes_at_two_replicas_at_once_each_use_an_attempt(
    replicas: list[GatewayStore],
) -> None:
    sms = RecordingSms()
    services = [make_service(store, sms=sms, attempts=5) for store in replicas]
    ident = await services[0].start_identification("user-1", BEELINE_PHONE)
    code = sms.code_for(ident.identification_id)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    results = await asyncio.gather(
        *(
            services[n % 2].confirm_possession(ident.identification_id, wrong, wait=0)
            for n in range(4)
        ),
        return_exceptions=True,
    )

    assert all(isinstance(r, WrongCode) for r in results), results
    current = await replicas[1].get(ident.identification_id)
    assert current is not None
    assert (current.state, current.attempts_left) == (State.AWAITING_CODE, 1)


async def test_the_right_code_at_two_replicas_at_once_starts_one_verification(
    replicas: list[GatewayStore],
) -> None:
    sms, operators = RecordingSms(), FakeOperators(answers={BEELINE_PHONE: hang})
    services = [make_service(store, sms=sms, operators=operators) for store in replicas]
    ident = await services[0].start_identification("user-1", BEELINE_PHONE)
    code = sms.code_for(ident.identification_id)

    results = await asyncio.gather(
        *(services[n].confirm_possession(ident.identification_id, code, wait=0) for n in (0, 1))
    )

    assert [r.state for r in results] == [State.VERIFYING, State.VERIFYING]
    assert results[0].verify_key == results[1].verify_key  # one verification, shared
    for service in services:
        await service.close()


async def test_concurrent_starts_with_one_idempotency_key_at_two_replicas_make_one_identification(
    replicas: list[GatewayStore],
) -> None:
    services = [make_service(store) for store in replicas]

    started = await asyncio.gather(
        *(
            services[n % 2].start_identification("user-1", BEELINE_PHONE, idempotency_key="k-1")
            for n in range(8)
        )
    )

    assert len({i.identification_id for i in started}) == 1
    assert [i.identification_id for i in await replicas[1].history("user-1")] == [
        started[0].identification_id
    ]


async def test_starts_and_number_changes_racing_at_two_replicas_never_leave_two_live(
    replicas: list[GatewayStore],
) -> None:
    services = [make_service(store) for store in replicas]
    await services[0].start_identification("user-1", BEELINE_PHONE)

    calls = [
        services[0].start_identification("user-1", BEELINE_PHONE),
        services[1].change_phone_number("user-1", MEGAFON_PHONE),
        services[1].start_identification("user-1", MEGAFON_PHONE),
        services[0].change_phone_number("user-1", BEELINE_PHONE),
    ]
    await asyncio.gather(*calls * 3, return_exceptions=True)  # SameNumber refusals are fine

    history = await replicas[0].history("user-1")
    live = [i for i in history if i.state is State.AWAITING_CODE]
    assert [i.identification_id for i in live] == [history[-1].identification_id]


async def test_the_database_refuses_a_second_live_identification_for_a_user(
    postgres_url: str,
) -> None:
    """Belt and braces under the per-user lock: a unique index over the live states."""
    db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
    try:
        store = PgGatewayStore(db)
        ident = await make_service(store).start_identification("user-1", BEELINE_PHONE)
        with pytest.raises(asyncpg.UniqueViolationError):
            await db.execute(
                "INSERT INTO identifications (identification_id, user_id, phone_number, state, "
                "started_at, code_expires_at, attempts_left) "
                "SELECT 'second', user_id, phone_number, 'AWAITING_CODE', started_at, "
                "code_expires_at, 3 FROM identifications WHERE identification_id = $1",
                ident.identification_id,
            )
    finally:
        await db.close()


# --- pending verifications: one replica each, resumed by one other after a crash ------------


@dataclass
class _Replica:
    name: str
    db: PgDatabase
    store: PgGatewayStore
    operators: FakeOperators
    service: GatewayService
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def keep(self, interval: float = 0.1) -> None:
        """Its watchdog: renew, claim, expire, every interval."""
        self.tasks.append(asyncio.create_task(self.service.run_watchdog(interval)))

    async def kill(self) -> None:
        """Die without a word: the pool's connections dropped, every task cancelled, nothing
        released (the leases stay in the database until they expire)."""
        self.db._pool.terminate()
        for task in [*self.tasks, *self.service.verifier._tasks.values()]:
            task.cancel()
        await asyncio.gather(
            *self.tasks, *self.service.verifier._tasks.values(), return_exceptions=True
        )
        self.tasks.clear()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.service.close()
        await self.db.close()


@asynccontextmanager
async def _replicas(
    url: str, names: list[str], *, clock: FakeClock, sms: RecordingSms, lease: float = 3.0
) -> AsyncIterator[dict[str, _Replica]]:
    started: dict[str, _Replica] = {}
    try:
        for name in names:
            db = await PgDatabase.open(url, SERVICE, PG_MIGRATIONS)
            store = PgGatewayStore(db)
            operators = FakeOperators()
            service = make_service(
                store,
                operators=operators,
                sms=sms,
                clock=clock,
                window=60,
                replica_id=name,
                lease_ttl=lease,
            )
            started[name] = _Replica(name, db, store, operators, service)
        yield started
    finally:
        for replica in started.values():
            with contextlib.suppress(Exception):
                await replica.stop()


def _completed(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "idmesh_gateway_identifications_completed_total",
        {"outcome": "not_completed", "reason": reason},
    )
    return value or 0.0


async def test_a_dead_replicas_pending_verification_is_resumed_by_exactly_one_other(
    postgres_url: str,
) -> None:
    clock, sms = FakeClock(), RecordingSms()
    async with _replicas(postgres_url, ["a", "b", "c"], clock=clock, sms=sms) as r:
        a, b, c = r["a"], r["b"], r["c"]
        a.operators.answers[BEELINE_PHONE] = hang
        ident = await a.service.start_identification("user-1", BEELINE_PHONE)
        await a.service.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
        )
        await eventually(lambda: len(a.operators.calls) == 1, what="a asked the operator")
        b.keep()
        c.keep()
        await a.kill()

        async def identified() -> bool:
            done = await b.store.get(ident.identification_id)
            return done is not None and done.state is State.IDENTIFIED

        await eventually(identified, within=20, what="another replica to resume and finish it")
        # exactly one of b and c asked, with a's VerifySubscriber idempotency key
        assert [*b.operators.calls, *c.operators.calls] == a.operators.calls
        done = await b.store.get(ident.identification_id)
        assert done is not None and a.operators.calls[0][1] == done.verify_key


async def test_a_replica_whose_lease_was_taken_stops_its_verification(postgres_url: str) -> None:
    """A replica that stalled past its lease (no renewal) finds the verification taken at its
    next renewal and stops asking: the one that took it goes on."""
    clock, sms = FakeClock(), RecordingSms()
    async with _replicas(postgres_url, ["a", "b"], clock=clock, sms=sms) as r:
        a, b = r["a"], r["b"]
        a.operators.answers[BEELINE_PHONE] = hang
        b.operators.answers[BEELINE_PHONE] = hang
        ident = await a.service.start_identification("user-1", BEELINE_PHONE)
        await a.service.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
        )
        await eventually(lambda: len(a.operators.calls) == 1, what="a asked the operator")
        clock.advance(4)  # a's 3-second lease has expired unrenewed
        assert await b.service.keep_verifications() == (1, 0)
        await eventually(lambda: len(b.operators.calls) == 1, what="b asked the operator")
        assert await a.service.keep_verifications() == (0, 1)
        await eventually(lambda: a.service.verifier._tasks == {}, what="a stopped its verification")
        assert ident.identification_id in b.service.verifier._tasks


async def test_two_replicas_expiring_overdue_verifications_at_once_fail_each_once(
    postgres_url: str,
) -> None:
    clock, sms = FakeClock(), RecordingSms()
    async with _replicas(postgres_url, ["a", "b"], clock=clock, sms=sms) as r:
        a, b = r["a"], r["b"]
        now = clock.now()
        ids = []
        for n in range(30):
            ident = await a.service.start_identification(f"user-{n}", BEELINE_PHONE)
            assert await transactions.begin_verification(
                a.store,
                ident.identification_id,
                verify_key=f"key-{n}",
                deadline=now + timedelta(seconds=60),
                now=now,
                lease=Lease("dead-replica", now + timedelta(seconds=1)),
            )
            ids.append(ident.identification_id)
        before = _completed("operator_timeout")
        clock.advance(61)

        counts = await asyncio.gather(
            *(replica.service.expire_overdue() for _ in range(4) for replica in (a, b))
        )

        assert sum(counts) == 30
        assert _completed("operator_timeout") - before == 30
        for identification_id in ids:
            done = await a.store.get(identification_id)
            assert done is not None
            assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)


# --- the notice consumer: one active per messenger, a standby takes over ---------------------


async def test_one_replica_consumes_notices_and_a_standby_takes_over_when_it_dies(
    postgres_url: str,
) -> None:
    server, notifier = await start_notifier()
    clock, sms = FakeClock(), RecordingSms()
    channels: list[grpc.aio.Channel] = []
    try:
        async with _replicas(postgres_url, ["a", "b"], clock=clock, sms=sms) as r:
            keepers: dict[str, LeaseKeeper] = {}
            for name, replica in r.items():
                channel = open_channel(
                    f"127.0.0.1:{server.port}", identity=Caller(Kind.MESSENGER, "alpha")
                )
                channels.append(channel)
                consumer = NoticeConsumer(
                    replica.service, channel, backoff=Backoff(initial=0.01, maximum=0.05)
                )
                keepers[name] = LeaseKeeper(
                    replica.store, "notices:alpha", holder=name, work=consumer.run, ttl=3.0
                )
                replica.tasks.append(asyncio.create_task(keepers[name].run()))
            first = await identify(r["a"].service, sms, "u1")
            second = await identify(r["a"].service, sms, "u2", "+79037654321")

            active = await eventually(
                lambda: [n for n, k in keepers.items() if k.active], what="an active consumer"
            )
            assert len(active) == 1
            [dead] = active
            [standby] = [n for n in keepers if n != dead]
            await eventually(lambda: notifier.subscribes == [0], what="one Subscribe")
            assert (
                REGISTRY.get_sample_value(
                    "idmesh_lease_held", {"lease": "notices:alpha", "replica": dead}
                )
                == 1
            )
            await notifier.append(event_id="ev-1", identification_code="IC-beeline-4567")

            async def state(identification_id: str) -> State | None:
                ident = await r[standby].store.get(identification_id)
                return None if ident is None else ident.state

            await eventually(lambda: _is(state(first), State.REVOKED), what="the first revoked")
            assert not keepers[standby].active  # it stood by all along

            await r[dead].kill()
            # not released: its row names it until it expires (at least 2 s after its last
            # renewal, made at most a third of the 3-second term ago)
            lease = await r[standby].store.lease_of("notices:alpha")
            assert lease is not None and lease.holder == dead
            await eventually(
                lambda: keepers[standby].active, within=15, what="the standby to take over"
            )
            await eventually(lambda: notifier.subscribes == [0, 1], what="resumed after seq 1")
            await notifier.append(event_id="ev-2", identification_code="IC-beeline-4321")
            await eventually(lambda: _is(state(second), State.REVOKED), what="the second revoked")
            assert await r[standby].store.notice_cursor("alpha") == 2
    finally:
        for channel in channels:
            await channel.close()
        await server.stop(None)


async def _is(value: Awaitable[State | None], expected: State) -> bool:
    return await value is expected
