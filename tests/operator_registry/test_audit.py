"""The audit trail of verification requests (append-only, masked, every outcome) and the
per-messenger rate limit on VerifySubscriber."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from services.common.db import Database
from services.common.ratelimit import RateLimit, RateLimited
from services.operator_registry.domain import (
    AgreementRequired,
    AuditQuery,
    AuditRecord,
    IdempotencyKeyReused,
)
from services.operator_registry.ports import RegistryStore
from services.operator_registry.service import RegistryService
from tests.operator_registry.conftest import NUMBER, OPERATOR, FakeClock


@pytest.fixture
async def ready(service: RegistryService) -> RegistryService:
    await service.register_messenger("alpha", "Alpha")
    await service.create_subscriber(NUMBER, "BEE-1")
    return service


async def outcomes(service: RegistryService, **filters: object) -> list[str]:
    records, _ = await service.list_audit(AuditQuery(**filters))  # type: ignore[arg-type]
    return [r.outcome for r in records]


async def test_every_verification_request_is_audited_with_its_outcome(
    ready: RegistryService,
) -> None:
    await ready.verify_subscriber("alpha", "r1", NUMBER, time_remaining=None)
    await ready.verify_subscriber("alpha", "r1", NUMBER, time_remaining=None)  # a replay
    await ready.verify_subscriber("alpha", "r2", "+79051112233", time_remaining=None)
    with pytest.raises(AgreementRequired):
        await ready.verify_subscriber("beta", "r3", NUMBER, time_remaining=None)
    with pytest.raises(Exception, match="idempotency_key"):
        await ready.verify_subscriber("alpha", "bad id!", NUMBER, time_remaining=None)
    assert await outcomes(ready) == [
        "INVALID_REQUEST",
        "NO_AGREEMENT",
        "NO_SUBSCRIBER",
        "IDENTIFIED",
        "IDENTIFIED",
    ]
    records, _ = await ready.list_audit(AuditQuery())
    assert {r.masked_phone_number for r in records} == {"+7903*****67", "+7905*****33"}
    assert all(NUMBER not in str(r) for r in records)
    assert [r.idempotency_key for r in records][-2:] == ["r1", "r1"]


@pytest.mark.sqlite_only
async def test_audit_records_cannot_be_changed(ready: RegistryService, db: Database) -> None:
    await ready.verify_subscriber("alpha", "r1", NUMBER, time_remaining=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        async with db.transaction() as conn:
            await conn.execute("UPDATE audit_log SET outcome = 'NO_SUBSCRIBER'")
    assert await outcomes(ready) == ["IDENTIFIED"]


async def test_audit_filters_and_pages(ready: RegistryService, clock: FakeClock) -> None:
    for i in range(5):
        await ready.verify_subscriber("alpha", f"r{i}", NUMBER, time_remaining=None)
        clock.advance(60)
    with pytest.raises(AgreementRequired):
        await ready.verify_subscriber("beta", "x", NUMBER, time_remaining=None)
    assert await outcomes(ready, messenger_id="beta") == ["NO_AGREEMENT"]
    assert len(await outcomes(ready, outcome="IDENTIFIED")) == 5
    start = clock.now() - timedelta(minutes=5)
    assert len(await outcomes(ready, since=start + timedelta(seconds=1))) == 5
    page, token = await ready.list_audit(AuditQuery(page_size=4))
    assert token is not None and len(page) == 4
    rest, last = await ready.list_audit(AuditQuery(page_size=4, before_id=token))
    assert last is None and len(rest) == 2
    assert [r.idempotency_key for r in page + rest] == ["x", "r4", "r3", "r2", "r1", "r0"]


async def test_a_filter_on_a_reused_key_finds_the_outcome_under_both_its_names(
    ready: RegistryService, store: RegistryStore, clock: FakeClock
) -> None:
    """The first v1 called it REQUEST_ID_REUSED (and the append-only trail keeps records written
    then); it is written IDEMPOTENCY_KEY_REUSED now: a filter on either name finds both."""
    await store.add_audit(
        AuditRecord(clock.now(), "alpha", "+7903*****67", "k-old", "REQUEST_ID_REUSED")
    )
    clock.advance(60)
    await ready.verify_subscriber("alpha", "k-new", NUMBER, time_remaining=None)
    with pytest.raises(IdempotencyKeyReused):
        await ready.verify_subscriber("alpha", "k-new", "+79051112233", time_remaining=None)
    both = ["IDEMPOTENCY_KEY_REUSED", "REQUEST_ID_REUSED"]
    assert await outcomes(ready, outcome="REQUEST_ID_REUSED") == both
    assert await outcomes(ready, outcome="IDEMPOTENCY_KEY_REUSED") == both
    assert await outcomes(ready, outcome="IDENTIFIED") == ["IDENTIFIED"]


async def test_retention_prunes_only_records_older_than_the_retention(
    ready: RegistryService, clock: FakeClock
) -> None:
    await ready.verify_subscriber("alpha", "old", NUMBER, time_remaining=None)
    clock.advance(86400 * 10)
    await ready.verify_subscriber("alpha", "new", NUMBER, time_remaining=None)
    assert await ready.prune_audit(timedelta(days=7)) == 1
    records, _ = await ready.list_audit(AuditQuery())
    assert [r.idempotency_key for r in records] == ["new"]


async def test_verification_answers_are_pruned_after_their_retention(
    ready: RegistryService, clock: FakeClock
) -> None:
    old = await ready.verify_subscriber("alpha", "old", NUMBER, time_remaining=None)
    clock.advance(86400 * 31)
    await ready.verify_subscriber("alpha", "new", NUMBER, time_remaining=None)
    assert await ready.prune_verifications(timedelta(days=30)) == 1
    assert await ready.prune_verifications(timedelta(days=30)) == 0
    # the recent answer is still replayed as it was; the pruned key is answered afresh (the
    # binding, and so the identification code, outlive the stored answer)
    again = await ready.verify_subscriber("alpha", "old", NUMBER, time_remaining=None)
    assert again.answered_at > old.answered_at
    assert again.identification_code == old.identification_code
    assert await outcomes(ready) == ["IDENTIFIED"] * 3


async def test_a_messenger_over_its_rate_is_refused_with_the_retry_delay_and_audited(
    store: RegistryStore, clock: FakeClock
) -> None:
    service = RegistryService(
        store,
        operator_id=OPERATOR,
        clock=clock,
        verify_limit=RateLimit(per_second=1.0, burst=2),
    )
    await service.register_messenger("alpha", "Alpha")
    await service.register_messenger("beta", "Beta")
    await service.create_subscriber(NUMBER, "BEE-1")
    for i in range(2):
        await service.verify_subscriber("alpha", f"r{i}", NUMBER, time_remaining=None)
    with pytest.raises(RateLimited) as e:
        await service.verify_subscriber("alpha", "r9", NUMBER, time_remaining=None)
    assert e.value.retry_after is not None and e.value.retry_after.total_seconds() > 0
    await service.verify_subscriber("beta", "b1", NUMBER, time_remaining=None)  # its own bucket
    assert await outcomes(service, messenger_id="alpha") == [
        "RATE_LIMITED",
        "IDENTIFIED",
        "IDENTIFIED",
    ]


async def test_retention_never_deletes_an_answer_given_within_it_whatever_the_order(
    ready: RegistryService, clock: FakeClock
) -> None:
    old = await ready.verify_subscriber("alpha", "old", NUMBER, time_remaining=None)
    clock.advance(86400 * 40)
    recent = await ready.verify_subscriber("alpha", "recent", NUMBER, time_remaining=None)
    clock.advance(-86400 * 35)  # a clock stepped back: stored after "recent", given earlier
    await ready.verify_subscriber("alpha", "stepped-back", NUMBER, time_remaining=None)
    clock.advance(86400 * 35)
    # The cutoff is 10 days after "old": "old" goes, "recent" stays ("stepped-back", older
    # than the cutoff too, may be left for a later run).
    assert await ready.prune_verifications(timedelta(days=30)) >= 1
    replay = await ready.verify_subscriber("alpha", "recent", NUMBER, time_remaining=None)
    assert replay.answered_at == recent.answered_at  # the stored answer, replayed
    again = await ready.verify_subscriber("alpha", "old", NUMBER, time_remaining=None)
    assert again.answered_at > old.answered_at  # answered afresh: its stored answer was pruned
