"""The delivery metrics are read from the store when scraped: right after a restart too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from idmesh.notifier.v1 import notifier_pb2
from prometheus_client.metrics_core import Metric

from tests.notifier.support import Notifier, event


def samples(families: list[Metric]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(s.labels.values())): s.value for family in families for s in family.samples
    }


async def test_delivery_gauges_per_messenger_survive_a_restart(
    start_notifier: Callable[..., Any],
) -> None:
    first: Notifier = await start_notifier()
    await first.publish(event("alpha"), event("alpha"), event("alpha"), event("beta"))
    await first.messenger("alpha").Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=1))
    first.clock.advance(timedelta(hours=2))

    restarted: Notifier = await start_notifier()  # a new process on the same file
    got = samples(await restarted.service.delivery_metric_families())
    assert got[("idmesh_notifier_head_seq", ("alpha",))] == 3
    assert got[("idmesh_notifier_acked_seq", ("alpha",))] == 1
    assert got[("idmesh_notifier_unacked_events", ("alpha",))] == 2
    assert got[("idmesh_notifier_oldest_unacked_age_seconds", ("alpha",))] == 7200
    assert got[("idmesh_notifier_head_seq", ("beta",))] == 1
    assert got[("idmesh_notifier_late_deliveries_total", ("alpha",))] == 0
    assert got[("idmesh_notifier_sla_limit_seconds", ())] == 86_400

    await restarted.messenger("alpha").Ack(
        notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=3)
    )
    after = samples(await restarted.service.delivery_metric_families())
    assert after[("idmesh_notifier_oldest_unacked_age_seconds", ("alpha",))] == 0
    assert after[("idmesh_notifier_unacked_events", ("alpha",))] == 0
