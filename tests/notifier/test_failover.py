"""Two notifier replicas over a PostgreSQL primary and its streaming standby, through one
multi-host URL (target_session_attrs=read-write): the primary crashes and the standby is
promoted; publishes go on once it is (refused UNAVAILABLE meanwhile), the LISTEN connections
follow it (a stream on one replica is woken by the other's commit, not by the 30 s poll), and
nothing acknowledged is lost (synchronous replication)."""

from __future__ import annotations

from pathlib import Path

import grpc
from idmesh.events.v1 import events_pb2

from services.common.status import error_details
from tests.eventually import eventually
from tests.notifier.conftest import _starter
from tests.notifier.support import FakeClock, Notifier, event, read_notices
from tests.postgres import PostgresCluster, multi_host_url


async def test_notifier_replicas_follow_a_promoted_standby(tmp_path: Path) -> None:
    with PostgresCluster.create() as primary, primary.standby() as standby:
        url = multi_host_url(primary, standby)
        async with _starter(tmp_path, FakeClock(), {"DATABASE_URL": url}) as start:
            reader = await start(PROGRESS_INTERVAL_SECONDS="30")
            writer = await start(PROGRESS_INTERVAL_SECONDS="30")
            before = event()
            assert (await writer.publish(before)).accepted == 1

            primary.stop("immediate")
            refused = None
            try:
                await writer.publish(event())
            except grpc.aio.AioRpcError as exc:
                refused = exc
            assert refused is not None, "a publish with no primary was acknowledged"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert error_details(refused).reason in ("STORE_UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN")

            standby.promote()

            async def published() -> bool:
                try:
                    return (await writer.publish(after)).accepted == 1
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    return False

            after = event()
            await eventually(published, within=30, what="a publish on the new primary")
            call = reader.subscribe("alpha")
            notices = await read_notices(call, 2, within=10)
            assert [n.event.event_id for n in notices] == [before.event_id, after.event_id]

            # the reader's LISTEN connection is on the new primary: the writer's next commit
            # wakes its stream within seconds (the poll would take 30)
            await eventually(
                lambda: reader.service.stream_stats.active == 1, within=10, what="the stream"
            )
            woken = event()
            await eventually(
                lambda: _publish_ok(writer, woken), within=10, what="the third publish"
            )
            notices = await read_notices(call, 1, within=10)
            call.cancel()
            assert [(n.seq, n.event.event_id) for n in notices] == [(3, woken.event_id)]


async def _publish_ok(writer: Notifier, sent: events_pb2.ContractTerminated) -> bool:
    try:
        await writer.publish(sent)
    except grpc.aio.AioRpcError:
        return False
    return True
