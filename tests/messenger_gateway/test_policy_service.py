"""The delivery policy's service layer over a real store, without a network: durability,
decisions that follow identification changes, replicas sharing one database, restriction
orders with their audit and SLA figures, and the change stream."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from services.common.config import Env
from services.common.errors import InvalidInput
from services.common.storage import StoreSettings
from services.messenger_gateway.main import GatewayStores, open_stores
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.policy.model import (
    MAX_BATCH_PAIRS,
    ChangeKind,
    ChangesPruned,
    Consent,
    DeliveryReason,
    MessageKind,
    OrderConflict,
    OrderScope,
    OrderState,
    OrderWrongState,
    SenderRule,
    UnacceptedPolicy,
    UserUnknown,
    VersionAhead,
)
from services.messenger_gateway.policy.service import PolicyService, PolicySettings, WatchItem
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    FakeClock,
    RecordingSms,
    identify,
    make_service,
)

PHONES = {"s": "+79031230001", "r": "+79031230002", "t": "+79031230003"}
NEWCOMER_PHONE = "+79031230009"
PERSONAL, AUTOMATED = MessageKind.PERSONAL, MessageKind.AUTOMATED
ADMIN = "spiffe://idmesh.local/messenger/alpha/admin"


@dataclass
class Replica:
    """One gateway process's parts over the shared database (a file, or a PostgreSQL one)."""

    stores: GatewayStores
    service: GatewayService
    policy: PolicyService
    sms: RecordingSms
    exits: AsyncExitStack

    async def close(self) -> None:
        await self.service.close()
        await self.exits.aclose()


async def open_replica(settings: StoreSettings, clock: FakeClock, **options: object) -> Replica:
    exits = AsyncExitStack()
    stores = await exits.enter_async_context(open_stores(settings))
    policy = PolicyService(
        PolicySettings(progress_interval=0.2, **options),  # type: ignore[arg-type]
        store=stores.policy,
        clock=clock,
    )
    await policy.start()
    sms = RecordingSms()
    service = make_service(
        stores.gateway,
        sms=sms,
        clock=clock,
        routes=dict.fromkeys([*PHONES.values(), NEWCOMER_PHONE], "beeline"),
        policy=policy,
    )
    return Replica(stores, service, policy, sms, exits)


async def execute_raw(settings: StoreSettings, sql: str) -> None:
    """One statement on a connection of its own, around the stores."""
    if settings.database_url is not None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return
    assert settings.db_path is not None
    with sqlite3.connect(settings.db_path) as lite:
        lite.execute(sql)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, store_env: dict[str, str]) -> StoreSettings:
    """The shared database on each engine (see tests/conftest.py)."""
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    return StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "gw.db"), **environ}))


@pytest.fixture
async def gw(settings: StoreSettings, clock: FakeClock) -> AsyncIterator[Replica]:
    replica = await open_replica(settings, clock)
    for user, phone in PHONES.items():
        await identify(replica.service, replica.sms, user, phone)
    yield replica
    await replica.close()


@pytest.fixture
async def other(settings: StoreSettings, gw: Replica, clock: FakeClock) -> AsyncIterator[Replica]:
    """A second replica on the same database."""
    replica = await open_replica(settings, clock)
    yield replica
    await replica.close()


def decide(replica: Replica, sender: str, recipient: str, kind: MessageKind = PERSONAL) -> str:
    decision, _ = replica.policy.check_delivery(sender, recipient, kind)
    return decision.reason.value


# --- preferences -------------------------------------------------------------------------------


async def test_a_refusal_applies_from_the_next_decision_and_survives_a_restart(
    gw: Replica, settings: StoreSettings, clock: FakeClock
) -> None:
    assert decide(gw, "s", "r") == "ALLOWED"
    version = await gw.policy.set_sender_rule("r", "s", SenderRule.REFUSED)
    assert decide(gw, "s", "r") == "RECIPIENT_REFUSED_SENDER"
    assert gw.policy.index.version >= version

    restarted = await open_replica(settings, clock)
    try:
        assert decide(restarted, "s", "r") == "RECIPIENT_REFUSED_SENDER"
        prefs = await restarted.policy.preferences("r")
        assert [(e.sender_id, e.rule) for e in prefs.sender_rules] == [("s", SenderRule.REFUSED)]
        assert prefs.unaccepted_policy is UnacceptedPolicy.DEFAULT
        assert prefs.effective_unaccepted_policy is UnacceptedPolicy.ALLOW
    finally:
        await restarted.close()


