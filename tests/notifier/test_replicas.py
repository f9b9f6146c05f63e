"""Several notifier replicas over one PostgreSQL store: sequence numbers stay gap-free and
ordered per messenger whichever replica publishes, a stream on one replica sees what another
published promptly (LISTEN/NOTIFY, not the poll), and acks go through any replica."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from idmesh.notifier.v1 import notifier_pb2

from services.notifier.store_pg import CHANNEL
from tests.eventually import eventually
from tests.notifier.support import Notifier, event, read_notices


async def test_concurrent_publishes_through_two_replicas_give_gap_free_ordered_seqs(
    start_replica: Callable[..., Any],
) -> None:
    replicas: list[Notifier] = [await start_replica(), await start_replica()]
    operators = [f"op-{n}" for n in range(8)]
    batches = {
        op: [[event(operator_id=op) for _ in range(5)] for _ in range(5)] for op in operators
    }
    # A stream that reads while the publishes commit: it would end at the first hole it saw.
    live = replicas[0].subscribe("alpha")
    reading = asyncio.create_task(read_notices(live, 200, within=60))

    async def publisher(index: int, operator_id: str) -> None:
        replica = replicas[index % 2]
        for batch in batches[operator_id]:
            await replica.publish(
                *batch, event("beta", operator_id=operator_id), operator_id=operator_id
            )

    await asyncio.gather(*(publisher(i, op) for i, op in enumerate(operators)))

    notices = await reading
    live.cancel()
    assert [n.seq for n in notices] == list(range(1, 201))
    seq_of = {n.event.event_id: n.seq for n in notices}
    for per_operator in batches.values():
        for batch in per_operator:
            seqs = [seq_of[e.event_id] for e in batch]
            assert seqs == sorted(seqs)  # a batch keeps its order
    assert set(seq_of) == {e.event_id for b in batches.values() for batch in b for e in batch}
    beta = await replicas[1].service.delivery_status("beta")
    assert beta.state.head_seq == 40


async def test_the_same_event_published_through_both_replicas_at_once_is_stored_once(
    start_replica: Callable[..., Any],
) -> None:
    first, second = await start_replica(), await start_replica()
    events = [event() for _ in range(20)]

    replies = await asyncio.gather(
        *(replica.publish(e) for e in events for replica in (first, second))
    )

    assert sum(r.accepted for r in replies) == 20
    assert sum(r.duplicates for r in replies) == 20
    assert (await first.service.delivery_status("alpha")).state.head_seq == 20


async def test_a_stream_on_one_replica_sees_events_published_through_another_promptly(
    start_replica: Callable[..., Any],
) -> None:
    # Streams poll the store only every 30 s here (the progress interval): within 10 s, only
    # the NOTIFY of the other replica's commit can have woken the stream.
    reader = await start_replica(PROGRESS_INTERVAL_SECONDS="30")
    writer = await start_replica(PROGRESS_INTERVAL_SECONDS="30")
    call = reader.subscribe("alpha")
    await eventually(lambda: reader.service.stream_stats.active == 1, within=10)

    sent = event()
    await writer.publish(sent)

    notices = await read_notices(call, 1, within=10)
    call.cancel()
    assert [(n.seq, n.event.event_id) for n in notices] == [(1, sent.event_id)]


async def test_streams_wake_again_after_the_listening_connection_is_lost(
    start_replica: Callable[..., Any], postgres_url: str
) -> None:
    reader = await start_replica(PROGRESS_INTERVAL_SECONDS="30")
    writer = await start_replica(PROGRESS_INTERVAL_SECONDS="30")
    call = reader.subscribe("alpha")
    await eventually(lambda: reader.service.stream_stats.active == 1, within=10)
    admin = await asyncpg.connect(postgres_url)
    try:
        listeners = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1", f"LISTEN%{CHANNEL}%"
        )
        assert len(listeners) == 2  # one per replica
        for row in listeners:
            await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])

        async def both_listening_again() -> bool:
            again = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> ALL($2)",
                f"LISTEN%{CHANNEL}%",
                [row["pid"] for row in listeners],
            )
            return len(again) == 2

        await eventually(both_listening_again, within=20, what="both replicas listening again")
    finally:
        await admin.close()

    await writer.publish(event())

    assert [n.seq for n in await read_notices(call, 1, within=10)] == [1]
    call.cancel()


async def test_acks_through_any_replica_move_the_one_position(
    start_replica: Callable[..., Any],
) -> None:
    first, second = await start_replica(), await start_replica()
    await first.publish(event(), event(), event())

    await second.messenger().Ack(notifier_pb2.AckRequest(messenger_id="alpha", up_to_seq=2))

    status = await first.messenger().GetDeliveryStatus(
        notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")
    )
    assert (status.acked_seq, status.unacked_count) == (2, 1)
