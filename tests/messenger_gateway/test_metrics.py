"""The pending-verification gauges are read from the store when scraped: right after a restart
too, before the restarted process has resumed anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from services.messenger_gateway.identification.model import State
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    BEELINE_PHONE,
    FakeClock,
    FakeOperators,
    RecordingSms,
    hang,
    make_service,
    open_store,
)


def gauges(families: list[Metric]) -> dict[str, float]:
    return {s.name: s.value for family in families for s in family.samples}


async def test_pending_verifications_and_the_oldest_age_survive_a_restart(tmp_path: Path) -> None:
    db, store = await open_store(tmp_path / "gw.db")
    try:
        sms, clock = RecordingSms(), FakeClock()
        ops = FakeOperators(answers={BEELINE_PHONE: hang})
        first = make_service(store, sms=sms, operators=ops, clock=clock, window=60)
        assert (
            gauges(await first.verification_metrics())["idmesh_gateway_pending_verifications"] == 0
        )
        ident = await first.start_identification("user-1", BEELINE_PHONE)
        await first.confirm_possession(
            ident.identification_id, sms.code_for(ident.identification_id), wait=0.05
        )
        await eventually(lambda: len(ops.calls) == 1, what="the operator asked")
        await first.close()  # the process stops mid-verification

        clock.advance(25)
        second = make_service(store, sms=sms, operators=FakeOperators(), clock=clock, window=60)
        got = gauges(await second.verification_metrics())
        assert got["idmesh_gateway_pending_verifications"] == 1
        # the fake clock runs on from real time: 25 s and the moments this test took
        assert got["idmesh_gateway_oldest_pending_verification_age_seconds"] == pytest.approx(
            25, abs=2
        )
        assert got["idmesh_gateway_verification_window_seconds"] == 60
        await second.resume_pending()
        await eventually(
            lambda: second.verifier._tasks == {}, what="the resumed verification finished"
        )
        done = await store.get(ident.identification_id)
        assert done is not None and done.state is State.IDENTIFIED
        assert (
            gauges(await second.verification_metrics())["idmesh_gateway_pending_verifications"] == 0
        )
        await second.close()
    finally:
        await db.close()
