"""Fencing tokens, on both engines: a write made under a lease that another holder has taken
since is refused in its own transaction and changes nothing, and the new holder's stands. For
the notice consumer's lease (a batch of notices) and for a pending verification's (its answer),
at the store, and with the old holder paused inside its write until the lease changed hands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from services.common.backoff import Backoff
from services.common.channels import open_channel
from services.common.identity import Caller, Kind
from services.common.lease import Fence, Lease, LeaseFenced, LeaseKeeper
from services.common.pg import PgDatabase
from services.messenger_gateway.adapters.schema_pg import PG_MIGRATIONS, SERVICE
from services.messenger_gateway.adapters.store_pg import PgGatewayStore
from services.messenger_gateway.identification import transactions, verifier
from services.messenger_gateway.identification.model import Reason, State
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.identification.transitions import Event
from services.messenger_gateway.notices import consumer as consumer_module
from services.messenger_gateway.notices.consumer import NoticeConsumer
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually

from .fakes import (
    BEELINE_PHONE,
    FakeClock,
    FakeNotifier,
    RecordingSms,
    identify,
    make_service,
    start_notifier,
)

TERM = timedelta(seconds=6)
LEASE = "notices:alpha"
CODE = "IC-beeline-4567"  # what the fake operators give BEELINE_PHONE


def _notice(seq: int, code: str) -> TerminationNotice:
    return TerminationNotice(
        seq=seq,
        event_id=f"ev-{seq}",
        operator_id="beeline",
        messenger_id="alpha",
        identification_code=code,
        kind=TerminationKind.CONTRACT_ENDED,
    )


async def _inbox(store: GatewayStore, events: int) -> list[str]:
    return [f"ev-{n}" for n in range(1, events + 1) if await store.inbox_has(f"ev-{n}")]


async def _state(store: GatewayStore, identification_id: str) -> tuple[State, Reason]:
    ident = await store.get(identification_id)
    assert ident is not None
    return ident.state, ident.reason


# --- at the store ----------------------------------------------------------------------------


async def test_a_batch_under_a_lease_taken_since_is_refused_and_the_new_holders_applies(
    store: GatewayStore,
) -> None:
    clock, sms = FakeClock(), RecordingSms()
    ident = await identify(make_service(store, sms=sms, clock=clock), sms, "u1")
    now = clock.now()
    a = await store.acquire_lease(LEASE, Lease("a", now + TERM), now=now)
    assert a is not None
    later = now + TERM + timedelta(seconds=1)  # a did not renew: its lease expired
    b = await store.acquire_lease(LEASE, Lease("b", later + TERM), now=later)
    assert b == a + 1
    batch = [(_notice(1, "someone-else"), True), (_notice(2, CODE), True)]

    with pytest.raises(LeaseFenced):
        await transactions.apply_notices(
            store, "alpha", batch, now=later, fence=Fence(LEASE, "a", a)
        )
    assert await _inbox(store, 2) == []
    assert await store.notice_cursor("alpha") == 0
    assert await _state(store, ident) == (State.IDENTIFIED, Reason.UNSPECIFIED)

    results = await transactions.apply_notices(
        store, "alpha", batch, now=later, fence=Fence(LEASE, "b", b)
    )
    assert [(r.applied, r.revoked, r.cursor) for r in results] == [(True, 0, 1), (True, 1, 2)]
    assert await _state(store, ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
    # the holder's own renewal keeps its token: its writes go on being accepted
    assert await store.acquire_lease(LEASE, Lease("b", later + TERM), now=later) == b
    [result] = await transactions.apply_notices(
        store, "alpha", [(_notice(3, "x"), True)], now=later, fence=Fence(LEASE, "b", b)
    )
    assert result.cursor == 3


async def test_an_answer_from_a_replica_whose_verification_was_taken_over_is_refused(
    store: GatewayStore,
) -> None:
    clock = FakeClock()
    now = clock.now()
    ident = await make_service(store, clock=clock).start_identification("u1", BEELINE_PHONE)
    key = "key-u1"
    assert await transactions.begin_verification(
        store,
        ident.identification_id,
        verify_key=key,
        deadline=now + timedelta(seconds=60),
        now=now,
        lease=Lease("a", now + TERM),
    )
    begun = await store.get(ident.identification_id)
    assert begun is not None and (begun.lease_holder, begun.lease_token) == ("a", 1)
    # renewals keep the token
    assert await store.renew_verifications(Lease("a", now + TERM), [begun.identification_id]) == []
    later = now + TERM + timedelta(seconds=1)  # a stopped renewing
    [taken] = await store.claim_verifications(Lease("b", later + TERM), now=later)
    assert (taken.lease_holder, taken.lease_token) == ("b", 2)

    stale = Fence(ident.identification_id, "a", 1)
    with pytest.raises(LeaseFenced):
        await transactions.finish_verification(
            store,
            ident.identification_id,
            key,
            event=Event.ANSWER_IDENTIFIED,
            now=later,
            operator_id="beeline",
            identification_code=CODE,
            within_window=True,
            fence=stale,
        )
    with pytest.raises(LeaseFenced):
        await transactions.follow_hint(
            store,
            ident.identification_id,
            key,
            recipient="megafon",
            donor="beeline",
            now=later,
            fence=stale,
        )
    unchanged = await store.get(ident.identification_id)
    assert unchanged == taken
    assert await store.ported_number(BEELINE_PHONE) is None

    recorded = await transactions.finish_verification(
        store,
        ident.identification_id,
        key,
        event=Event.ANSWER_IDENTIFIED,
        now=later,
        operator_id="beeline",
        identification_code=CODE,
        within_window=True,
        fence=Fence(ident.identification_id, "b", 2),
    )
    assert recorded is not None
    assert (recorded[0].state, recorded[0].identification_code) == (State.IDENTIFIED, CODE)


# --- the old holder paused inside its write --------------------------------------------------


class _Pause:
    """An async failpoint that holds the first `count` hits of `name` until let go, in order."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.entered = [asyncio.Event() for _ in range(count)]
        self.go = [asyncio.Event() for _ in range(count)]
        self.hits = 0

    async def __call__(self, name: str) -> None:
        if name != self.name or self.hits >= len(self.go):
            return
        hit = self.hits
        self.hits += 1
        self.entered[hit].set()
        await self.go[hit].wait()