async def test_consent_keeps_the_time_of_each_grant_and_revocation(gw: Replica) -> None:
    granted, _ = await gw.policy.set_automated_consent("r", "bot", Consent.GRANTED)
    assert granted.granted_at is not None and granted.revoked_at is None
    revoked, _ = await gw.policy.set_automated_consent("r", "bot", Consent.REVOKED)
    assert (revoked.consent, revoked.granted_at) == (Consent.REVOKED, granted.granted_at)
    assert revoked.revoked_at is not None and revoked.revoked_at >= granted.granted_at
    prefs = await gw.policy.preferences("r")
    assert [(c.sender_id, c.consent) for c in prefs.automated_consents] == [
        ("bot", Consent.REVOKED)
    ]


async def test_preferences_of_an_unknown_user_are_refused_and_change_nothing(
    gw: Replica,
) -> None:
    before = gw.policy.index.version
    with pytest.raises(UserUnknown, match="nobody"):
        await gw.policy.set_sender_rule("nobody", "s", SenderRule.REFUSED)
    with pytest.raises(UserUnknown):
        await gw.policy.set_unaccepted_policy("nobody", UnacceptedPolicy.REFUSE)
    with pytest.raises(UserUnknown):
        await gw.policy.preferences("nobody")
    with pytest.raises(InvalidInput, match="sender_id"):
        await gw.policy.set_sender_rule("r", "", SenderRule.REFUSED)
    assert await gw.policy.catch_up() == before


# --- identification changes ----------------------------------------------------------------


async def test_a_revocation_by_notice_stops_the_next_message(gw: Replica) -> None:
    assert decide(gw, "s", "r") == "ALLOWED"
    notice = TerminationNotice(
        seq=1,
        event_id="ev-1",
        operator_id="beeline",
        messenger_id="alpha",
        identification_code=f"IC-beeline-{PHONES['s'][-4:]}",
        kind=TerminationKind.CONTRACT_ENDED,
    )
    result = await gw.service.apply_notice(notice)
    assert result.revoked == 1
    assert decide(gw, "s", "r") == "SENDER_NOT_IDENTIFIED"  # no wait: the same process


async def test_a_user_who_starts_identifying_is_a_known_recipient_at_once(gw: Replica) -> None:
    assert decide(gw, "s", "newcomer") == "RECIPIENT_UNKNOWN"
    await gw.service.start_identification("newcomer", NEWCOMER_PHONE)
    assert decide(gw, "s", "newcomer") == "ALLOWED"
    assert decide(gw, "newcomer", "s") == "SENDER_NOT_IDENTIFIED"


# --- replicas on one database ----------------------------------------------------------------


async def test_a_replica_applies_another_replicas_changes(gw: Replica, other: Replica) -> None:
    assert decide(other, "s", "r") == "ALLOWED"
    await gw.policy.set_sender_rule("r", "s", SenderRule.REFUSED)
    await gw.service.start_identification("s", PHONES["s"])  # s starts again: not identified
    await other.policy.catch_up()  # what the tailer does every poll interval
    assert decide(other, "s", "r") == "SENDER_NOT_IDENTIFIED"
    assert decide(other, "t", "r") == "ALLOWED"
    await other.policy.set_unaccepted_policy("r", UnacceptedPolicy.REFUSE)
    await gw.policy.catch_up()
    assert decide(gw, "t", "r") == "SENDER_NOT_ACCEPTED"
    assert gw.policy.index.version == other.policy.index.version


async def test_a_decision_at_a_min_version_reads_another_replicas_write(
    gw: Replica, other: Replica
) -> None:
    version = await gw.policy.set_sender_rule("r", "s", SenderRule.REFUSED)
    assert decide(other, "s", "r") == "ALLOWED"  # not caught up yet: no tailer in this test
    await other.policy.reach(version)
    assert decide(other, "s", "r") == "RECIPIENT_REFUSED_SENDER"
    with pytest.raises(VersionAhead, match=f"{version + 100}"):
        await other.policy.reach(version + 100)


