"""Group commit of the identification flow's writes (SQLite): the ones that arrive together
share one transaction and one COMMIT, each all or nothing, each with its own result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.messenger_gateway.identification.model import SameNumber, State
from tests.common.test_db import Blocker, commits, queued
from tests.messenger_gateway.fakes import (
    BEELINE_PHONE,
    MEGAFON_PHONE,
    FakeOperators,
    RecordingSms,
    identified,
    make_service,
    open_store,
)


async def test_starts_arriving_together_share_one_commit_and_a_refused_one_undoes_only_itself(
    tmp_path: Path,
) -> None:
    db, store = await open_store(tmp_path / "gw.db")
    try:
        sms = RecordingSms()
        service = make_service(store, sms=sms)
        before = await service.start_identification("x", BEELINE_PHONE)
        blocker = Blocker(db)  # the writer is busy: the starts below queue up behind it
        await blocker.started()
        statements = commits(db)
        starts = [
            asyncio.create_task(service.start_identification(f"u{i}", BEELINE_PHONE))
            for i in range(8)
        ]
        # Two changes to the same new number: both pass the check before the transaction (the
        # stored number differs), and inside the group the second finds the first's number.
        changed = asyncio.create_task(service.change_phone_number("x", MEGAFON_PHONE))
        refused = asyncio.create_task(service.change_phone_number("x", MEGAFON_PHONE))
        await queued(db, 10)
        await blocker.release()
        started = await asyncio.gather(*starts)
        new, previous = await changed
        with pytest.raises(SameNumber):
            await refused

        assert statements.count("COMMIT") == 2  # the blocker's, then one for the whole group
        assert previous.identification_id == before.identification_id
        current = await store.current("x")
        assert current is not None and current.identification_id == new.identification_id
        assert current.phone_number == MEGAFON_PHONE
        assert [s.user_id for s in started] == [f"u{i}" for i in range(8)]
        assert len({s.identification_id for s in started}) == 8
        for s in started:  # each stored, each with its own code sent
            stored = await store.get(s.identification_id)
            assert stored is not None and stored.state is State.AWAITING_CODE
            assert sms.code_for(s.identification_id)
    finally:
        await db.close()


async def test_confirmations_arriving_together_each_get_their_own_outcome(
    tmp_path: Path,
) -> None:
    db, store = await open_store(tmp_path / "gw.db")
    try:
        sms = RecordingSms()
        operators = FakeOperators(answers={BEELINE_PHONE: identified("beeline", BEELINE_PHONE)})
        service = make_service(store, sms=sms, operators=operators)
        started = [await service.start_identification(f"u{i}", BEELINE_PHONE) for i in range(6)]
        blocker = Blocker(db)
        await blocker.started()
        confirms = [
            asyncio.create_task(
                service.confirm_possession(
                    s.identification_id,
                    sms.code_for(s.identification_id) if i % 2 == 0 else "000000",
                    wait=10.0,
                )
            )
            for i, s in enumerate(started)
        ]
        await queued(db, 6)
        await blocker.release()
        outcomes = await asyncio.gather(*confirms, return_exceptions=True)
        for i, outcome in enumerate(outcomes):
            if i % 2 == 0:  # the right code: verified with the operator
                assert not isinstance(outcome, BaseException), outcome
                assert outcome.state is State.IDENTIFIED
            else:  # a wrong code: refused, one attempt used, the identification unchanged
                assert isinstance(outcome, Exception)
                after = await store.get(started[i].identification_id)
                assert after is not None and after.state is State.AWAITING_CODE
                assert after.attempts_left == started[i].attempts_left - 1
    finally:
        await db.close()