@dataclass
class Stream:
    """The fake notifier, and the channels consumers opened to it."""

    fake: FakeNotifier
    port: int
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def consumer(self, service: GatewayService) -> NoticeConsumer:
        channel = open_channel(f"127.0.0.1:{self.port}", identity=Caller(Kind.MESSENGER, "alpha"))
        self.channels.append(channel)
        return NoticeConsumer(service, channel, backoff=Backoff(initial=0.01, maximum=0.05))


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    server, fake = await start_notifier()
    assert server.port is not None
    opened = Stream(fake, server.port)
    try:
        yield opened
    finally:
        for channel in opened.channels:
            await channel.close()
        await server.stop(None)


async def test_a_consumer_paused_until_its_lease_changed_hands_applies_nothing(
    store: GatewayStore, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica holding the consumer's lease stalls with a batch in hand (a pause, a clock
    behind the others') past its lease's expiry; another replica takes the lease. When the
    stalled one goes on, its batch is refused whole, it stops, and the new holder applies
    every notice once."""
    fake = stream.fake
    clock, sms = FakeClock(), RecordingSms()
    service = make_service(store, sms=sms, clock=clock)
    ident = await identify(service, sms, "u1")
    for n, code in ((1, "someone-else"), (2, CODE), (3, "another")):
        await fake.append(event_id=f"ev-{n}", identification_code=code)
    pause = _Pause("gateway.notice.before_apply", 1)
    monkeypatch.setattr(consumer_module, "async_failpoint", pause)

    now = clock.now()
    a = await store.acquire_lease(LEASE, Lease("a", now + TERM), now=now)
    assert a is not None
    stalled = asyncio.create_task(stream.consumer(service).run(Fence(LEASE, "a", a)))
    await asyncio.wait_for(pause.entered[0].wait(), 10)  # the batch in hand, not applied
    later = now + TERM + timedelta(seconds=1)
    b = await store.acquire_lease(LEASE, Lease("b", later + TERM), now=later)
    assert b == a + 1

    with capture_logs() as logs:
        pause.go[0].set()
        await asyncio.wait_for(stalled, 10)  # refused: it stopped consuming
    fenced = [line for line in logs if line["event"] == "lease.fenced"]
    assert [(f["lease"], f["replica"], f["lease_token"]) for f in fenced] == [(LEASE, "a", a)]
    assert await _inbox(store, 3) == []
    assert await store.notice_cursor("alpha") == 0
    assert await _state(store, ident) == (State.IDENTIFIED, Reason.UNSPECIFIED)

    holder = stream.consumer(service)
    running = asyncio.create_task(holder.run(Fence(LEASE, "b", b)))
    try:

        async def applied() -> bool:
            return await store.notice_cursor("alpha") == 3

        await eventually(applied, what="the new holder to apply the batch")
        assert await _inbox(store, 3) == ["ev-1", "ev-2", "ev-3"]
        assert await _state(store, ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
        await eventually(lambda: holder.acked == 3, what="the new holder's ack")
        assert fake.acks == [3]  # the stalled replica acknowledged nothing
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_keepers_consumer_refused_by_the_fence_stops_at_once(
    store: GatewayStore, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer runs under its keeper's fence. Another replica, its clock ahead of this
    one's, takes the lease while this replica still believes it holds it (its own clock says
    the lease is live): the batch in hand is refused, and the work stops at once, without
    waiting for the keeper's next renewal."""
    clock, sms = FakeClock(), RecordingSms()
    service = make_service(store, sms=sms, clock=clock)
    ident = await identify(service, sms, "u1")
    await stream.fake.append(event_id="ev-1", identification_code=CODE)
    pause = _Pause("gateway.notice.before_apply", 1)
    monkeypatch.setattr(consumer_module, "async_failpoint", pause)
    # a long term: no renewal of this keeper's comes between the takeover and the refusal
    keeper = LeaseKeeper(
        store, LEASE, holder="a", work=stream.consumer(service).run, ttl=60.0, clock=clock
    )
    task = asyncio.create_task(keeper.run())
    try:
        await asyncio.wait_for(pause.entered[0].wait(), 10)
        fence = keeper.fence
        assert fence is not None and keeper.active
        ahead = clock.now() + timedelta(seconds=61)  # b's clock: a's lease has expired
        b = await store.acquire_lease(LEASE, Lease("b", ahead + TERM), now=ahead)
        assert b == fence.token + 1

        with capture_logs() as logs:
            pause.go[0].set()
            await eventually(lambda: not keeper.active, what="the consumer to stop")
        fenced = [line for line in logs if line["event"] == "lease.fenced"]
        assert [(f["replica"], f["lease_token"]) for f in fenced] == [("a", fence.token)]
        assert not [line for line in logs if line["event"] == "lease.work_failed"]
        assert await _inbox(store, 1) == []
        assert await _state(store, ident) == (State.IDENTIFIED, Reason.UNSPECIFIED)
        assert await store.lease_of(LEASE) == Lease("b", ahead + TERM, b)
    finally:
        await _cancel(task)


async def test_a_verification_paused_until_another_replica_took_it_records_nothing(
    store: GatewayStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica a has the operator's answer in hand and stalls past its lease on the
    verification; replica b claims it and asks again (same idempotency key). a goes on first:
    its answer is refused and its task ends; then b's answer is recorded, once."""
    clock, sms = FakeClock(), RecordingSms()
    a = make_service(store, sms=sms, clock=clock, replica_id="a", window=60)
    b = make_service(store, clock=clock, replica_id="b", window=60)
    pause = _Pause("gateway.verify.after_answer", 2)
    monkeypatch.setattr(verifier, "async_failpoint", pause)
    started = await a.start_identification("u1", BEELINE_PHONE)
    identification_id = started.identification_id
    await a.confirm_possession(identification_id, sms.code_for(identification_id), wait=0)
    stalled = a.verifier.task_of(identification_id)
    assert stalled is not None
    await asyncio.wait_for(pause.entered[0].wait(), 10)  # a holds the answer, not recorded

    clock.advance(TERM.total_seconds() + 1)  # a's lease expired: b claims the verification
    assert await b.keep_verifications() == (1, 0)
    taking = b.verifier.task_of(identification_id)
    assert taking is not None
    await asyncio.wait_for(pause.entered[1].wait(), 10)  # b has the answer too

    try:
        with capture_logs() as logs:
            pause.go[0].set()
            assert await asyncio.wait_for(stalled, 10) is None  # refused: a stopped
            pending = await store.get(identification_id)
            assert pending is not None
            assert (pending.state, pending.lease_holder, pending.lease_token) == (
                State.VERIFYING,
                "b",
                2,
            )
            pause.go[1].set()
            done = await asyncio.wait_for(taking, 10)
        assert done is not None and (done.state, done.identification_code) == (
            State.IDENTIFIED,
            CODE,
        )
        fenced = [line for line in logs if line["event"] == "lease.fenced"]
        assert [(f["identification_id"], f["replica"], f["lease_token"]) for f in fenced] == [
            (identification_id, "a", 1)
        ]
        finished = [line for line in logs if line["event"] == "identification.finished"]
        assert len(finished) == 1, "the verification was answered twice"
        assert await _state(store, identification_id) == (State.IDENTIFIED, Reason.UNSPECIFIED)
    finally:
        for pending_go in pause.go:
            pending_go.set()
        await a.close()
        await b.close()


class _PausingFenceCheck:
    """A connection whose lease check (the batch's last statement: its inbox rows, revocations
    and cursor written) waits until the test lets it go."""

    def __init__(self, conn: Any, reached: asyncio.Event, go: asyncio.Event) -> None:
        self._conn, self._reached, self._go = conn, reached, go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        if sql.startswith("SELECT 1 FROM leases"):
            self._reached.set()
            await self._go.wait()
        return await self._conn.fetchval(sql, *args)


async def test_a_batch_written_before_its_lease_changed_hands_is_refused_before_its_commit(
    postgres_url: str, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, two replicas: a's batch is written (inbox, revocation, cursor) and its
    transaction stalls before its lease check; a's lease expires and b takes it (the lease row
    is not locked until that check); b's batch waits on a's rows. When a goes on, its lease
    check refuses the batch, nothing of it is committed, and b applies every notice once."""
    async with AsyncExitStack() as stack:
        dbs = []
        for _ in range(2):
            db = await PgDatabase.open(postgres_url, SERVICE, PG_MIGRATIONS)
            stack.push_async_callback(db.close)
            dbs.append(db)
        first, second = PgGatewayStore(dbs[0]), PgGatewayStore(dbs[1])
        clock, sms = FakeClock(), RecordingSms()
        ident = await identify(make_service(second, sms=sms, clock=clock), sms, "u1")
        for n, code in ((1, "someone-else"), (2, CODE), (3, "another")):
            await stream.fake.append(event_id=f"ev-{n}", identification_code=code)
        reached, go = asyncio.Event(), asyncio.Event()
        transaction = dbs[0].transaction

        @asynccontextmanager
        async def pausing() -> AsyncIterator[Any]:
            async with transaction() as conn:
                yield _PausingFenceCheck(conn, reached, go)

        monkeypatch.setattr(dbs[0], "transaction", pausing)
        now = clock.now()
        a = await first.acquire_lease(LEASE, Lease("a", now + TERM), now=now)
        assert a is not None
        stalled = asyncio.create_task(
            stream.consumer(make_service(first, clock=clock)).run(Fence(LEASE, "a", a))
        )
        await asyncio.wait_for(reached.wait(), 10)
        later = now + TERM + timedelta(seconds=1)
        b = await second.acquire_lease(LEASE, Lease("b", later + TERM), now=later)
        assert b == a + 1
        holder = stream.consumer(make_service(second, clock=clock))
        running = asyncio.create_task(holder.run(Fence(LEASE, "b", b)))
        stack.push_async_callback(_cancel, running)

        async def b_waits_on_a() -> bool:
            waiting = await dbs[1].fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return bool(waiting)

        await eventually(b_waits_on_a, what="b's batch to wait on a's uncommitted rows")
        with capture_logs() as logs:
            go.set()
            await asyncio.wait_for(stalled, 10)

            async def applied() -> bool:
                return await second.notice_cursor("alpha") == 3

            await eventually(applied, what="b to apply the batch")
        fenced = [line for line in logs if line["event"] == "lease.fenced"]
        assert [(f["replica"], f["lease_token"]) for f in fenced] == [("a", a)]
        batches = [line for line in logs if line["event"] == "notices.applied"]
        assert [(line["applied"], line["duplicates"]) for line in batches] == [(3, 0)]
        assert await _state(second, ident) == (State.REVOKED, Reason.CONTRACT_TERMINATED)
        revoked = await dbs[1].fetchval("SELECT revoked FROM notice_inbox WHERE event_id = 'ev-2'")
        assert revoked == 1


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