async def test_the_tailer_keeps_a_replica_current_within_its_interval(
    gw: Replica, other: Replica
) -> None:
    tail = asyncio.create_task(other.policy.run_tail())  # main.py's tailer
    try:
        await gw.policy.set_sender_rule("r", "t", SenderRule.REFUSED)
        await eventually(lambda: decide(other, "t", "r") == "RECIPIENT_REFUSED_SENDER", within=10)
    finally:
        tail.cancel()
        await asyncio.wait({tail})


async def test_a_replica_behind_a_pruned_log_reloads(
    gw: Replica, other: Replica, clock: FakeClock
) -> None:
    await gw.policy.set_sender_rule("r", "s", SenderRule.REFUSED)
    await gw.policy.set_sender_rule("r", "t", SenderRule.REFUSED)
    clock.advance(8 * 86400)
    assert await gw.policy.prune_changes() > 0  # all but the head, which `other` has not seen
    await other.policy.catch_up()
    assert decide(other, "s", "r") == "RECIPIENT_REFUSED_SENDER"
    assert decide(other, "t", "r") == "RECIPIENT_REFUSED_SENDER"
    with pytest.raises(ChangesPruned, match="pruned"):
        async with asyncio.timeout(10):
            async for _ in other.policy.watch(0):
                pass


# --- decisions in batches --------------------------------------------------------------------


async def test_a_batch_is_decided_in_order_at_one_version(gw: Replica) -> None:
    await gw.policy.set_sender_rule("r", "t", SenderRule.REFUSED)
    decisions, version = gw.policy.check_delivery_batch(
        [("s", "r", PERSONAL), ("t", "r", PERSONAL), ("s", "x", PERSONAL), ("s", "r", AUTOMATED)]
    )
    assert [d.reason for d in decisions] == [
        DeliveryReason.ALLOWED,
        DeliveryReason.RECIPIENT_REFUSED_SENDER,
        DeliveryReason.RECIPIENT_UNKNOWN,
        DeliveryReason.NO_AUTOMATED_CONSENT,
    ]
    assert version == gw.policy.index.version


async def test_a_batch_too_large_or_with_a_bad_pair_is_refused_whole(gw: Replica) -> None:
    with pytest.raises(InvalidInput, match=f"at most {MAX_BATCH_PAIRS}"):
        gw.policy.check_delivery_batch([("s", "r", PERSONAL)] * (MAX_BATCH_PAIRS + 1))
    with pytest.raises(InvalidInput, match=r"pairs\[1\]\.recipient_id"):
        gw.policy.check_delivery_batch([("s", "r", PERSONAL), ("s", "", PERSONAL)])


# --- restriction orders ----------------------------------------------------------------------


async def test_an_order_held_then_enforced_then_lifted_is_audited(
    gw: Replica, clock: FakeClock
) -> None:
    received = clock.now() - timedelta(hours=2)
    order, created = await gw.policy.record_order(
        order_id="RKN-1",
        user_id="",
        phone_number="8 903 123-00-01",
        scope=OrderScope.ALL_MESSAGES,
        received_at=received,
        hold=True,
        actor=ADMIN,
    )
    assert created and order.state is OrderState.RECEIVED and order.target_value == PHONES["s"]
    assert decide(gw, "s", "r") == "ALLOWED"
    sla = await gw.stores.policy.order_sla()
    assert (sla.received, sla.oldest_received_at) == (1, received)

    enforced = await gw.policy.enforce_order("RKN-1", actor=ADMIN)
    assert enforced.state is OrderState.IN_FORCE and enforced.in_force_at is not None
    assert decide(gw, "s", "r") == "SENDER_RESTRICTED"
    with pytest.raises(OrderWrongState):
        await gw.policy.enforce_order("RKN-1", actor=ADMIN)

    lifted = await gw.policy.lift_order("RKN-1", "court decision", actor=ADMIN)
    assert (lifted.state, lifted.lift_reason) == (OrderState.LIFTED, "court decision")
    assert decide(gw, "s", "r") == "ALLOWED"

    audit = await gw.policy.order_audit("RKN-1", 0)
    assert [(a.action, a.state) for a in audit] == [
        ("RECORDED", OrderState.RECEIVED),
        ("ENFORCED", OrderState.IN_FORCE),
        ("LIFTED", OrderState.LIFTED),
    ]
    assert all(a.actor == ADMIN and a.masked_target == "+7903*****01" for a in audit)


