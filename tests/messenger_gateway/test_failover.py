"""A gateway's lease over a PostgreSQL primary and its streaming standby, through one multi-host
URL (target_session_attrs=read-write): the holder cannot renew while there is no primary and
stops its work by the lease's expiry; once the standby is promoted it takes its lease there
again and the work resumes, without a restart."""

from __future__ import annotations

import asyncio
import contextlib

from services.common.lease import Fence, LeaseKeeper
from services.common.storage import StoreSettings
from services.messenger_gateway.main import open_store
from tests.eventually import eventually
from tests.postgres import PostgresCluster, multi_host_url


async def test_a_lease_holder_fences_itself_during_a_failover_and_resumes_on_the_new_primary() -> (
    None
):
    with PostgresCluster.create() as primary, primary.standby() as standby:
        settings = StoreSettings(database_url=multi_host_url(primary, standby))
        async with open_store(settings) as store:
            runs = 0
            running = asyncio.Event()

            async def work(fence: Fence) -> None:
                nonlocal runs
                runs += 1
                running.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    running.clear()

            keeper = LeaseKeeper(store, "notices:alpha", holder="gw-1", work=work, ttl=1.5)
            task = asyncio.create_task(keeper.run())
            try:
                await eventually(lambda: keeper.active, what="the lease taken on the primary")
                primary.stop("immediate")
                await eventually(lambda: not keeper.active, what="the work fenced by the expiry")
                assert not running.is_set()
                standby.promote()
                await eventually(
                    lambda: keeper.active and running.is_set(),
                    within=30,
                    what="the lease taken again on the promoted standby",
                )
                assert runs == 2
                lease = await store.lease_of("notices:alpha")
                assert lease is not None and lease.holder == "gw-1"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
