"""A registry over a PostgreSQL primary and its streaming standby, through one multi-host URL
(target_session_attrs=read-write): the primary crashes, the standby is promoted, and the registry
follows without a restart. Replication is synchronous, so nothing it acknowledged is lost."""

from __future__ import annotations

import asyncpg
from idmesh.registry.v1 import registry_pb2

from services.common.storage import StoreSettings
from tests.eventually import eventually
from tests.postgres import PostgresCluster, multi_host_url

from .conftest import NUMBER, OTHER_NUMBER
from .test_store_outage import (
    NOT_SERVING,
    SERVING,
    _is,
    assert_store_unavailable,
    refusal,
    seed,
    serving_registry,
)


async def test_a_registry_follows_a_promoted_standby_and_loses_nothing_acknowledged() -> None:
    with PostgresCluster.create() as primary, primary.standby() as standby:
        settings = StoreSettings(database_url=multi_host_url(primary, standby))
        async with serving_registry(settings) as registry:
            await seed(registry)
            acknowledged = await registry.verify("before-the-failover")
            assert acknowledged.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED

            primary.stop("immediate")
            # no primary: the standby is read-only, refused by target_session_attrs
            assert_store_unavailable(await refusal(registry.verify("no-primary")))
            assert await registry.status() == NOT_SERVING

            standby.promote()
            await eventually(
                lambda: _is(registry.status(), SERVING),
                within=30,
                what="SERVING on the new primary",
            )
            again = await registry.verify("before-the-failover")
            assert again.identification_code == acknowledged.identification_code
            assert again.identified_at == acknowledged.identified_at
            await registry.admin.CreateSubscriber(
                registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="B-2")
            )
            after = await registry.verify("after-the-failover", OTHER_NUMBER)
            assert after.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
            got = await registry.admin.GetSubscriber(
                registry_pb2.GetSubscriberRequest(phone_number=NUMBER)
            )
            assert [b.identification_code for b in got.subscriber.bindings] == [
                acknowledged.identification_code
            ]
            # every write is on the promoted standby: the two answers, not the refused call
            conn = await asyncpg.connect(standby.url)
            try:
                keys = await conn.fetch("SELECT idempotency_key FROM verifications ORDER BY 1")
            finally:
                await conn.close()
            assert [row[0] for row in keys] == ["after-the-failover", "before-the-failover"]