async def test_the_audit_trail_is_append_only(
    gw: Replica, settings: StoreSettings, clock: FakeClock
) -> None:
    await gw.policy.record_order(
        order_id="RKN-2",
        user_id="s",
        phone_number="",
        scope=OrderScope.AUTOMATED,
        received_at=clock.now(),
        hold=False,
        actor=ADMIN,
    )
    for sql in ("UPDATE restriction_audit SET actor = 'x'", "DELETE FROM restriction_audit"):
        with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="append-only"):
            await execute_raw(settings, sql)
    assert len(await gw.policy.order_audit("", 0)) == 1


async def test_recording_an_order_again_is_idempotent_and_another_under_its_id_conflicts(
    gw: Replica, clock: FakeClock
) -> None:
    received = clock.now() - timedelta(hours=25)
    record = partial(
        gw.policy.record_order,
        order_id="RKN-3",
        user_id="t",
        phone_number="",
        received_at=received,
        hold=False,
        actor=ADMIN,
    )
    first, created = await record(scope=OrderScope.ALL_MESSAGES)
    again, created_again = await record(scope=OrderScope.ALL_MESSAGES)
    assert created and not created_again and again == first
    with pytest.raises(OrderConflict, match="RKN-3"):
        await record(scope=OrderScope.AUTOMATED)
    assert len(await gw.policy.order_audit("RKN-3", 0)) == 1
    sla = await gw.stores.policy.order_sla()
    assert (sla.in_force, sla.late) == (1, 1)  # received 25 hours before it was in force


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"user_id": "s", "phone_number": "+79031230001"}, "exactly one target"),
        ({"user_id": "", "phone_number": ""}, "exactly one target"),
        ({"user_id": "s", "received_at": None}, "received_at is missing"),
        ({"user_id": "s", "order_id": "with space"}, "order_id"),
        ({"phone_number": "+74951234567"}, "phone_number"),
    ],
)
async def test_a_bad_order_is_refused_and_changes_nothing(
    gw: Replica, clock: FakeClock, fields: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {
        "order_id": "RKN-9",
        "user_id": "",
        "phone_number": "",
        "scope": OrderScope.ALL_MESSAGES,
        "received_at": clock.now(),
        "hold": False,
        "actor": ADMIN,
    }
    args.update(fields)
    with pytest.raises(InvalidInput, match=match):
        await gw.policy.record_order(**args)  # type: ignore[arg-type]
    assert await gw.policy.list_orders(None, 0) == []


# --- the change stream -----------------------------------------------------------------------


async def test_the_stream_carries_changes_from_any_replica_in_order_and_resumes(
    gw: Replica, other: Replica
) -> None:
    tail = asyncio.create_task(other.policy.run_tail())  # main.py's tailer
    head = await other.policy.catch_up()
    items: list[WatchItem] = []
    got_both = asyncio.Event()

    async def watch() -> None:
        async for item in other.policy.watch(head):
            items.append(item)
            seen = [c for i in items for c in i.changes]
            if len(seen) >= 2:
                got_both.set()

    watcher = asyncio.create_task(watch())
    try:
        await eventually(lambda: items, within=10, what="the first progress mark")
        assert items[0].changes == () and items[0].head_version == head
        await gw.policy.set_sender_rule("r", "s", SenderRule.REFUSED)
        await gw.policy.set_automated_consent("r", "bot", Consent.GRANTED)
        await asyncio.wait_for(got_both.wait(), 10)
    finally:
        watcher.cancel()
        tail.cancel()
        await asyncio.wait({tail})
    changes = [c for i in items for c in i.changes]
    assert [(c.kind, c.value) for c in changes] == [
        (ChangeKind.SENDER_RULE, "REFUSED"),
        (ChangeKind.AUTOMATED_CONSENT, "GRANTED"),
    ]
    assert [c.version for c in changes] == [head + 1, head + 2]
    resumed = other.policy.watch(head + 1)
    assert (await anext(resumed)).changes == ()
    assert [c.value for c in (await anext(resumed)).changes] == ["GRANTED"]
    await resumed.aclose()
